"""The console in a real browser (Debian's headless Chromium) against the all-in-one platform process.

Each test leaves a screenshot of the page it drives in docs/console/, which docs/console.md shows.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from retention_shared.testing.infra import eventually
from retention_shared.testing.processes import Platform, all_in_one
from retention_shared.testing.smtp import SmtpServer

pytestmark = pytest.mark.e2e

# The screenshots in docs/console.md are refreshed on request (RETENTION_CONSOLE_SCREENSHOTS=1), so
# an ordinary test run leaves the working tree as it found it.
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"


# One all-in-one platform for the module (it replaces the conftest's per-test `platform`): the
# browser tests build on each other's data, as staff would in one day, and the process starts once.
@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer) -> Iterator[Platform]:
    platform = all_in_one(tmp_path_factory.mktemp("console"), smtp_port=smtp.port)
    platform.start()
    try:
        yield platform
    finally:
        platform.stop()


@pytest.fixture(scope="module")
def browser(chromium_browser: Any) -> Any:
    return chromium_browser


@pytest.fixture(scope="module")
def shops(platform: Platform) -> dict[str, dict[str, Any]]:
    base = platform.url("customer-api")
    operator = {"Authorization": f"Bearer {platform.admin_token}"}
    made = {}
    for name in ("Kissa Tea", "Other Shop"):
        response = httpx.post(f"{base}/v1/shops", json={"name": name, "locale": "ja"}, headers=operator)
        assert response.status_code == 201, response.text
        made[name] = response.json()
    kissa = {"Authorization": f"Bearer {made['Kissa Tea']['api_key']}"}
    # The other services learn of the shop's key from events; wait until the scheduler knows it.
    eventually(
        lambda: httpx.get(f"{base}/v1/playbooks", headers=kissa).status_code == 200, what="key replicated"
    )
    put_customer(base, kissa, "cust-aiko", "Aiko Tanaka", "aiko@example.com")
    return made


def put_customer(base: str, headers: dict[str, str], customer_id: str, name: str, email: str) -> None:
    response = httpx.put(
        f"{base}/v1/customers/{customer_id}",
        json={"email": email, "name": name, "locale": "ja", "consents": {"email": True}},
        headers=headers,
    )
    assert response.status_code in (200, 201), response.text


def purchases(customer_ids: list[str], *, days_ago: int = 0, prefix: str = "evt") -> list[dict[str, Any]]:
    at = (datetime.now(UTC) - timedelta(days=days_ago)).isoformat()
    return [
        {
            "id": f"{prefix}-{customer_id}",
            "type": "purchase_made",
            "customer_id": customer_id,
            "occurred_at": at,
            "data": {
                "order_id": f"ORD-{prefix}-{customer_id}",
                "amount": "4800",
                "currency": "JPY",
                "items": [{"sku": "TEA-01", "name": "Sencha", "quantity": 2, "unit_price": "2400"}],
            },
        }
        for customer_id in customer_ids
    ]


def ingest(platform: Platform, shop: dict[str, Any], events: list[dict[str, Any]]) -> None:
    response = httpx.post(
        f"{platform.url('customer-api')}/v1/events",
        json={"events": events},
        headers={"Authorization": f"Bearer {shop['api_key']}"},
    )
    assert response.status_code == 202, response.text
    assert {result["status"] for result in response.json()["results"]} == {"accepted"}


def answer_survey(
    platform: Platform, shop: dict[str, Any], customer_id: str, score: int, comment: str
) -> None:
    """Invite the customer to the shop's default NPS survey and answer it with the personal token."""
    base = platform.url("customer-api")
    headers = {"Authorization": f"Bearer {shop['api_key']}"}

    def invite() -> httpx.Response | None:
        response = httpx.post(
            f"{base}/v1/surveys/nps/invitations",
            json={"customer_id": customer_id, "context": {"type": "order", "id": f"ORD-evt-{customer_id}"}},
            headers=headers,
        )
        return response if response.status_code == 201 else None

    invitation = eventually(invite, timeout_s=60, interval_s=0.5, what=f"survey invitation of {customer_id}")
    answer = httpx.post(
        f"{base}/v1/responses", json={"token": invitation.json()["token"], "score": score, "comment": comment}
    )
    assert answer.status_code == 201, answer.text


