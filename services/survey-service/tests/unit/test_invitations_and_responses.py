"""Invitations (signed, expiring, idempotent, fatigue-limited) and answers over the JSON API."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

from retention_shared.testing.harness import ADMIN_TOKEN
from survey_service.adapters import tables

PROBLEM_JSON = "application/problem+json"
PUBLIC_URL = "https://surveys.example.test"


class TestInvitations:
    def test_an_invitation_is_a_personal_signed_link(self, survey_api: Any, shop: Any) -> None:
        shop_id, headers = shop
        invitation = survey_api.invite(headers, customer_id="aiko-42")
        assert invitation["url"] == f"{PUBLIC_URL}/s/{invitation['token']}"
        assert invitation["expires_at"].startswith(str((survey_api.clock.now() + timedelta(days=30)).date()))
        raw = base64.urlsafe_b64decode(invitation["token"] + "==")
        for secret in (shop_id, "aiko-42", "ORD-1", "nps"):
            assert secret.encode() not in raw

    def test_the_same_idempotency_key_answers_the_same_invitation(self, survey_api: Any, shop: Any) -> None:
        _, headers = shop
        keyed = {**headers, "Idempotency-Key": "step-123"}
        first = survey_api.client.post(
            "/v1/surveys/csat/invitations",
            json={"customer_id": "c1", "context": {"type": "ticket", "id": "T-9"}},
            headers=keyed,
        )
        again = survey_api.client.post(
            "/v1/surveys/csat/invitations",
            json={"customer_id": "c1", "context": {"type": "ticket", "id": "T-9"}},
            headers=keyed,
        )
        assert first.status_code == 201 and again.status_code == 200
        assert again.json() == first.json()
        reused = survey_api.client.post(
            "/v1/surveys/csat/invitations",
            json={"customer_id": "c2", "context": {"type": "ticket", "id": "T-9"}},
            headers=keyed,
        )
        assert reused.status_code == 409
        assert reused.json()["errors"][0]["field"] == "header.Idempotency-Key"

    def test_survey_fatigue_limits_a_customer_to_one_invitation_per_30_days(
        self, survey_api: Any, shop: Any
    ) -> None:
        _, headers = shop
        survey_api.invite(headers, customer_id="c1", survey="nps")
        survey_api.clock.advance(timedelta(days=29))
        refused = survey_api.client.post(
            "/v1/surveys/ces/invitations",
            json={"customer_id": "c1", "context": {"type": "ticket", "id": "T-1"}},
            headers=headers,
        )
        assert refused.status_code == 409
        assert refused.headers["content-type"] == PROBLEM_JSON
        assert refused.json()["type"].endswith("/survey-fatigue")
        survey_api.invite(headers, customer_id="c2")  # other customers are not affected
        survey_api.clock.advance(timedelta(days=1, seconds=1))
        survey_api.invite(headers, customer_id="c1", survey="ces", context=("ticket", "T-1"))

    def test_the_platform_operator_invites_for_one_shop(self, survey_api: Any, shop: Any) -> None:
        shop_id, _ = shop
        operator = {"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Retention-Shop": shop_id}
        invitation = survey_api.invite(operator, context=("playbook_run", "run-7"))
        assert invitation["token"]
        missing_shop = survey_api.client.post(
            "/v1/surveys/nps/invitations",
            json={"customer_id": "c9", "context": {"type": "order", "id": "O"}},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert missing_shop.status_code == 400

    def test_bad_invitations_name_the_field(self, survey_api: Any, shop: Any) -> None:
        _, headers = shop
        cases = [
            ({"customer_id": "c1", "context": {"type": "visit", "id": "x"}}, "body.context.type"),
            ({"customer_id": "bad id!", "context": {"type": "order", "id": "x"}}, "body.customer_id"),
            ({"customer_id": "c1"}, "body.context"),
        ]
        for body, field in cases:
            response = survey_api.client.post("/v1/surveys/nps/invitations", json=body, headers=headers)
            assert response.status_code == 422
            assert field in [error["field"] for error in response.json()["errors"]]
        unknown = survey_api.client.post(
            "/v1/surveys/srv_doesnotexist/invitations",
            json={"customer_id": "c1", "context": {"type": "order", "id": "x"}},
            headers=headers,
        )
        assert unknown.status_code == 404


class TestAnswers:
    def test_an_answer_is_recorded_once_and_announced(self, survey_api: Any, shop: Any) -> None:
        shop_id, headers = shop
        invitation = survey_api.invite(headers, customer_id="c1", context=("order", "ORD-7"))
        response = survey_api.answer(invitation["token"], 3, "Late delivery")
        assert response.status_code == 201, response.text
        answer = response.json()
        assert answer["score"] == 3 and answer["detractor"] is True and answer["comment"] == "Late delivery"
        [event] = survey_api.published("survey_answered")
        assert event["shop_id"] == shop_id and event["customer_id"] == "c1"
        assert event["data"] == {
            "survey_id": invitation["survey_id"],
            "response_id": answer["response_id"],
            "kind": "nps",
            "score": 3,
            "detractor": True,
            "touchpoint": "purchase",
            "context": {"type": "order", "id": "ORD-7"},
        }

    def test_a_second_answer_within_24_hours_updates_and_later_ones_are_refused(
        self, survey_api: Any, shop: Any
    ) -> None:
        _, headers = shop
        token = survey_api.invite(headers)["token"]
        first = survey_api.answer(token, 9).json()
        survey_api.clock.advance(timedelta(hours=23))
        comment_only = survey_api.answer(token, 9, "Great tea")
        assert comment_only.status_code == 200
        assert comment_only.json()["response_id"] == first["response_id"]
        assert len(survey_api.published("survey_answered")) == 1  # the score did not change
        changed = survey_api.answer(token, 6)
        assert changed.status_code == 200 and changed.json()["comment"] == "Great tea"
        events = survey_api.published("survey_answered")
        assert [e["data"]["score"] for e in events] == [9, 6]
        assert events[1]["data"]["detractor"] is True
        assert len({e["id"] for e in events}) == 2
        survey_api.clock.advance(timedelta(hours=1, seconds=1))
        refused = survey_api.answer(token, 10)
        assert refused.status_code == 409 and refused.headers["content-type"] == PROBLEM_JSON

    def test_scores_out_of_range_and_long_comments_are_rejected(self, survey_api: Any, shop: Any) -> None:
        _, headers = shop
        nps = survey_api.invite(headers, customer_id="c1", survey="nps")["token"]
        csat = survey_api.invite(headers, customer_id="c2", survey="csat")["token"]
        ces = survey_api.invite(headers, customer_id="c3", survey="ces")["token"]
        for token, score in ((nps, 11), (nps, -1), (csat, 0), (csat, 6), (ces, 8), (ces, 0)):
            response = survey_api.answer(token, score)
            assert response.status_code == 422, (score, response.text)
            assert response.json()["errors"][0]["field"] == "body.score"
        too_long = survey_api.answer(nps, 8, "x" * 2001)
        assert too_long.status_code == 422
        assert too_long.json()["errors"][0]["field"] == "body.comment"
        assert survey_api.answer(nps, 8, "x" * 2000).status_code == 201
        assert survey_api.count(tables.responses) == 1

    def test_detractors_by_kind(self, survey_api: Any, shop: Any) -> None:
        _, headers = shop
        cases = [("nps", 6, True), ("nps", 7, False), ("csat", 2, True), ("csat", 3, False)]
        cases += [("ces", 5, True), ("ces", 4, False)]
        for number, (kind, score, detractor) in enumerate(cases):
            token = survey_api.invite(headers, customer_id=f"c{number}", survey=kind)["token"]
            assert survey_api.answer(token, score).json()["detractor"] is detractor
        flags = [
            (e["data"]["kind"], e["data"]["score"], e["data"]["detractor"])
            for e in survey_api.published("survey_answered")
        ]
        assert flags == cases

    def test_expired_tampered_and_foreign_tokens_fail_without_saying_why(
        self, survey_api: Any, shop: Any
    ) -> None:
        _, headers = shop
        token = survey_api.invite(headers)["token"]
        tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
        response = survey_api.answer(tampered, 5)
        assert response.status_code == 404
        assert response.json()["detail"] == "No such survey link"
        assert survey_api.answer("not-a-token", 5).status_code == 404
        survey_api.clock.advance(timedelta(days=30, seconds=1))
        expired = survey_api.answer(token, 5)
        assert expired.status_code == 410
        assert "shop" not in expired.text.lower()


class TestAnswerBodies:
    """POST /v1/responses answers the same problems whether a body is plain JSON or not."""

    def test_bad_bodies_are_problems_that_name_the_field(self, survey_api: Any, shop: Any) -> None:
        _, headers = shop
        token = survey_api.invite(headers)["token"]
        cases = [
            ({"token": token, "score": "nine"}, "application/json", "body.score"),
            ({"token": token}, "application/json", "body.score"),
            ({"token": token, "score": 9, "rating": 9}, "application/json", "body.rating"),
            ({"token": "", "score": 9}, "application/json", "body.token"),
            ({"token": token, "score": 9}, "text/plain", "body"),
        ]
        for body, content_type, field in cases:
            response = survey_api.client.post(
                "/v1/responses", content=json.dumps(body), headers={"Content-Type": content_type}
            )
            assert response.status_code == 422, (body, response.text)
            assert response.headers["content-type"] == PROBLEM_JSON
            assert [error["field"] for error in response.json()["errors"]] == [field], response.text
        malformed = survey_api.client.post(
            "/v1/responses", content=b'{"token": "x",', headers={"Content-Type": "application/json"}
        )
        assert malformed.status_code == 422
        [error] = malformed.json()["errors"]
        assert error["field"].startswith("body") and error["message"].startswith("malformed JSON")
        assert survey_api.count(tables.responses) == 0

    def test_json_with_a_charset_is_json(self, survey_api: Any, shop: Any) -> None:
        _, headers = shop
        token = survey_api.invite(headers)["token"]
        body = json.dumps({"token": token, "score": 10, "comment": "美味しい"}, ensure_ascii=False)
        first = survey_api.client.post(
            "/v1/responses",
            content=body.encode(),
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        assert first.status_code == 201, first.text
        assert first.json()["comment"] == "美味しい"
        again = survey_api.answer(token, 10)
        assert again.status_code == 200
        assert again.json() == {**first.json(), "updated_at": again.json()["updated_at"]}


class TestTheLinkForApps:
    def test_an_app_reads_the_survey_of_a_link_and_the_answer_so_far(
        self, survey_api: Any, shop: Any
    ) -> None:
        _, headers = shop
        token = survey_api.invite(headers, survey="ces", locale="en")["token"]
        form = survey_api.client.get(f"/v1/invitations/{token}")
        assert form.status_code == 200, form.text
        body = form.json()
        assert (body["state"], body["kind"], body["locale"], body["answer"]) == ("open", "ces", "en", None)
        assert body["question"] == "How much effort did it take to get what you needed from Kissa Tokyo?"
        assert body["scale"] == {
            "low": 1,
            "high": 7,
            "low_label": "Very easy",
            "high_label": "Very difficult",
        }
        survey_api.answer(token, 2, "easy")
        answered = survey_api.client.get(f"/v1/invitations/{token}").json()
        assert answered["state"] == "editable" and answered["answer"]["score"] == 2
        assert survey_api.client.get("/v1/invitations/forged-token").status_code == 404
        survey_api.clock.advance(timedelta(days=2))
        assert survey_api.client.get(f"/v1/invitations/{token}").json()["state"] == "closed"
