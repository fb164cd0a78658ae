from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from segmentation_worker.adapters import tables
from segmentation_worker.service_layer.erasure import customer_erased

# The `service` fixture (tests/conftest.py) drives the service's API, handlers and recompute.
Service = Any
PROBLEM_JSON = "application/problem+json"

SHOP = "shop_a"


class TestCustomerScores:
    def test_state_scores_and_segment_of_a_new_customer(self, service: Service) -> None:
        headers = service.register_shop(SHOP)
        now = service.clock.now()
        service.apply(
            service.purchase(SHOP, "cust-1", "o-1", "4800"),
            service.purchase(SHOP, "cust-1", "o-2", "200", now + timedelta(hours=1)),
            service.event(
                "refund_issued", SHOP, "cust-1", {"order_id": "o-2", "amount": "500", "currency": "JPY"}
            ),
            service.event("login_recorded", SHOP, "cust-1", {}),
            service.event("ticket_resolved", SHOP, "cust-1", {"ticket_id": "t-1"}),  # before its opening
            service.event("ticket_opened", SHOP, "cust-1", {"ticket_id": "t-1"}),
            service.event("ticket_opened", SHOP, "cust-1", {"ticket_id": "t-2"}),
            service.event(
                "survey_answered",
                SHOP,
                "cust-1",
                {"survey_id": "s", "response_id": "r", "kind": "nps", "score": 9, "detractor": False},
            ),
        )

        response = service.client.get("/v1/customers/cust-1/scores", headers=headers)

        assert response.status_code == 200, response.text
        scores = response.json()
        assert scores["purchase_count"] == 2
        assert scores["purchase_days"] == 1  # same-day purchases count once
        assert scores["net_spend"] == "4800.0000"  # the oversized refund is capped at its order
        assert scores["segment"] == "new"
        assert scores["rfm"] == {"r": 5, "f": 1, "m": 3}
        assert scores["open_tickets"] == 1
        assert scores["last_nps"]["score"] == 9
        assert scores["logins"]["count"] == 1 and scores["logins"]["recent_logins"] == 1
        assert scores["churn_risk"]["band"] == "low"
        assert scores["predictions"]["p_alive"] is None  # no model fit yet
        assert [(h["from"], h["to"]) for h in scores["history"]] == [(None, "new")]

    def test_another_shops_customer_is_not_found(self, service: Service) -> None:
        service.register_shop(SHOP)
        other = service.register_shop("shop_b")
        service.apply(service.purchase(SHOP, "cust-1", "o-1", "100"))

        response = service.client.get("/v1/customers/cust-1/scores", headers=other)

        assert response.status_code == 404
        assert response.headers["content-type"].startswith(PROBLEM_JSON)