def signed_in_page(browser: Any, platform: Platform, credential: str, *, locale: str = "en-US") -> Any:
    context = browser.new_context(locale=locale, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{platform.url('customer-api')}/console/")
    assert "/console/sign-in" in page.url
    page.get_by_label(re.compile("API key|API キー")).fill(credential)
    page.get_by_role("button", name=re.compile("Sign in|サインイン")).click()
    return page


def shoot(page: Any, name: str) -> None:
    """Take the page's screenshot: into docs/console when asked, else beside the test's logs."""
    folder = DOCS_SCREENSHOTS if os.environ.get("RETENTION_CONSOLE_SCREENSHOTS") else _scratch()
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def _scratch() -> Path:
    return Path(tempfile.gettempdir()) / "retention-console-screenshots"


class TestSignIn:
    def test_staff_sign_in_with_the_shops_key(self, browser: Any, platform: Platform, shops: Any) -> None:
        english = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 600})
        english_page = english.new_page()
        english_page.goto(f"{platform.url('customer-api')}/console/")
        assert english_page.get_by_role("heading", name="Sign in to the Retention console").is_visible()
        shoot(english_page, "sign-in")
        english.close()

        context = browser.new_context(locale="ja-JP", viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.goto(f"{platform.url('customer-api')}/console/")
        page.get_by_label("API キーまたは運用トークン").fill("rtn_wrong_key")
        page.get_by_role("button", name="サインイン").click()
        assert page.locator("#credential-error").is_visible()

        page.get_by_label("API キーまたは運用トークン").fill(shops["Kissa Tea"]["api_key"])
        page.get_by_role("button", name="サインイン").click()

        assert page.get_by_role("heading", name="概要").is_visible()
        assert page.get_by_test_id("shop-id").inner_text() == shops["Kissa Tea"]["id"]
        context.close()


class TestOverview:
    def test_kpis_change_after_events_are_ingested(
        self, browser: Any, platform: Platform, shops: Any
    ) -> None:
        shop = shops["Kissa Tea"]
        base = platform.url("customer-api")
        headers = {"Authorization": f"Bearer {shop['api_key']}"}
        page = signed_in_page(browser, platform, shop["api_key"])
        before = int(page.get_by_test_id("kpi-active_customers").inner_text().replace(",", "") or 0)
        customers = [f"cust-{n}" for n in range(1, 6)]
        for customer_id in customers:
            put_customer(base, headers, customer_id, f"Customer {customer_id}", f"{customer_id}@example.com")
        # The purchase figures cover whole days up to yesterday: these purchases are late ones.
        ingest(platform, shop, purchases(["cust-aiko", *customers], days_ago=1))
        ingest(platform, shop, purchases(customers[:2], days_ago=2, prefix="again"))

        def active_customers() -> int | None:
            page.reload()
            shown = page.get_by_test_id("kpi-active_customers").inner_text().replace(",", "")
            return int(shown) if shown.isdigit() and int(shown) >= before + 6 else None

        assert eventually(
            active_customers, timeout_s=60, interval_s=1, what="active customers on the overview"
        )
        assert page.get_by_test_id("kpi-arpu").inner_text() != "—"
        assert page.get_by_test_id("kpi-nps").inner_text() == "—"

        answer_survey(platform, shop, "cust-1", 10, "Lovely tea, quick delivery")
        answer_survey(platform, shop, "cust-2", 9, "Will buy again")
        answer_survey(platform, shop, "cust-3", 3, "<b>Too slow</b> to arrive")
        page.reload()
        # Two promoters and one detractor of three answers: NPS = (2 - 1) / 3 * 100.
        assert page.get_by_test_id("kpi-nps").inner_text() == "33.3"
        assert page.locator('[data-kpi="nps"]').get_attribute("class") == "card bad"  # below 50
        assert page.locator("svg.chart").count() >= 2
        shoot(page, "overview")
        page.context.close()


class TestCustomers:
    def test_search_and_open_a_customers_timeline(self, browser: Any, platform: Platform, shops: Any) -> None:
        shop = shops["Kissa Tea"]
        ingest(platform, shop, purchases(["cust-aiko"], prefix="timeline"))
        page = signed_in_page(browser, platform, shop["api_key"])
        page.get_by_role("link", name="Customers").click()
        page.get_by_label("Customer id, email or name").fill("aiko@")
        page.get_by_role("button", name="Search").click()
        shoot(page, "customers")
        page.get_by_role("link", name="cust-aiko").click()

        def timeline_with_followups() -> bool:
            page.reload()
            timeline = page.get_by_test_id("timeline")
            return (
                timeline.count() == 1
                and timeline.locator(".kind-purchase_made").count() >= 1
                and timeline.locator(".kind-followup").count() >= 1
            )

        eventually(timeline_with_followups, timeout_s=60, interval_s=1, what="purchases and follow-ups")
        assert "ORD-timeline-cust-aiko" in page.get_by_test_id("timeline").inner_text()
        assert page.get_by_role("heading", name="Aiko Tanaka").is_visible()
        shoot(page, "customer")

        scheduled = page.get_by_role("button", name="Cancel").count()
        page.get_by_role("button", name="Cancel").first.click()
        assert page.get_by_role("status").get_by_text("The follow-up was cancelled.").is_visible()
        assert page.get_by_role("button", name="Cancel").count() == scheduled - 1
        assert page.locator("ol.timeline li.status-cancelled").count() == 1

        with page.expect_download() as download:
            page.get_by_role("link", name="Export data (JSON)").click()
        assert download.value.suggested_filename == "customer-cust-aiko.json"

        page.set_viewport_size({"width": 390, "height": 844})
        shoot(page, "customer-phone")
        page.context.close()


class TestPlaybooks:
    def test_edit_and_simulate_a_playbook(self, browser: Any, platform: Platform, shops: Any) -> None:
        page = signed_in_page(browser, platform, shops["Kissa Tea"]["api_key"])
        page.get_by_role("link", name="Playbooks").click()
        shoot(page, "playbooks")
        page.get_by_role("link", name="Post-purchase follow-up").click()

        document = page.get_by_label("Playbook as YAML")
        original = document.input_value()
        document.fill(original.replace("steps:", "steps: 3\nunused:", 1))
        page.get_by_role("button", name="Save").click()
        assert page.get_by_test_id("document-errors").is_visible()
        assert page.get_by_label("Playbook as YAML").get_attribute("aria-invalid") == "true"

        page.get_by_label("Playbook as YAML").fill(
            original.replace("name: Post-purchase follow-up", "name: Post-purchase thanks", 1)
        )
        page.get_by_role("button", name="Save").click()
        assert page.get_by_role("heading", name=re.compile("Post-purchase thanks")).is_visible()
        assert "v2" in page.get_by_role("heading", level=1).inner_text()

        page.locator("#sim-customer").fill("cust-aiko")
        page.get_by_role("button", name="Simulate").click()
        simulation = page.get_by_test_id("simulation")
        assert simulation.is_visible()
        assert "thank_you" in simulation.inner_text()
        shoot(page, "playbook-simulation")
        page.get_by_label("Step", exact=True).select_option("thank_you")
        page.locator("#preview-customer").fill("cust-aiko")
        page.get_by_role("button", name="Preview").click()
        assert page.get_by_test_id("preview").is_visible()
        shoot(page, "playbook")
        page.context.close()

    def test_disable_and_enable_a_playbook(self, browser: Any, platform: Platform, shops: Any) -> None:
        page = signed_in_page(browser, platform, shops["Kissa Tea"]["api_key"])
        page.goto(f"{platform.url('customer-api')}/console/playbooks")
        row = page.locator('tr[data-playbook="birthday"]')
        row.get_by_role("button", name=re.compile("^Disable")).click()
        assert page.locator('tr[data-playbook="birthday"]').get_by_text("Disabled").is_visible()
        page.locator('tr[data-playbook="birthday"]').get_by_role("button", name=re.compile("^Enable")).click()
        assert page.locator('tr[data-playbook="birthday"]').get_by_text("Enabled").is_visible()
        page.context.close()


class TestOtherPages:
    def test_survey_comments_highlight_detractors(self, browser: Any, platform: Platform, shops: Any) -> None:
        shop = shops["Kissa Tea"]
        put_customer(
            platform.url("customer-api"),
            {"Authorization": f"Bearer {shop['api_key']}"},
            "cust-9",
            "Kenji",
            "kenji@example.com",
        )
        answer_survey(platform, shop, "cust-9", 2, "<i>Broken</i> lid")
        answer_survey(platform, shop, "cust-aiko", 10, "Lovely packaging")
        page = signed_in_page(browser, platform, shop["api_key"])
        page.goto(f"{platform.url('customer-api')}/console/surveys")
        assert "Lovely packaging" in page.content()
        page.get_by_label("Score at most").select_option("6")
        page.get_by_role("button", name="Filter").click()

        detractors = page.locator("ul.comments li.detractor")
        # Shown as text, not markup.
        assert any("<i>Broken</i> lid" in text for text in detractors.all_inner_texts())
        assert "Lovely packaging" not in page.content()
        assert page.locator("ul.comments li.comment:not(.detractor)").count() == 0
        page.context.close()

    @pytest.mark.parametrize("name", ["segments", "surveys", "deliveries", "settings"])
    def test_each_page_renders(self, browser: Any, platform: Platform, shops: Any, name: str) -> None:
        page = signed_in_page(browser, platform, shops["Kissa Tea"]["api_key"])
        # A Content-Security-Policy violation (an inline style or script) shows as a console error.
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        response = page.goto(f"{platform.url('customer-api')}/console/{name}")

        assert response is not None and response.status == 200
        assert page.get_by_role("heading", level=1).is_visible()
        assert errors == []
        shoot(page, name)
        page.context.close()


class TestIsolation:
    def test_a_shop_cannot_reach_another_shops_pages(
        self, browser: Any, platform: Platform, shops: Any
    ) -> None:
        page = signed_in_page(browser, platform, shops["Other Shop"]["api_key"])
        base = platform.url("customer-api")

        for path in ("/console/customers/cust-aiko", "/console/customers/cust-aiko/erase"):
            response = page.goto(f"{base}{path}")
            assert response is not None and response.status == 404
            assert "Aiko" not in page.content()
        page.goto(f"{base}/console/customers?q=aiko")
        assert "cust-aiko" not in page.content()
        page.goto(f"{base}/console/customers/cust-aiko")
        shoot(page, "other-shop-404")
        page.context.close()

    def test_the_operator_switches_shops(self, browser: Any, platform: Platform, shops: Any) -> None:
        page = signed_in_page(browser, platform, platform.admin_token)
        page.get_by_label("Shop id").fill(shops["Kissa Tea"]["id"])
        page.get_by_role("button", name="Switch").click()
        page.goto(f"{platform.url('customer-api')}/console/customers/cust-aiko")
        assert page.get_by_role("heading", name="Aiko Tanaka").is_visible()

        page.goto(f"{platform.url('customer-api')}/console/shop")
        page.get_by_label("Shop id").fill(shops["Other Shop"]["id"])
        page.get_by_role("button", name="Switch").click()
        response = page.goto(f"{platform.url('customer-api')}/console/customers/cust-aiko")
        assert response is not None and response.status == 404
        page.context.close()

    def test_a_test_message_reaches_the_platforms_mail_server(
        self, browser: Any, platform: Platform, shops: Any, smtp: SmtpServer
    ) -> None:
        page = signed_in_page(browser, platform, shops["Kissa Tea"]["api_key"])
        page.goto(f"{platform.url('customer-api')}/console/settings")
        page.get_by_label("Test email to").fill("staff@kissa.example")
        page.get_by_test_id("test-send-email").get_by_role("button", name="Send a test").click()

        assert page.get_by_role("status").filter(has_text="accepted the test message").is_visible()
        assert eventually(
            lambda: any("staff@kissa.example" in mail.recipients for mail in smtp.received),
            timeout_s=20,
            interval_s=0.5,
            what="the test message at the SMTP server",
        )
        page.context.close()

    def test_the_operator_sees_the_dead_letter_queues(
        self, browser: Any, platform: Platform, shops: Any
    ) -> None:
        page = signed_in_page(browser, platform, platform.admin_token)
        page.get_by_label("Shop id").fill(shops["Kissa Tea"]["id"])
        page.get_by_role("button", name="Switch").click()
        page.goto(f"{platform.url('customer-api')}/console/deliveries")

        queues = page.get_by_role("region", name="Dead-letter queue")
        assert "Operator only" not in queues.inner_text()
        # Every topic of the catalogue is listed with what waits in its dead-letter topic.
        assert queues.get_by_text("retention.activity.v1").count() == 1
        assert "waiting" in queues.inner_text()
        page.context.close()

        shop_page = signed_in_page(browser, platform, shops["Kissa Tea"]["api_key"])
        shop_page.goto(f"{platform.url('customer-api')}/console/deliveries")
        assert "Operator only" in shop_page.get_by_role("region", name="Dead-letter queue").inner_text()
        shop_page.context.close()
