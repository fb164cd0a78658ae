"""The followup-scheduler's HTTP API on its real bootstrap and migrations (SQLite), manual clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from followup_scheduler.domain.playbook import playbook_json_schema
from retention_shared.clock import ManualClock
from retention_shared.config import Mode, PlatformSettings
from retention_shared.events.envelope import build_envelope
from retention_shared.platform import app_with_workers, assemble
from retention_shared.runtime import ServiceRuntime, service_named
from retention_shared.testing.smtp import SmtpServer, free_port

ADMIN_TOKEN = "unit-test-operator-token"
SHOP = "shop_api"
OTHER_SHOP = "shop_other"
START = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo
SCHEMA_FILE = Path(__file__).resolve().parents[4] / "docs" / "schemas" / "playbook.schema.json"


class Api:
    def __init__(self, client: TestClient, runtime: ServiceRuntime, clock: ManualClock) -> None:
        self.client = client
        self.runtime = runtime
        self.clock = clock

    def headers(self, shop: str = SHOP, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Retention-Shop": shop, **extra}

    def get(self, path: str, shop: str = SHOP, **kwargs: Any) -> Any:
        return self.client.get(path, headers=self.headers(shop, **kwargs.pop("headers", {})), **kwargs)

    def post(self, path: str, shop: str = SHOP, **kwargs: Any) -> Any:
        return self.client.post(path, headers=self.headers(shop, **kwargs.pop("headers", {})), **kwargs)

    def put(self, path: str, shop: str = SHOP, **kwargs: Any) -> Any:
        return self.client.put(path, headers=self.headers(shop, **kwargs.pop("headers", {})), **kwargs)

    def event(
        self, event_type: str, data: dict[str, Any], customer: str | None = "c1", shop: str = SHOP
    ) -> None:
        envelope = build_envelope(
            type=event_type,
            source="test",
            shop_id=shop,
            customer_id=customer,
            data=data,
            time=self.clock.now(),
        )
        with self.runtime.uow_factory() as uow:
            self.runtime.handlers[event_type](envelope, uow)
            uow.commit()

    def register_shop(self, shop: str = SHOP) -> None:
        self.event(
            "shop_registered",
            {"name": "Kissa Tokyo", "timezone": "Asia/Tokyo", "currency": "JPY", "locale": "en"},
            customer=None,
            shop=shop,
        )

    def customer(self, customer: str = "c1", **profile: Any) -> None:
        self.event(
            "customer_upserted",
            {
                "created": True,
                "email": f"{customer}@example.com",
                "name": "Hana",
                "timezone": "Asia/Tokyo",
                **profile,
            },
            customer=customer,
        )
        self.event("consent_changed", {"channel": "email", "granted": True}, customer=customer)

    def playbook(self, key: str, shop: str = SHOP) -> dict[str, Any]:
        listed = self.get("/v1/playbooks", shop).json()["playbooks"]
        return next(p for p in listed if p["key"] == key)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    clock = ManualClock(START)
    settings = PlatformSettings(
        mode=Mode.EMBEDDED, data_dir=tmp_path, admin_token=ADMIN_TOKEN, topic_namespace=""
    )
    assembly = assemble([service_named("followup-scheduler")], settings, clock, migrate=True)
    app = app_with_workers(assembly, "t", "followup-scheduler", run_workers=False)
    with TestClient(app) as client:
        api = Api(client, assembly.runtimes[0], clock)
        api.register_shop()
        yield api


def custom_playbook(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "key": "vip_upsell",
        "name": "VIP upsell",
        "trigger": {
            "event": "purchase_made",
            "business_key": "order_id",
            "conditions": {"min_amount": "10000", "tier_in": ["gold", "platinum"]},
        },
        "priority": "marketing",
        "steps": [
            {"key": "offer", "delay": "P2D..P3D", "channels": ["email"], "template": "vip.offer"},
        ],
        "templates": {
            "vip.offer": {
                "en": {
                    "subject": "For you, {{ customer.name }}",
                    "text": "Try {{ recommendation.name if recommendation else 'our new tea' }}",
                },
                "ja": {"subject": "{{ customer.name }}様へ", "text": "おすすめ"},
            }
        },
        "control_group_percent": 20,
    }
    document.update(overrides)
    return document


class TestPlaybookSchema:
    def test_the_published_json_schema_is_up_to_date(self) -> None:
        published = json.loads(SCHEMA_FILE.read_text("utf-8"))

        assert published == playbook_json_schema(), (
            "docs/schemas/playbook.schema.json is stale: regenerate it from playbook_json_schema()"
        )

    def test_the_schema_is_served(self, api: Api) -> None:
        assert api.get("/v1/playbooks/schema").json()["title"] == "Playbook"


class TestPlaybookCrud:
    def test_every_new_shop_gets_the_default_playbooks(self, api: Api) -> None:
        keys = {p["key"] for p in api.get("/v1/playbooks").json()["playbooks"]}

        assert keys == {
            "post_purchase",
            "ticket_support",
            "ticket_ces",
            "login_reengagement",
            "reactivation_dormant",
            "at_risk_recovery",
            "champions_thanks",
            "nps_detractor_recovery",
            "birthday",
        }

    def test_create_read_update_keeps_versions(self, api: Api) -> None:
        created = api.post("/v1/playbooks", json=custom_playbook())
        assert created.status_code == 201, created.text
        body = created.json()
        assert (body["version"], body["enabled"], body["trigger_event"]) == (1, True, "purchase_made")

        changed = custom_playbook(name="VIP upsell v2")
        updated = api.put(f"/v1/playbooks/{body['id']}", json=changed)
        assert updated.status_code == 200, updated.text
        assert (updated.json()["version"], updated.json()["document"]["name"]) == (2, "VIP upsell v2")

        versions = api.get(f"/v1/playbooks/{body['id']}/versions").json()["versions"]
        assert [(v["version"], v["document"]["name"]) for v in versions] == [
            (1, "VIP upsell"),
            (2, "VIP upsell v2"),
        ]

    def test_a_second_playbook_with_the_same_key_conflicts(self, api: Api) -> None:
        assert api.post("/v1/playbooks", json=custom_playbook()).status_code == 201

        assert api.post("/v1/playbooks", json=custom_playbook()).status_code == 409

    def test_yaml_import_and_export(self, api: Api) -> None:
        text = yaml.safe_dump(custom_playbook(), allow_unicode=True)
        created = api.post("/v1/playbooks", content=text, headers={"Content-Type": "application/yaml"})
        assert created.status_code == 201, created.text

        exported = api.get(f"/v1/playbooks/{created.json()['id']}", headers={"Accept": "application/yaml"})

        assert exported.headers["content-type"].startswith("application/yaml")
        document = yaml.safe_load(exported.text)
        assert document["key"] == "vip_upsell"
        assert document["steps"][0]["delay"] == {"from": "P2D", "to": "P3D"}

    def test_disable_and_enable(self, api: Api) -> None:
        playbook = api.playbook("post_purchase")

        assert api.post(f"/v1/playbooks/{playbook['id']}/disable").json()["enabled"] is False
        api.customer()
        api.event("purchase_made", {"order_id": "o-1", "amount": "100", "currency": "JPY"})
        assert api.get("/v1/customers/c1/followups").json()["followups"] == []

        assert api.post(f"/v1/playbooks/{playbook['id']}/enable").json()["enabled"] is True
        api.event("purchase_made", {"order_id": "o-2", "amount": "100", "currency": "JPY"})
        assert len(api.get("/v1/customers/c1/followups").json()["followups"]) == 5

    def test_another_shops_playbook_is_not_found(self, api: Api) -> None:
        api.register_shop(OTHER_SHOP)
        theirs = api.playbook("post_purchase", OTHER_SHOP)

        assert api.get(f"/v1/playbooks/{theirs['id']}").status_code == 404
        assert api.put(f"/v1/playbooks/{theirs['id']}", json=custom_playbook()).status_code == 404
        assert api.post(f"/v1/playbooks/{theirs['id']}/disable").status_code == 404

    def test_delete_cancels_pending_steps(self, api: Api) -> None:
        api.customer()
        api.event("purchase_made", {"order_id": "o-1", "amount": "100", "currency": "JPY"})
        playbook = api.playbook("post_purchase")

        assert api.client.delete(f"/v1/playbooks/{playbook['id']}", headers=api.headers()).status_code == 204

        statuses = {f["status"] for f in api.get("/v1/customers/c1/followups").json()["followups"]}
        assert statuses == {"cancelled"}


class TestInvalidPlaybooks:
    def errors(self, response: Any) -> dict[str, str]:
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        return {error["path"]: error["message"] for error in response.json()["errors"]}

    def test_each_error_names_its_json_path(self, api: Api) -> None:
        document = custom_playbook()
        document["steps"][0]["channels"] = ["pigeon"]
        document["steps"][0]["delay"] = "soon"
        document["trigger"]["event"] = "sunrise"

        errors = self.errors(api.post("/v1/playbooks", json=document))

        assert set(errors) >= {"$.steps[0].channels[0]", "$.steps[0].delay", "$.trigger.event"}

    def test_a_template_error_is_caught_at_save_time(self, api: Api) -> None:
        document = custom_playbook()
        document["templates"]["vip.offer"]["ja"]["text"] = "{{ customer.nmae }} {% if %}"

        errors = self.errors(api.post("/v1/playbooks", json=document))

        assert "$.templates.vip.offer" in errors
        assert errors["$.templates.vip.offer"].startswith("ja: ")

    def test_a_template_that_fails_without_a_recommendation_is_caught(self, api: Api) -> None:
        document = custom_playbook()
        document["templates"]["vip.offer"]["en"]["text"] = "Try {{ recommendation.name }}"

        errors = self.errors(api.post("/v1/playbooks", json=document))

        assert errors["$.templates.vip.offer"] == (
            "en: UndefinedError: 'None' has no attribute 'name'"
            " (with optional data absent, e.g. no recommendation)"
        )

    def test_an_unknown_template_is_named(self, api: Api) -> None:
        document = custom_playbook(templates={})

        errors = self.errors(api.post("/v1/playbooks", json=document))

        assert errors == {"$.steps[0].template": "unknown template 'vip.offer'"}

    def test_malformed_yaml(self, api: Api) -> None:
        response = api.post("/v1/playbooks", content="key: [", headers={"Content-Type": "application/yaml"})

        assert list(self.errors(response)) == ["$"]


class TestSettingsAndChannels:
    def test_defaults_then_replace(self, api: Api) -> None:
        defaults = api.get("/v1/followup/settings").json()
        assert defaults["global_holdout_percent"] == 5
        assert defaults["quiet_hours"]["email"] == {"start": "21:00:00", "end": "09:00:00"}

        defaults["frequency_caps"] = [{"classes": ["marketing"], "max": 2, "per": "P7D"}]
        assert api.put("/v1/followup/settings", json=defaults).status_code == 200

        assert api.get("/v1/followup/settings").json()["frequency_caps"][0]["max"] == 2

    def test_a_bad_setting_names_the_field(self, api: Api) -> None:
        response = api.put("/v1/followup/settings", json={"global_holdout_percent": 80})

        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "body.global_holdout_percent"

    def test_channel_secrets_are_write_only(self, api: Api) -> None:
        response = api.put(
            "/v1/channels/sms",
            json={
                "settings": {"base_url": "https://sms.example", "account_sid": "AC1", "from_number": "+1555"},
                "secrets": {"auth_token": "very-secret"},
            },
        )
        assert response.status_code == 200, response.text
        listed = api.get("/v1/channels").json()

        assert "very-secret" not in json.dumps(listed)
        assert listed["channels"][0]["secrets_set"] == ["auth_token"]
        # A later change without the secret keeps it.
        again = api.put(
            "/v1/channels/sms",
            json={
                "settings": {"base_url": "https://sms2.example", "account_sid": "AC1", "from_number": "+1555"}
            },
        )
        assert again.json()["secrets_set"] == ["auth_token"]

    def test_a_test_message_goes_through_the_shops_own_server(
        self, api: Api, smtp_server: SmtpServer
    ) -> None:
        configured = api.put(
            "/v1/channels/email",
            json={
                "settings": {
                    "host": smtp_server.host,
                    "port": smtp_server.port,
                    "sender": "shop@example.com",
                    "starttls": False,
                }
            },
        )
        assert configured.status_code == 200, configured.text

        sent = api.post("/v1/channels/email/test", json={"to": "staff@example.com"})

        assert sent.status_code == 200, sent.text
        assert sent.json() == {
            "channel": "email",
            "recipient": "staff@example.com",
            "delivered": True,
            "error": None,
        }
        (mail,) = smtp_server.wait_for(1)
        assert mail.recipients == ["staff@example.com"] and mail.sender == "shop@example.com"
        assert "test message" in mail.subject

    def test_a_failing_channel_answers_the_providers_error_and_a_missing_one_404(self, api: Api) -> None:
        nothing_listens = free_port()
        api.put(
            "/v1/channels/email",
            json={
                "settings": {
                    "host": "127.0.0.1",
                    "port": nothing_listens,
                    "sender": "shop@example.com",
                    "starttls": False,
                }
            },
        )

        failed = api.post("/v1/channels/email/test", json={"to": "staff@example.com"})
        missing = api.post("/v1/channels/sms/test", json={"to": "+819012345678"})
        empty = api.post("/v1/channels/email/test", json={"to": ""})

        assert failed.status_code == 200 and failed.json()["delivered"] is False
        assert failed.json()["error"]
        assert missing.status_code == 404
        assert empty.status_code == 422 and "body.to" in json.dumps(empty.json()["errors"])

    def test_a_missing_secret_is_named(self, api: Api) -> None:
        response = api.put("/v1/channels/webhook", json={"settings": {"url": "https://shop.example/hook"}})

        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "body.secrets.secret"


class TestSimulateAndPreview:
    def test_simulation_explains_each_step(self, api: Api) -> None:
        api.customer()
        playbook = api.playbook("ticket_support")

        response = api.post(
            f"/v1/playbooks/{playbook['id']}/simulate",
            json={
                "customer_id": "c1",
                "event": {"type": "ticket_opened", "data": {"ticket_id": "T-1", "priority": "critical"}},
            },
        )

        assert response.status_code == 200, response.text
        result = response.json()
        assert result["starts"] is True
        steps = {step["key"]: step for step in result["steps"]}
        assert steps["acknowledgement"]["outcome"] == "send"
        assert steps["acknowledgement"]["channel"] == "email"
        assert steps["escalate_critical"]["scheduled"] is True
        assert steps["escalate_critical"]["outcome"] == "skip"  # no webhook configured yet
        assert steps["escalate"]["outcome"] == "not_scheduled"
        assert "ticket priority 'critical'" in steps["escalate"]["reasons"][0]

    def test_simulation_shows_why_a_run_would_not_start(self, api: Api) -> None:
        api.customer()
        playbook = api.playbook("reactivation_dormant")

        result = api.post(
            f"/v1/playbooks/{playbook['id']}/simulate",
            json={
                "customer_id": "c1",
                "event": {"type": "segment_changed", "data": {"from": "new", "to": "loyal"}},
            },
        ).json()

        assert result["starts"] is False
        assert result["reasons"] == ["segment 'loyal' not in ['dormant', 'cant_lose', 'hibernating']"]

    def test_simulation_shows_the_deferral_by_quiet_hours(self, api: Api) -> None:
        api.customer()
        document = custom_playbook(
            key="night_promo",
            trigger={"event": "login_dropped"},
            steps=[{"key": "offer", "delay": "PT0S", "channels": ["email"], "template": "vip.offer"}],
        )
        created = api.post("/v1/playbooks", json=document).json()
        api.clock.set(datetime(2026, 1, 5, 14, 0, tzinfo=UTC))  # 23:00 in Tokyo

        result = api.post(
            f"/v1/playbooks/{created['id']}/simulate",
            json={"customer_id": "c1", "event": {"type": "login_dropped", "data": {}}},
        ).json()

        (offer,) = result["steps"]
        assert offer["due_at"] == "2026-01-05T14:00:00Z"
        assert offer["send_at"] == "2026-01-06T00:00:00Z"  # 09:00 in Tokyo
        assert offer["reasons"][0] == "deferred by quiet hours for email until 2026-01-06T00:00:00+00:00"

    def test_a_window_step_falls_at_the_preferred_hour(self, api: Api) -> None:
        api.customer()
        playbook = api.playbook("reactivation_dormant")
        api.clock.set(datetime(2026, 1, 5, 14, 0, tzinfo=UTC))  # 23:00 in Tokyo

        result = api.post(
            f"/v1/playbooks/{playbook['id']}/simulate",
            json={
                "customer_id": "c1",
                "customer": {"timezone": "Asia/Tokyo"},
                "event": {"type": "segment_changed", "data": {"from": "loyal", "to": "dormant"}},
            },
        ).json()

        offer = result["steps"][0]
        # 10:00 the next morning, the preferred hour in the window: no quiet-hours deferral needed.
        assert offer["due_at"] == "2026-01-06T01:00:00Z"
        assert offer["send_at"] == "2026-01-06T01:00:00Z"

    def test_preview_renders_for_the_customer(self, api: Api) -> None:
        api.customer(locale="ja")
        api.event(
            "purchase_made",
            {
                "order_id": "o-7",
                "amount": "4800",
                "currency": "JPY",
                "items": [{"sku": "TEA", "quantity": 1, "unit_price": "4800"}],
            },
        )
        playbook = api.playbook("post_purchase")

        response = api.get(
            f"/v1/playbooks/{playbook['id']}/steps/thank_you/preview", params={"customer_id": "c1"}
        )

        assert response.status_code == 200, response.text
        assert response.json()["subject"] == "ご注文ありがとうございます（o-7）"

    def test_preview_of_an_unknown_customer_is_not_found(self, api: Api) -> None:
        playbook = api.playbook("post_purchase")

        response = api.get(
            f"/v1/playbooks/{playbook['id']}/steps/thank_you/preview", params={"customer_id": "nobody"}
        )

        assert response.status_code == 404


class TestCancel:
    def test_cancel_one_step_and_the_timeline_shows_it(self, api: Api) -> None:
        api.customer()
        api.event("purchase_made", {"order_id": "o-1", "amount": "100", "currency": "JPY"})
        followups = api.get("/v1/customers/c1/followups").json()["followups"]
        tips = next(f for f in followups if f["step"] == "usage_tips")

        response = api.post(f"/v1/followups/{tips['id']}/cancel")

        assert response.status_code == 200, response.text
        assert (response.json()["status"], response.json()["reason"]) == (
            "cancelled",
            "cancelled through the API",
        )
        assert api.post(f"/v1/followups/{tips['id']}/cancel").status_code == 409
        assert api.post(f"/v1/followups/{tips['id']}/cancel", OTHER_SHOP).status_code == 404


class TestResults:
    def test_treated_and_control_conversion_with_uplift(self, api: Api) -> None:
        document = custom_playbook(
            key="all_buyers",
            trigger={"event": "purchase_made", "business_key": "order_id"},
            control_group_percent=50,
        )
        created = api.post("/v1/playbooks", json=document).json()
        customers = [f"k{i}" for i in range(60)]
        for customer in customers:
            api.customer(customer)
            api.event(
                "purchase_made",
                {"order_id": f"first-{customer}", "amount": "100", "currency": "JPY"},
                customer,
            )
        api.clock.advance(timedelta(days=3))
        for customer in customers[::2]:  # every other customer buys again within the goal window
            api.event(
                "purchase_made",
                {"order_id": f"again-{customer}", "amount": "100", "currency": "JPY"},
                customer,
            )

        still_open = api.get(f"/v1/playbooks/{created['id']}/results").json()
        assert still_open["runs_still_in_goal_window"] + still_open["runs_in_global_holdout"] >= 60

        api.clock.advance(timedelta(days=15))
        result = api.get(f"/v1/playbooks/{created['id']}/results").json()

        treated, control = result["treated"], result["control"]
        assert treated["runs"] > 0 and control["runs"] > 0
        # Runs of the second purchases are still in their window; the first ones count.
        assert (
            treated["runs"]
            + control["runs"]
            + result["runs_in_global_holdout"]
            + result["runs_still_in_goal_window"]
            == 90
        )
        low, high = result["uplift_ci95"]
        assert low < result["uplift"] < high
        assert result["uplift"] == pytest.approx(treated["conversion_rate"] - control["conversion_rate"])


class TestUnsubscribe:
    def test_one_click_unsubscribe_withdraws_consent(self, api: Api) -> None:
        from followup_scheduler.adapters.unsubscribe import UnsubscribeLinks

        api.customer()
        links = UnsubscribeLinks(PlatformSettings().signing_secret.get_secret_value(), "http://testserver")
        token = links.token(SHOP, "c1", "email")

        page = api.client.get(f"/u/{token}")
        assert page.status_code == 200 and "<form" in page.text  # a GET changes nothing

        done = api.client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
        assert done.status_code == 200

        with api.runtime.uow_factory() as uow:
            contact = uow.repo.contact(SHOP, "c1")
        assert contact is not None and contact["consents"]["email"] is False

    def test_a_forged_token_is_refused(self, api: Api) -> None:
        assert api.client.post("/u/eyJzaG9wIjoiYSJ9.AAAAAAAAAAAAAAAAAAAAAAAAAAA").status_code == 404


class TestOpenApi:
    def test_the_openapi_document_lists_the_new_routes(self, api: Api) -> None:
        paths = api.client.get("/openapi.json").json()["paths"]

        assert {
            "/v1/playbooks",
            "/v1/playbooks/{playbook_id}",
            "/v1/playbooks/{playbook_id}/simulate",
            "/v1/playbooks/{playbook_id}/results",
            "/v1/playbooks/{playbook_id}/steps/{step_key}/preview",
            "/v1/followups/{step_id}/cancel",
            "/v1/followup/settings",
            "/v1/channels",
            "/v1/channels/{channel}",
            "/u/{token}",
        } <= set(paths)


class TestDeliveriesApi:
    def test_steps_are_listed_and_counted_for_their_own_shop_only(self, api: Api) -> None:
        api.register_shop(OTHER_SHOP)
        api.customer()
        api.event("purchase_made", {"order_id": "o-1", "amount": "4200", "currency": "JPY", "items": []})

        listed = api.get("/v1/deliveries", params={"status": "scheduled", "limit": 2})
        summary = api.get("/v1/deliveries/summary", params={"days": 7})
        elsewhere = api.get("/v1/deliveries", shop=OTHER_SHOP)

        assert listed.status_code == 200, listed.text
        page = listed.json()
        assert len(page["deliveries"]) == 2 and page["next_cursor"]
        assert {d["status"] for d in page["deliveries"]} == {"scheduled"}
        rest = api.get("/v1/deliveries", params={"status": "scheduled", "cursor": page["next_cursor"]}).json()
        assert len(page["deliveries"]) + len(rest["deliveries"]) == 5
        assert summary.json()["counts"] == [{"channel": "none", "status": "scheduled", "count": 5}]
        assert elsewhere.json() == {"deliveries": [], "next_cursor": None}

    def test_a_bad_filter_or_cursor_names_the_field(self, api: Api) -> None:
        for params, field in (({"status": "lost"}, "status"), ({"cursor": "nope"}, "cursor")):
            response = api.get("/v1/deliveries", params=params)
            assert response.status_code == 422, response.text
            assert response.headers["content-type"].startswith("application/problem+json")
            assert field in json.dumps(response.json()["errors"])
