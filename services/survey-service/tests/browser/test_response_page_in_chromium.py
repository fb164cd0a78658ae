"""The response page in a real headless Chromium (Debian's), against the service in a real uvicorn.

Open the link, tap a score, write a comment, see the thank-you page; then the expired and
already-answered pages. JavaScript is switched off for one run: the page must not need it."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from retention_shared.clock import ManualClock
from retention_shared.config import Mode, PlatformSettings
from retention_shared.events.envelope import build_envelope
from retention_shared.platform import app_with_workers, assemble
from retention_shared.runtime import ServiceRuntime, service_named
from retention_shared.testing.harness import ADMIN_TOKEN
from retention_shared.testing.smtp import free_port

pytestmark = pytest.mark.integration


@dataclass
class LiveSurveyService:
    url: str
    runtime: ServiceRuntime
    clock: ManualClock

    def deliver(self, event_type: str, shop_id: str, customer_id: str | None, data: dict[str, Any]) -> None:
        event = build_envelope(
            type=event_type,
            source="test",
            shop_id=shop_id,
            customer_id=customer_id,
            data=data,
            time=self.clock.now(),
        )
        with self.runtime.uow_factory() as uow:
            self.runtime.handlers[event_type](event, uow)
            uow.commit()

    def invite(self, shop_id: str, customer_id: str, locale: str = "en") -> str:
        response = httpx.post(
            f"{self.url}/v1/surveys/nps/invitations",
            json={"customer_id": customer_id, "context": {"type": "order", "id": "ORD-1"}, "locale": locale},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Retention-Shop": shop_id},
        )
        assert response.status_code == 201, response.text
        return str(response.json()["url"])


@pytest.fixture(scope="module")
def chromium(chromium_browser: Any) -> Any:
    return chromium_browser


@pytest.fixture
def live_service(tmp_path: Path) -> Iterator[LiveSurveyService]:
    """The survey-service alone in uvicorn on a free port, on SQLite, with a clock the test moves."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    clock = ManualClock()
    settings = PlatformSettings(
        mode=Mode.EMBEDDED,
        data_dir=tmp_path,
        admin_token=ADMIN_TOKEN,
        public_base_url=url,
        topic_namespace="",
    )
    assembly = assemble([service_named("survey-service")], settings, clock, migrate=True)
    app = app_with_workers(assembly, "survey-service", "survey-service", run_workers=False)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield LiveSurveyService(url, assembly.runtimes[0], clock)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def shop_id(live_service: LiveSurveyService) -> str:
    shop = f"shop_{secrets.token_hex(6)}"
    live_service.deliver(
        "shop_registered",
        shop,
        None,
        {"name": "Kissa Tokyo", "timezone": "Asia/Tokyo", "currency": "JPY", "locale": "ja"},
    )
    return shop


class TestResponsePageInChromium:
    def test_tap_a_score_write_a_comment_and_see_thanks(
        self, chromium: Any, live_service: LiveSurveyService, shop_id: str
    ) -> None:
        link = live_service.invite(shop_id, "aiko")
        page = chromium.new_page(viewport={"width": 390, "height": 844})  # a phone
        try:
            page.goto(link)
            assert (
                page.locator("legend").inner_text().startswith("How likely are you to recommend Kissa Tokyo")
            )
            page.get_by_role("button", name="9", exact=True).click()
            comment = page.get_by_label("What is the main reason for your score?")
            comment.wait_for()
            assert page.locator("#score-9").is_checked()
            comment.fill("Lovely tea <b>and</b> quick delivery")
            page.get_by_role("button", name="Send").click()
            page.get_by_role("heading", name="Thank you for your answer").wait_for()
            assert "Lovely tea <b>and</b> quick delivery" in page.locator("blockquote").inner_text()
            assert page.locator("blockquote b").count() == 0  # shown as text, not markup
        finally:
            page.close()

    def test_the_page_works_with_javascript_off(
        self, chromium: Any, live_service: LiveSurveyService, shop_id: str
    ) -> None:
        link = live_service.invite(shop_id, "ken", locale="ja")
        context = chromium.new_context(java_script_enabled=False)
        try:
            page = context.new_page()
            page.goto(link)
            assert page.locator("html").get_attribute("lang") == "ja"
            page.get_by_role("button", name="3", exact=True).click()
            page.get_by_label("そのスコアを付けたいちばんの理由を教えてください。").fill("配送が遅かった")
            page.get_by_role("button", name="送信する").click()
            page.get_by_role("heading", name="ご回答ありがとうございました").wait_for()
        finally:
            context.close()

    def test_expired_and_already_answered_links_get_friendly_pages(
        self, chromium: Any, live_service: LiveSurveyService, shop_id: str
    ) -> None:
        answered = live_service.invite(shop_id, "c1")
        expiring = live_service.invite(shop_id, "c2")
        page = chromium.new_page()
        try:
            page.goto(answered)
            page.get_by_role("button", name="10 Extremely likely").click()
            page.get_by_role("button", name="Send").click()
            page.get_by_role("heading", name="Thank you for your answer").wait_for()

            live_service.clock.advance(timedelta(days=31))
            response = page.goto(answered)
            assert response is not None and response.status == 409
            page.get_by_role("heading", name="You have already answered this survey").wait_for()
            response = page.goto(expiring)
            assert response is not None and response.status == 410
            page.get_by_role("heading", name="This link has expired").wait_for()
            response = page.goto(expiring[:-3] + "AAA")
            assert response is not None and response.status == 404
            assert "Kissa" not in page.content()
        finally:
            page.close()