class TestRecompute:
    def test_on_demand_recompute_refits_scores_everyone_and_versions_the_fits(self, service: Service) -> None:
        headers = service.register_shop(SHOP)
        service.apply(*service.history(SHOP, 80))
        assert service.client.get("/v1/models", headers=headers).json() == {
            "bgnbd": None,
            "gamma_gamma": None,
        }

        accepted = service.client.post("/v1/segmentation/recompute", headers=headers)
        assert accepted.status_code == 202
        location = accepted.headers["Location"]
        assert accepted.json()["status"] == "queued"
        service.recompute_due()

        run = service.client.get(location, headers=headers).json()
        assert run["status"] == "succeeded", run
        assert run["summary"]["customers"] == 80, run
        assert "error" not in run["summary"]["fits"]["bgnbd"], run["summary"]["fits"]
        fits = service.client.get("/v1/models", headers=headers).json()
        assert fits["bgnbd"]["version"] == 1 and fits["gamma_gamma"]["version"] == 1
        assert set(fits["bgnbd"]["parameters"]) == {"r", "alpha", "a", "b"}
        assert fits["bgnbd"]["diagnostics"]["converged"] is True
        scores = service.client.get("/v1/customers/c001/scores", headers=headers).json()
        assert 0 < scores["predictions"]["p_alive"] <= 1
        assert scores["predictions"]["clv"] > 0

        service.client.post("/v1/segmentation/recompute", headers=headers)
        service.recompute_due()
        assert service.client.get("/v1/models", headers=headers).json()["bgnbd"]["version"] == 2

    def test_time_moves_a_customer_to_another_segment_and_worse_churn_risk(self, service: Service) -> None:
        service.register_shop(SHOP, timezone="Asia/Tokyo")
        service.apply(service.purchase(SHOP, "cust-1", "o-1", "100"))
        assert [e["data"]["to"] for e in service.outbox("segment_changed")] == ["new"]

        service.clock.advance(timedelta(days=200))
        service.recompute_due()

        changes = service.outbox("segment_changed")
        assert [(e["data"].get("from"), e["data"]["to"]) for e in changes] == [(None, "new"), ("new", "lost")]
        risk = service.outbox("churn_risk_changed")
        assert len(risk) == 1 and risk[0]["data"]["to"] == "medium"  # 200 days against a 90-day rhythm

        service.recompute_due()  # not due again the same day: nothing new
        assert len(service.outbox("segment_changed")) == 2

    def test_the_daily_recompute_runs_at_the_shops_local_hour(self, service: Service) -> None:
        service.register_shop(SHOP, timezone="Asia/Tokyo")  # 03:00 in Tokyo is 18:00 UTC
        service.clock.set(datetime(2026, 3, 1, 17, 0, tzinfo=UTC))
        assert len(service.recompute_due()) == 1  # never recomputed: catch up at once
        service.clock.set(datetime(2026, 3, 1, 17, 59, tzinfo=UTC))
        assert service.recompute_due() == []
        service.clock.set(datetime(2026, 3, 1, 18, 0, tzinfo=UTC))
        assert len(service.recompute_due()) == 1
        service.clock.set(datetime(2026, 3, 2, 17, 0, tzinfo=UTC))
        assert service.recompute_due() == []


class TestLoginDrop:
    def test_one_event_per_drop_episode_and_rearmed_on_recovery(self, service: Service) -> None:
        service.register_shop(SHOP)
        start = service.clock.now()

        def log_in_daily(days: int) -> None:
            for _ in range(days):
                service.apply(service.event("login_recorded", SHOP, "cust-1", {}))
                service.clock.advance(timedelta(days=1))

        log_in_daily(56)
        service.recompute_due()
        assert service.outbox("login_dropped") == []
        service.clock.advance(timedelta(days=14))  # silence
        service.recompute_due()
        drops = service.outbox("login_dropped")
        assert len(drops) == 1
        assert drops[0]["data"]["recent_rate_per_week"] == 0
        assert drops[0]["data"]["baseline_rate_per_week"] == pytest.approx(7.0, rel=0.2)

        service.clock.advance(timedelta(days=1))
        service.recompute_due()
        assert len(service.outbox("login_dropped")) == 1  # same episode

        log_in_daily(14)  # the rate recovers
        service.recompute_due()
        service.clock.advance(timedelta(days=15))
        service.recompute_due()
        assert len(service.outbox("login_dropped")) == 2
        assert service.clock.now() > start


