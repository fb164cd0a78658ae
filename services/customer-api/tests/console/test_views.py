"""The console's view logic without a server: KPI cards, the timeline, forms, charts, languages."""

from __future__ import annotations

from customer_api.entrypoints.console import charts, views
from customer_api.entrypoints.console.gateway import Answer, Gateway
from customer_api.entrypoints.console.i18n import MESSAGES, negotiate, translator

t = translator("en")


def ok(data: object) -> Answer:
    return Answer(status=200, data=data)


MISSING = Answer(status=404, problem={"detail": "Not Found"}, unavailable=True)


class TestKpiCards:
    def test_each_kpi_is_compared_with_the_previous_period_and_its_target(self) -> None:
        current = ok({"active_customers": 120, "churn_rate": 0.08, "retention_rate": 0.92, "cohorts": []})
        previous = ok({"active_customers": 100, "churn_rate": 0.04, "retention_rate": 0.96})
        surveys = {
            "nps": (ok({"summary": {"nps": 55.0}}), ok({"summary": {"nps": 40.0}})),
            "ces": (ok({"summary": {"mean": 2.5}}), ok({"summary": {"mean": 2.1}})),
        }

        cards = {card.spec.key: card for card in views.kpi_cards(current, previous, surveys)}

        assert cards["active_customers"].change == 20
        assert cards["active_customers"].improved is True
        assert cards["active_customers"].on_target is None  # the seeds set no target
        assert cards["churn_rate"].on_target is False  # above 5% a month
        assert cards["churn_rate"].improved is False  # churn went up
        assert views.format_change(cards["churn_rate"]) == "+4.0 pt"
        assert cards["nps"].on_target is True  # >= 50
        assert cards["ces"].on_target is False  # > 2.0 is too much effort
        assert cards["csat"].unavailable  # no CSAT survey answered
        assert cards["returning_revenue"].value is None

    def test_a_failing_kpi_api_marks_every_card_unavailable(self) -> None:
        cards = views.kpi_cards(MISSING, MISSING)

        assert all(card.unavailable and card.value is None for card in cards)

    def test_the_default_survey_of_a_kind_is_the_one_reported(self) -> None:
        surveys = [
            {"survey_id": "s1", "kind": "nps", "default_for": None, "archived": False},
            {"survey_id": "s2", "kind": "nps", "default_for": "nps", "archived": False},
            {"survey_id": "s3", "kind": "csat", "default_for": "csat", "archived": True},
        ]

        assert views.survey_per_kind(surveys) == {"nps": "s2"}


class TestTimeline:
    def test_activity_and_followups_merge_newest_first_with_skip_reasons(self) -> None:
        activity = ok(
            {
                "entries": [
                    {
                        "kind": "purchase_made",
                        "at": "2026-11-20T10:00:00+00:00",
                        "id": "e1",
                        "data": {"order_id": "O-1", "amount": "4800", "currency": "JPY"},
                    },
                    {"kind": "followup_sent", "at": "2026-11-20T10:01:00+00:00", "id": "f0", "data": {}},
                ]
            }
        )
        followups = ok(
            {
                "followups": [
                    {
                        "id": "stp_1",
                        "playbook": "post_purchase",
                        "step": "thank_you",
                        "status": "sent",
                        "channel": "email",
                        "due_at": "2026-11-20T10:00:00+00:00",
                        "sent_at": "2026-11-20T10:01:00+00:00",
                        "reason": None,
                    },
                    {
                        "id": "stp_2",
                        "playbook": "post_purchase",
                        "step": "tips",
                        "status": "skipped",
                        "channel": None,
                        "due_at": "2026-11-23T10:00:00+00:00",
                        "sent_at": None,
                        "reason": "no consent for any channel",
                    },
                    {
                        "id": "stp_3",
                        "playbook": "post_purchase",
                        "step": "check_in",
                        "status": "scheduled",
                        "channel": None,
                        "due_at": "2026-12-20T10:00:00+00:00",
                        "sent_at": None,
                        "reason": None,
                    },
                ]
            }
        )

        entries = views.timeline(activity, followups)

        assert [e.kind for e in entries] == ["followup", "followup", "followup", "purchase_made"]
        assert entries[1].reason == "no consent for any channel"
        assert [e.cancellable for e in entries] == [True, False, False, False]
        assert "O-1" in entries[-1].summary and "4800 JPY" in entries[-1].summary

    def test_without_the_scheduler_the_activity_history_still_shows_followups_sent(self) -> None:
        activity = ok(
            {
                "entries": [
                    {
                        "kind": "followup_sent",
                        "at": "2026-11-20T10:01:00+00:00",
                        "id": "f0",
                        "data": {"step": "thank_you"},
                    }
                ]
            }
        )

        entries = views.timeline(activity, MISSING)

        assert [e.kind for e in entries] == ["followup_sent"]


