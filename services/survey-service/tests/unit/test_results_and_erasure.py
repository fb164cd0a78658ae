"""Results from the tallies (NPS with its interval, CSAT, CES, response rate, trend, breakdowns), the
comment list and CSV export, and erasure that keeps the counts."""

from __future__ import annotations

import csv
import io
import math
from datetime import timedelta
from typing import Any

from survey_service.adapters import tables


def answer_many(
    survey_api: Any, headers: dict[str, str], survey: str, answers: list[tuple[Any, ...]]
) -> None:
    """(customer, score, comment, context type) per answer, a second apart; each customer invited once."""
    for customer, score, comment, context_type in answers:
        survey_api.clock.advance(timedelta(seconds=1))
        token = survey_api.invite(
            headers, customer_id=customer, survey=survey, context=(context_type, "X-1")
        )["token"]
        assert survey_api.answer(token, score, comment).status_code == 201


class TestNpsResults:
    def test_nps_with_counts_confidence_interval_rate_and_breakdowns(
        self, survey_api: Any, shop: Any
    ) -> None:
        shop_id, headers = shop
        for customer in ("p1", "p2", "p3"):
            survey_api.deliver("segment_changed", shop_id, customer, {"from": None, "to": "champions"})
        survey_api.deliver("segment_changed", shop_id, "d1", {"from": "loyal", "to": "at_risk"})
        answer_many(
            survey_api,
            headers,
            "nps",
            [
                ("p1", 10, "Love it", "order"),
                ("p2", 9, None, "order"),
                ("p3", 9, None, "ticket"),
                ("n1", 7, None, "order"),
                ("d1", 2, "Broken on arrival", "ticket"),
            ],
        )
        survey_api.invite(headers, customer_id="silent", context=("order", "O-2"))  # never answers

        results = survey_api.client.get("/v1/surveys/nps/results", headers=headers)
        assert results.status_code == 200, results.text
        body = results.json()
        summary = body["summary"]
        assert (summary["responses"], summary["invitations"]) == (5, 6)
        assert summary["response_rate"] == round(5 / 6, 4)
        assert (summary["promoters"], summary["passives"], summary["detractors"]) == (3, 1, 1)
        assert summary["nps"] == 40.0
        p, d = 0.6, 0.2
        margin = 1.959963984540054 * math.sqrt((p + d - (p - d) ** 2) / 5)
        assert summary["confidence_interval"] == {
            "level": 0.95,
            "low": round(100 * (p - d - margin), 1),
            "high": round(min(100.0, 100 * (p - d + margin)), 1),
        }
        assert (
            body["distribution"]["10"] == 1
            and body["distribution"]["0"] == 0
            and len(body["distribution"]) == 11
        )
        segments = {row["segment"]: row for row in body["by_segment"]}
        assert segments["champions"]["nps"] == 100.0 and segments["champions"]["responses"] == 3
        assert segments["at_risk"]["nps"] == -100.0
        assert segments[None]["responses"] == 1 and segments[None]["invitations"] == 2
        touchpoints = {row["touchpoint"]: row for row in body["by_touchpoint"]}
        assert touchpoints["purchase"]["responses"] == 3 and touchpoints["purchase"]["invitations"] == 4
        assert touchpoints["ticket"]["nps"] == 0.0
        [week] = body["trend"]
        assert week["responses"] == 5 and week["nps"] == 40.0

        at_risk = survey_api.client.get(
            "/v1/surveys/nps/results", params={"segment": "at_risk"}, headers=headers
        ).json()
        assert at_risk["summary"]["responses"] == 1 and at_risk["summary"]["nps"] == -100.0

    def test_trend_per_interval_and_the_day_range(self, survey_api: Any, shop: Any) -> None:
        _, headers = shop
        answer_many(survey_api, headers, "nps", [("a", 10, None, "order")])
        survey_api.clock.advance(timedelta(days=7))
        answer_many(survey_api, headers, "nps", [("b", 0, None, "order"), ("c", 0, None, "order")])
        weekly = survey_api.client.get("/v1/surveys/nps/results", headers=headers).json()["trend"]
        assert [(point["responses"], point["nps"]) for point in weekly] == [(1, 100.0), (2, -100.0)]
        daily = survey_api.client.get(
            "/v1/surveys/nps/results", params={"interval": "day"}, headers=headers
        ).json()["trend"]
        assert len(daily) == 2
        # The manual clock starts on Monday 5 January 2026, 18:00 in Tokyo.
        only_second = survey_api.client.get(
            "/v1/surveys/nps/results", params={"from": "2026-01-12", "to": "2026-01-12"}, headers=headers
        ).json()
        assert only_second["summary"]["responses"] == 2
        backwards = survey_api.client.get(
            "/v1/surveys/nps/results", params={"from": "2026-01-12", "to": "2026-01-01"}, headers=headers
        )
        assert backwards.status_code == 422 and backwards.json()["errors"][0]["field"] == "query.from"
        bad_interval = survey_api.client.get(
            "/v1/surveys/nps/results", params={"interval": "fortnight"}, headers=headers
        )
        assert (
            bad_interval.status_code == 422 and bad_interval.json()["errors"][0]["field"] == "query.interval"
        )

    def test_an_empty_survey_has_no_figures_yet(self, survey_api: Any, shop: Any) -> None:
        _, headers = shop
        body = survey_api.client.get("/v1/surveys/ces/results", headers=headers).json()
        assert body["summary"]["responses"] == 0 and body["summary"]["mean"] is None
        assert body["summary"]["response_rate"] is None and body["trend"] == []