class TestSegmentsApi:
    def test_segment_summary_and_members_paged_by_clv(self, service: Service) -> None:
        headers = service.register_shop(SHOP)
        service.apply(*service.history(SHOP, 60))
        service.client.post("/v1/segmentation/recompute", headers=headers)
        service.recompute_due()

        summary = service.client.get("/v1/segments", headers=headers).json()
        assert summary["total_customers"] == 60
        assert summary["scheme"] == "standard"
        assert sum(s["customers"] for s in summary["segments"]) == 60
        assert sum(s["revenue_share"] for s in summary["segments"]) == pytest.approx(1.0)
        biggest = max(summary["segments"], key=lambda s: s["customers"])

        seen: list[float] = []
        ids: list[str] = []
        cursor = None
        while True:
            params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            page = service.client.get(
                f"/v1/segments/{biggest['name']}/customers", params=params, headers=headers
            )
            assert page.status_code == 200, page.text
            body = page.json()
            seen += [item["clv"] for item in body["items"]]
            ids += [item["customer_id"] for item in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert len(ids) == len(set(ids)) == biggest["customers"]
        assert seen == sorted(seen, reverse=True)

        by_risk = service.client.get(
            f"/v1/segments/{biggest['name']}/customers", params={"sort": "churn_risk"}, headers=headers
        ).json()
        risks = [item["churn_score"] for item in by_risk["items"]]
        assert risks == sorted(risks, reverse=True)

    def test_unknown_segment_and_bad_cursor(self, service: Service) -> None:
        headers = service.register_shop(SHOP)
        assert service.client.get("/v1/segments/nobody/customers", headers=headers).status_code == 404
        bad = service.client.get("/v1/segments/champions/customers", params={"cursor": "zz"}, headers=headers)
        assert bad.status_code == 400
        assert bad.json()["errors"][0]["field"] == "cursor"


class TestCustomerScoredEvents:
    def test_a_first_clv_is_announced_and_a_steady_one_is_not(self, service: Service) -> None:
        headers = service.register_shop(SHOP)
        service.apply(*service.history(SHOP, 80))
        service.client.post("/v1/segmentation/recompute", headers=headers)
        service.recompute_due()
        state = tables.customer_state.c
        with service.engine.connect() as connection:
            clvs = dict(
                connection.execute(select(state.customer_id, state.clv).where(state.clv.is_not(None))).all()
            )
        first = service.outbox("customer_scored")

        assert len(clvs) > 40  # the fits succeeded for this shop
        assert {event["customer_id"]: event["data"]["clv"] for event in first} == pytest.approx(clvs)
        assert {event["data"]["horizon_months"] for event in first} == {12}

        service.clock.advance(timedelta(hours=1))  # the same data: every CLV within 10%
        service.client.post("/v1/segmentation/recompute", headers=headers)
        service.recompute_due()
        assert len(service.outbox("customer_scored")) == len(first)

    def test_a_new_purchase_that_moves_the_clv_is_announced(self, service: Service) -> None:
        headers = service.register_shop(SHOP)
        service.apply(*service.history(SHOP, 80))
        service.client.post("/v1/segmentation/recompute", headers=headers)
        service.recompute_due()
        before = len(service.outbox("customer_scored"))

        # A big repeat order moves this customer's expected spend by far more than 10%.
        service.apply(*(service.purchase(SHOP, "c000", f"big-{n}", "90000") for n in range(3)))

        after = service.outbox("customer_scored")[before:]
        assert [event["customer_id"] for event in after] == ["c000"]


class TestSegmentMovesAndClv:
    def test_moves_between_segments_are_counted_per_pair_in_the_period(self, service: Service) -> None:
        headers = service.register_shop(SHOP)
        service.apply(*service.history(SHOP, 40))
        service.clock.advance(timedelta(days=200))
        service.client.post("/v1/segmentation/recompute", headers=headers)
        service.recompute_due()
        history = tables.segment_history.c
        with service.engine.connect() as connection:
            changes = connection.execute(select(history.from_segment, history.to_segment)).all()

        # The recompute's moves happened at the clock's "now"; the period's end is exclusive.
        end = (service.clock.now() + timedelta(seconds=1)).isoformat()
        everything = service.client.get(
            "/v1/segments/moves",
            params={"from": (service.clock.now() - timedelta(days=400)).isoformat(), "to": end},
            headers=headers,
        ).json()
        recent = service.client.get("/v1/segments/moves", params={"to": end}, headers=headers).json()

        assert sum(move["moves"] for move in everything["moves"]) == len(changes)
        firsts = sum(move["moves"] for move in everything["moves"] if move["from_segment"] is None)
        assert firsts == 40  # each customer's first segment
        # The last 90 days hold the recompute's moves only, each from one segment to another.
        moved = [(f, t) for f, t in changes if f is not None]
        assert sum(move["moves"] for move in recent["moves"]) == len(moved) > 0
        assert all(move["from_segment"] not in (None, move["to_segment"]) for move in recent["moves"])
        assert (
            service.client.get("/v1/segments/moves", headers=service.register_shop("shop_b")).json()["moves"]
            == []
        )

    def test_the_clv_distribution_has_equal_ranges_and_an_open_last_one(self, service: Service) -> None:
        headers = service.register_shop(SHOP)
        service.apply(*service.history(SHOP, 100))
        state = tables.customer_state.c
        with service.engine.begin() as connection:
            ids = connection.execute(select(state.customer_id).order_by(state.customer_id)).scalars().all()
            for number, customer_id in enumerate(ids[:99]):
                # 0, 10, ..., 970 and one very large value; one buyer is left unscored.
                value = 1_000_000 if number == 98 else number * 10
                connection.execute(
                    tables.customer_state.update().where(state.customer_id == customer_id).values(clv=value)
                )

        answer = service.client.get("/v1/segments/clv-distribution", params={"bins": 5}, headers=headers)

        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["customers_without_clv"] == 1
        buckets = body["buckets"]
        assert [b["customers"] for b in buckets] == [20, 19, 20, 19, 21]
        assert [b["from"] for b in buckets] == [0, 194, 388, 582, 776]  # the 99th percentile is 970
        assert buckets[-1]["to"] is None and buckets[0]["to"] == 194
        bad = service.client.get("/v1/segments/clv-distribution", params={"bins": 1}, headers=headers)
        assert bad.status_code == 422


class TestConfig:
    def test_defaults_then_a_custom_scheme_resegments_everyone(self, service: Service) -> None:
        headers = service.register_shop(SHOP)
        service.apply(service.purchase(SHOP, "cust-1", "o-1", "100"))
        config = service.client.get("/v1/segmentation/config", headers=headers).json()
        assert config["mode"] == "absolute" and config["scheme"] == "standard"
        assert config["thresholds"]["recent_days"] == 30

        custom = {
            **config,
            "scheme": "custom",
            "rules": [{"name": "vip", "label": "VIP", "m": "H"}, {"name": "fresh", "r": [5]}],
            "fallback": "everyone_else",
        }
        saved = service.client.put("/v1/segmentation/config", json=custom, headers=headers)
        assert saved.status_code == 200, saved.text
        service.recompute_due()

        scores = service.client.get("/v1/customers/cust-1/scores", headers=headers).json()
        assert scores["segment"] == "fresh"
        names = [s["name"] for s in service.client.get("/v1/segments", headers=headers).json()["segments"]]
        assert names == ["vip", "fresh", "everyone_else"]

    def test_quintile_mode_ranks_customers_against_the_shop_between_recomputes_too(
        self, service: Service
    ) -> None:
        headers = service.register_shop(SHOP)
        saved = service.client.put("/v1/segmentation/config", json={"mode": "quintile"}, headers=headers)
        assert saved.status_code == 200, saved.text
        service.apply(*(service.purchase(SHOP, f"c{i}", f"o{i}", str(100 * i)) for i in range(1, 6)))
        service.recompute_due()
        spend_scores = [
            service.client.get(f"/v1/customers/c{i}/scores", headers=headers).json()["rfm"]["m"]
            for i in range(1, 6)
        ]
        assert spend_scores == [1, 2, 3, 4, 5]

        service.apply(
            service.purchase(SHOP, "big", "o-big", "1000"), service.purchase(SHOP, "small", "o-s", "50")
        )
        assert service.client.get("/v1/customers/big/scores", headers=headers).json()["rfm"]["m"] == 5
        assert service.client.get("/v1/customers/small/scores", headers=headers).json()["rfm"]["m"] == 1

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"mode": "percentile"}, "body.mode"),
            ({"thresholds": {"recent_days": 200}}, "body.thresholds.lapsed_days"),
            ({"scheme": "custom", "fallback": "rest", "rules": [{"name": "a", "r": "X"}]}, "body.rules.0.r"),
            ({"scheme": "custom", "rules": [{"name": "a"}]}, "body.fallback"),
            ({"login_drop": {"ratio": 1.5}}, "body.login_drop.ratio"),
            ({"recompute": {"hour": 24}}, "body.recompute.hour"),
        ],
    )
    def test_invalid_settings_name_the_field(
        self, service: Service, change: dict[str, object], field: str
    ) -> None:
        headers = service.register_shop(SHOP)
        response = service.client.put("/v1/segmentation/config", json=change, headers=headers)
        assert response.status_code == 422
        assert response.headers["content-type"].startswith(PROBLEM_JSON)
        assert field in [error["field"] for error in response.json()["errors"]]

    def test_settings_need_the_admin_scope(self, service: Service) -> None:
        reader = service.register_shop(SHOP, scopes=("customers:read",))
        assert service.client.put("/v1/segmentation/config", json={}, headers=reader).status_code == 403
        assert service.client.post("/v1/segmentation/recompute", headers=reader).status_code == 403


