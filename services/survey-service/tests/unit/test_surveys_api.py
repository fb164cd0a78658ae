"""Surveys per shop: the defaults, CRUD, validation that names the field, and tenant isolation."""

from __future__ import annotations

from typing import Any

from retention_shared.testing.harness import ADMIN_TOKEN

PROBLEM_JSON = "application/problem+json"

CUSTOM = {
    "kind": "csat",
    "name": "After support",
    "texts": {"en": {"question": "How satisfied are you with our support?"}},
}


class TestDefaultSurveys:
    def test_a_new_shop_gets_nps_csat_and_ces_in_japanese_and_english(
        self, survey_api: Any, shop: Any
    ) -> None:
        _, headers = shop
        found = survey_api.client.get("/v1/surveys", headers=headers).json()["surveys"]
        assert sorted(s["default_for"] for s in found) == ["ces", "csat", "nps"]
        for survey in found:
            assert set(survey["texts"]) == {"ja", "en"}
            assert survey["comment_enabled"] is True
            assert "{shop}" in survey["texts"]["en"]["question"]

    def test_a_shop_from_before_surveys_gets_its_defaults_when_first_asked(self, survey_api: Any) -> None:
        from retention_shared.tenancy import tenancy_handlers
        from survey_service.adapters import tables

        # Only the shared replica handler ran, as before this service created default surveys.
        survey_api.runtime.handlers["shop_registered"] = tenancy_handlers(tables.tenancy)["shop_registered"]
        shop_id, headers = survey_api.register_shop()
        nps = survey_api.client.get("/v1/surveys/nps", headers=headers)
        assert nps.status_code == 200, nps.text
        assert nps.json()["kind"] == "nps" and nps.json()["default_for"] == "nps"
        assert len(survey_api.client.get("/v1/surveys", headers=headers).json()["surveys"]) == 3

    def test_a_redelivered_shop_registered_adds_no_second_set(self, survey_api: Any, shop: Any) -> None:
        shop_id, headers = shop
        survey_api.deliver(
            "shop_registered",
            shop_id,
            None,
            {"name": "Kissa Tokyo", "timezone": "Asia/Tokyo", "currency": "JPY", "locale": "ja"},
        )
        assert len(survey_api.client.get("/v1/surveys", headers=headers).json()["surveys"]) == 3

    def test_a_default_survey_cannot_be_archived(self, survey_api: Any, shop: Any) -> None:
        _, headers = shop
        response = survey_api.client.delete("/v1/surveys/nps", headers=headers)
        assert response.status_code == 409
        assert response.headers["content-type"] == PROBLEM_JSON


class TestSurveyCrud:
    def test_create_read_update_and_archive(self, survey_api: Any, shop: Any) -> None:
        _, headers = shop
        created = survey_api.client.post("/v1/surveys", json=CUSTOM, headers=headers)
        assert created.status_code == 201, created.text
        survey = created.json()
        assert survey["kind"] == "csat" and survey["default_for"] is None
        # The free-text question defaults to the standard one.
        assert survey["texts"]["en"]["comment_question"] == "What is the main reason for your score?"

        url = f"/v1/surveys/{survey['survey_id']}"
        assert survey_api.client.get(url, headers=headers).json()["name"] == "After support"
        changed = survey_api.client.patch(
            url,
            json={"name": "Support CSAT", "texts": {"ja": {"question": "サポートに満足されましたか？"}}},
            headers=headers,
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["name"] == "Support CSAT"
        assert set(changed.json()["texts"]) == {"ja"}

        assert survey_api.client.delete(url, headers=headers).status_code == 204
        listed = survey_api.client.get("/v1/surveys", headers=headers).json()["surveys"]
        assert survey["survey_id"] not in {s["survey_id"] for s in listed}
        archived = survey_api.client.get("/v1/surveys?include_archived=true", headers=headers).json()
        assert survey["survey_id"] in {s["survey_id"] for s in archived["surveys"]}
        invited = survey_api.client.post(
            f"{url}/invitations",
            json={"customer_id": "c1", "context": {"type": "ticket", "id": "T-1"}},
            headers=headers,
        )
        assert invited.status_code == 409

    def test_the_kind_never_changes(self, survey_api: Any, shop: Any) -> None:
        _, headers = shop
        response = survey_api.client.patch("/v1/surveys/nps", json={"kind": "ces"}, headers=headers)
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "body.kind"

    def test_validation_names_the_failing_field(self, survey_api: Any, shop: Any) -> None:
        _, headers = shop
        cases = [
            ({**CUSTOM, "kind": "stars"}, "body.kind"),
            ({**CUSTOM, "name": ""}, "body.name"),
            ({**CUSTOM, "texts": {}}, "body.texts"),
            ({**CUSTOM, "texts": {"fr": {"question": "Satisfait ?"}}}, "body.texts.fr.[key]"),
            ({**CUSTOM, "texts": {"en": {"question": "x" * 501}}}, "body.texts.en.question"),
            ({**CUSTOM, "texts": {"en": {"question": "ok", "extra": 1}}}, "body.texts.en.extra"),
        ]
        for body, field in cases:
            response = survey_api.client.post("/v1/surveys", json=body, headers=headers)
            assert response.status_code == 422, body
            assert response.headers["content-type"] == PROBLEM_JSON
            assert field in [error["field"] for error in response.json()["errors"]], response.json()

    def test_another_shops_survey_answers_404(self, survey_api: Any, shop: Any) -> None:
        _, headers = shop
        survey = survey_api.client.post("/v1/surveys", json=CUSTOM, headers=headers).json()
        _, other = survey_api.register_shop("Other shop")
        url = f"/v1/surveys/{survey['survey_id']}"
        assert survey_api.client.get(url, headers=other).status_code == 404
        assert survey_api.client.patch(url, json={"name": "x"}, headers=other).status_code == 404
        assert survey_api.client.get(f"{url}/results", headers=other).status_code == 404
        assert survey_api.client.get(f"{url}/comments", headers=other).status_code == 404

    def test_keys_need_the_right_scope_and_the_operator_acts_for_one_shop(
        self, survey_api: Any, shop: Any
    ) -> None:
        shop_id, _ = shop
        reader = survey_api.issue_key(shop_id, ("customers:read",))
        assert survey_api.client.get("/v1/surveys", headers=reader).status_code == 200
        assert survey_api.client.post("/v1/surveys", json=CUSTOM, headers=reader).status_code == 403
        assert survey_api.client.get("/v1/surveys").status_code == 401
        operator = {"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Retention-Shop": shop_id}
        assert survey_api.client.post("/v1/surveys", json=CUSTOM, headers=operator).status_code == 201