class TestCsatAndCes:
    def test_csat_is_the_share_of_4_and_5_and_the_mean(self, survey_api: Any, shop: Any) -> None:
        _, headers = shop
        answer_many(
            survey_api, headers, "csat", [(f"c{i}", s, None, "ticket") for i, s in enumerate((5, 4, 4, 2))]
        )
        summary = survey_api.client.get("/v1/surveys/csat/results", headers=headers).json()["summary"]
        assert summary["csat"] == 75.0 and summary["mean"] == 3.75 and summary["detractors"] == 1

    def test_ces_is_the_mean_and_the_share_of_easy_answers(self, survey_api: Any, shop: Any) -> None:
        _, headers = shop
        answer_many(
            survey_api, headers, "ces", [(f"c{i}", s, None, "ticket") for i, s in enumerate((1, 2, 6))]
        )
        summary = survey_api.client.get("/v1/surveys/ces/results", headers=headers).json()["summary"]
        assert summary["mean"] == 3.0 and summary["easy_pct"] == 66.7 and summary["detractors"] == 1


class TestComments:
    def test_comments_filter_by_score_and_page_newest_first(self, survey_api: Any, shop: Any) -> None:
        _, headers = shop
        for number, score in enumerate((2, 9, 3, 10, 1)):
            survey_api.clock.advance(timedelta(minutes=1))
            answer_many(survey_api, headers, "nps", [(f"c{number}", score, f"comment {number}", "order")])
        answer_many(survey_api, headers, "nps", [("quiet", 0, None, "order")])
        detractors = survey_api.client.get(
            "/v1/surveys/nps/comments", params={"max_score": 6, "limit": 2}, headers=headers
        ).json()
        assert [c["comment"] for c in detractors["comments"]] == ["comment 4", "comment 2"]
        rest = survey_api.client.get(
            "/v1/surveys/nps/comments",
            params={"max_score": 6, "limit": 2, "cursor": detractors["next_cursor"]},
            headers=headers,
        ).json()
        assert [c["comment"] for c in rest["comments"]] == ["comment 0"] and rest["next_cursor"] is None
        tens = survey_api.client.get("/v1/surveys/nps/comments", params={"score": 10}, headers=headers).json()
        assert [(c["score"], c["customer_id"]) for c in tens["comments"]] == [(10, "c3")]
        bad = survey_api.client.get("/v1/surveys/nps/comments", params={"cursor": "zzz"}, headers=headers)
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "query.cursor"

    def test_csv_export_keeps_text_as_text(self, survey_api: Any, shop: Any) -> None:
        _, headers = shop
        answer_many(
            survey_api,
            headers,
            "nps",
            [("c1", 8, '=HYPERLINK("http://evil")', "order"), ("c2", 3, '<b>改善</b>, "quoted"', "ticket")],
        )
        export = survey_api.client.get("/v1/surveys/nps/responses.csv", headers=headers)
        assert export.status_code == 200
        assert export.headers["content-type"].startswith("text/csv")
        assert "attachment" in export.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(export.content.decode("utf-8-sig"))))
        assert [row["customer_id"] for row in rows] == ["c1", "c2"]
        assert rows[0]["comment"] == '\'=HYPERLINK("http://evil")'
        assert rows[1]["comment"] == '<b>改善</b>, "quoted"' and rows[1]["detractor"] == "true"
        only_low = survey_api.client.get(
            "/v1/surveys/nps/responses.csv", params={"max_score": 6}, headers=headers
        )
        assert len(list(csv.DictReader(io.StringIO(only_low.content.decode("utf-8-sig"))))) == 1


class TestErasure:
    def test_erasure_deletes_answers_comments_and_links_and_keeps_the_counts(
        self, survey_api: Any, shop: Any
    ) -> None:
        shop_id, headers = shop
        survey_api.deliver("customer_upserted", shop_id, "c1", {"created": True, "locale": "en"})
        token = survey_api.invite(headers, customer_id="c1")["token"]
        survey_api.answer(token, 2, "Rude staff")
        answer_many(survey_api, headers, "nps", [("c2", 10, "Great", "order")])
        before = survey_api.client.get("/v1/surveys/nps/results", headers=headers).json()

        survey_api.deliver("customer_erased", shop_id, "c1", {"erasure_id": "era-1"})

        [receipt] = survey_api.published("erasure_completed")
        assert receipt["data"] == {
            "erasure_id": "era-1",
            "service": "survey-service",
            "purged": {"comments": 1, "responses": 1, "invitations": 1, "customer_records": 1},
        }
        after = survey_api.client.get("/v1/surveys/nps/results", headers=headers).json()
        assert after["summary"] == before["summary"]
        comments = survey_api.client.get("/v1/surveys/nps/comments", headers=headers).json()["comments"]
        assert [c["customer_id"] for c in comments] == ["c2"]
        assert survey_api.answer(token, 9).status_code == 404
        assert survey_api.client.get(f"/s/{token}").status_code == 404
        assert survey_api.count(tables.invitations) == 1 and survey_api.count(tables.responses) == 1

    def test_erasing_an_unknown_customer_confirms_with_zero_counts(self, survey_api: Any, shop: Any) -> None:
        shop_id, _ = shop
        survey_api.deliver("customer_erased", shop_id, "nobody", {"erasure_id": "era-2"})
        [receipt] = survey_api.published("erasure_completed")
        assert set(receipt["data"]["purged"].values()) == {0}