class TestKpis:
    def test_kpis_of_a_quarter(self, service: Service) -> None:
        headers = service.register_shop(SHOP)
        at = lambda day: datetime.fromisoformat(day).replace(tzinfo=UTC)  # noqa: E731
        service.apply(
            service.purchase(SHOP, "a", "o1", "100", at("2026-01-05")),
            service.purchase(SHOP, "a", "o2", "50", at("2026-02-03")),
            service.purchase(SHOP, "b", "o3", "30", at("2026-02-10")),
            service.purchase(SHOP, "c", "o4", "20", at("2025-12-20")),
            service.purchase(SHOP, "c", "o5", "10", at("2026-03-01")),
            service.event("refund_issued", SHOP, "c", {"order_id": "o5", "amount": "10", "currency": "JPY"}),
        )
        response = service.client.get(
            "/v1/kpis", params={"from": "2026-01-01T00:00:00Z", "to": "2026-04-01T00:00:00Z"}, headers=headers
        )
        assert response.status_code == 200, response.text
        kpis = response.json()
        assert kpis["active_customers"] == 3
        assert kpis["new_customers"] == 2
        assert kpis["revenue"] == 180.0  # the refunded order nets to zero
        assert kpis["arpu"] == 60.0
        assert kpis["retention_rate"] == 1.0 and kpis["churn_rate"] == 0.0  # c bought in both quarters
        assert kpis["repeat_purchase_rate"] == pytest.approx(2 / 3)
        assert kpis["cohorts"] == [
            {"month": "2026-01", "customers": 1, "retention": [1.0, 1.0, 0.0]},
            {"month": "2026-02", "customers": 1, "retention": [1.0, 0.0]},
        ]

    def test_a_period_that_ends_before_it_starts_is_refused(self, service: Service) -> None:
        headers = service.register_shop(SHOP)
        response = service.client.get(
            "/v1/kpis", params={"from": "2026-04-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, headers=headers
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "query.to"


class TestErasure:
    def test_erasure_removes_every_trace_of_the_customer(self, service: Service) -> None:
        headers = service.register_shop(SHOP)
        service.apply(
            service.purchase(SHOP, "cust-1", "o-1", "100"),
            service.event("login_recorded", SHOP, "cust-1", {}),
            service.event("ticket_opened", SHOP, "cust-1", {"ticket_id": "t-1"}),
        )
        with service.uow_factory() as uow:
            customer_erased(service.event("customer_erased", SHOP, "cust-1", {"erasure_id": "er-1"}), uow)
            uow.commit()

        assert service.client.get("/v1/customers/cust-1/scores", headers=headers).status_code == 404
        with service.engine.connect() as connection:
            for table in (tables.orders, tables.tickets, tables.login_days, tables.segment_history):
                assert connection.execute(select(func.count()).select_from(table)).scalar_one() == 0
        assert service.outbox("erasure_completed")[0]["data"]["purged"] == {
            "behavioural_state": 1,
            "orders": 1,
        }