class TestForms:
    def test_loyalty_form_names_each_bad_field(self) -> None:
        document, errors = views.loyalty_document(
            {
                "points_per_unit": "x",
                "unit_amount": "",
                "points_expire_after_days": "365",
                "tier_window_days": "365",
                "tiers": "bronze 0",
            },
            t,
        )

        assert set(errors) == {"points_per_unit", "unit_amount", "tiers"}
        assert document["points_expire_after_days"] == 365

    def test_yaml_errors_name_the_line(self) -> None:
        _, errors = views.yaml_document("key: a\nsteps: [\n")

        assert errors["document"].startswith("line ")

    def test_errors_are_found_under_a_field(self) -> None:
        errors = {"body.tiers.1.multiplier": "must be > 0"}

        assert views.error_for(errors, "tiers") is None
        assert views.error_for(errors, "body.tiers") == "body.tiers.1.multiplier: must be > 0"


class TestCharts:
    def test_labels_are_escaped_inside_the_svg(self) -> None:
        svg = charts.bar_chart([("<script>", 3.0)], title="a & b")

        assert "<script>" not in svg
        assert "&lt;script&gt;" in svg
        assert 'aria-label="a &amp; b"' in svg

    def test_a_line_chart_draws_its_target(self) -> None:
        svg = charts.line_chart([("NPS", [("11-01", 40.0), ("11-08", 55.0)])], title="NPS", target=50.0)

        assert svg.count("<polyline") == 1
        assert 'stroke-dasharray="6 4"' in svg

    def test_heat_map_cells_carry_their_values(self) -> None:
        svg = charts.heat_map([("2026-09", [1.0, 0.25, None])], ["M0", "M1", "M2"], title="cohorts")

        assert svg.count("<rect") == 2
        assert ">25</text>" in svg


class TestLanguages:
    def test_accept_language_picks_the_best_supported_locale(self) -> None:
        assert negotiate("ja-JP,ja;q=0.9,en;q=0.8") == "ja"
        assert negotiate("en;q=0.5,ja;q=0.9") == "ja"
        assert negotiate("de,fr;q=0.9") == "en"
        assert negotiate(None) == "en"

    def test_every_message_has_both_languages(self) -> None:
        assert all(len(texts) == 2 and all(texts) for texts in MESSAGES.values())


class TestGateway:
    def test_an_unreachable_gateway_is_an_unavailable_answer_not_an_error(self) -> None:
        import asyncio

        from retention_shared.testing.smtp import free_port

        gateway = Gateway(app=None, base_url=f"http://127.0.0.1:{free_port()}", operator_token="t")

        async def call() -> Answer:
            try:
                return await gateway.call("GET", "/v1/kpis", shop_id="shop_a")
            finally:
                await gateway.aclose()

        answer = asyncio.run(call())

        assert answer.unavailable and not answer.ok and not answer.not_found

    def test_a_missing_route_differs_from_a_missing_record(self) -> None:
        import httpx

        from customer_api.entrypoints.console.gateway import _answer

        def problem(detail: str) -> httpx.Response:
            return httpx.Response(404, json={"title": "Not Found", "status": 404, "detail": detail})

        assert _answer(problem("Not Found")).unavailable
        assert _answer(problem("customer not found")).not_found
        assert _answer(httpx.Response(503, text="down")).unavailable
        assert _answer(
            httpx.Response(422, json={"errors": [{"field": "body.name", "message": "too short"}]})
        ).field_errors == {"name": "too short"}


class TestSegmentMovesAndClv:
    def test_moves_are_a_grid_from_segment_left_to_segment_entered(self) -> None:
        answer = ok(
            {
                "moves": [
                    {"from_segment": "loyal", "to_segment": "at_risk", "moves": 7},
                    {"from_segment": None, "to_segment": "new_customers", "moves": 30},
                    {"from_segment": "<b>x</b>", "to_segment": "loyal", "moves": 2},
                ]
            }
        )

        chart = str(views.segment_moves_chart(answer, t))

        assert chart.startswith("<svg")
        assert "loyal / at_risk: 7" in chart and "(first segment) / new_customers: 30" in chart
        assert "<b>x</b>" not in chart and "&lt;b&gt;x&lt;/b&gt;" in chart  # names are escaped
        assert views.segment_moves_chart(ok({"moves": []}), t) is None

    def test_the_clv_histogram_labels_each_range_and_the_open_last_one(self) -> None:
        answer = ok(
            {
                "buckets": [
                    {"from": 0, "to": 1500, "customers": 40},
                    {"from": 1500, "to": None, "customers": 3},
                ]
            }
        )

        chart = str(views.clv_histogram(answer, t))

        assert "0–1,500: 40" in chart and "1,500+: 3" in chart
        assert views.clv_histogram(MISSING, t) is None
