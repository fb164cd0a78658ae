"""The segmentation-worker on real PostgreSQL (migrated with Alembic) and, for the consumer path, Kafka."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

import pytest
from kafka import KafkaProducer
from sqlalchemy import func, select

from retention_shared.events.topics import ACTIVITY
from retention_shared.messaging.consumer import ConsumerRunner
from retention_shared.messaging.kafka import KafkaPublisher, KafkaSubscriber
from retention_shared.messaging.ports import Record
from retention_shared.testing.fakes import FakePublisher, FakeSubscriber
from retention_shared.testing.infra import eventually
from segmentation_worker.adapters import tables
from segmentation_worker.domain.kpis import compute_kpis
from segmentation_worker.service_layer import handlers, queries
from segmentation_worker.service_layer.erasure import customer_erased
from segmentation_worker.service_layer.recompute import recompute_shop

pytestmark = pytest.mark.integration

SHOP = "shop_pg"
Service = Any  # the `pg_service` fixture of tests/conftest.py


def column(service: Service, statement: Any) -> list[Any]:
    with service.engine.connect() as connection:
        return list(connection.execute(statement).all())


class TestRecomputeOnPostgres:
    def test_a_recompute_writes_every_customer_back_and_emits_only_the_changes(
        self, pg_service: Service
    ) -> None:
        headers = pg_service.register_shop(SHOP)
        pg_service.apply(*pg_service.history(SHOP, 150))
        state = tables.customer_state.c
        before = dict(column(pg_service, select(state.customer_id, state.segment_since)))
        changes_before = len(pg_service.outbox("segment_changed"))
        assert changes_before == 150  # every customer's first segment

        pg_service.clock.advance(timedelta(days=45))
        pg_service.client.post("/v1/segmentation/recompute", headers=headers)
        pg_service.recompute_due()

        run_summary = column(pg_service, select(tables.recompute_runs.c.summary))[-1][0]
        assert run_summary["customers"] == 150
        assert "error" not in run_summary["fits"]["bgnbd"], run_summary
        rows = column(
            pg_service, select(state.customer_id, state.segment, state.p_alive, state.segment_since)
        )
        assert all(segment is not None and p_alive is not None for _, segment, p_alive, _ in rows)
        changed = pg_service.outbox("segment_changed")[changes_before:]
        moved = {event["customer_id"] for event in changed}
        assert moved  # 45 days later some customers have lapsed
        assert len(moved) == len(changed) == run_summary["segment_changes"]
        for customer_id, _, _, since in rows:
            # COPY + UPDATE moves a segment's start only for customers whose segment changed
            assert (since == pg_service.clock.now()) == (customer_id in moved)
            if customer_id not in moved:
                assert since == before[customer_id]
        history = column(pg_service, select(func.count()).select_from(tables.segment_history))[0][0]
        assert history == 150 + len(moved)
        fits = pg_service.client.get("/v1/models", headers=headers).json()
        assert fits["bgnbd"]["version"] == 1

    def test_a_shop_without_buyers_recomputes_cleanly(self, pg_service: Service) -> None:
        """Its quintile cut points are infinite, which a JSON column cannot hold: none are kept."""
        pg_service.register_shop(SHOP)
        with pg_service.uow_factory() as uow:
            summary = recompute_shop(uow, SHOP, now=pg_service.clock.now())
            uow.commit()
        assert summary["customers"] == 0
        stats = column(
            pg_service, select(tables.shop_stats.c.quintile_edges, tables.shop_stats.c.last_recompute_at)
        )
        assert stats == [(None, pg_service.clock.now())]

    def test_a_customer_the_consumer_changed_meanwhile_keeps_its_scores(self, pg_service: Service) -> None:
        """A purchase applied while a recompute computes wins over its stale view (on SQLite the
        two take turns on the write lock, so only PostgreSQL can interleave them)."""
        headers = pg_service.register_shop(SHOP)
        pg_service.apply(pg_service.purchase(SHOP, "cust-1", "o-1", "100"))
        pg_service.clock.advance(timedelta(days=200))
        started = pg_service.clock.now()

        with pg_service.uow_factory() as uow:
            read = uow.state.buyers_snapshot

            def read_then_the_consumer_applies_a_purchase(shop_id: str, now: datetime) -> dict[str, Any]:
                snapshot = read(shop_id, now)
                pg_service.clock.advance(timedelta(seconds=5))
                pg_service.apply(pg_service.purchase(SHOP, "cust-1", "o-2", "100"))  # its own transaction
                return snapshot

            uow.state.buyers_snapshot = read_then_the_consumer_applies_a_purchase
            summary = recompute_shop(uow, SHOP, now=started)
            uow.commit()

        assert summary["segment_changes"] == 0  # the stale snapshot said "lost"; the write skipped it
        scores = pg_service.client.get("/v1/customers/cust-1/scores", headers=headers).json()
        assert scores["rfm"]["r"] == 5 and scores["segment"] == "new"
        assert [e["data"]["to"] for e in pg_service.outbox("segment_changed")] == ["new"]

    def test_refunds_tickets_and_logins_in_one_batch(self, pg_service: Service) -> None:
        headers = pg_service.register_shop(SHOP)
        now = pg_service.clock.now()
        pg_service.apply(
            pg_service.event(
                "refund_issued", SHOP, "c1", {"order_id": "o1", "amount": "900", "currency": "JPY"}
            ),
            pg_service.purchase(SHOP, "c1", "o1", "500"),
            pg_service.purchase(SHOP, "c1", "o2", "300", now - timedelta(days=3)),
            pg_service.event("ticket_opened", SHOP, "c1", {"ticket_id": "t1"}),
            pg_service.event("login_recorded", SHOP, "c1", {}),
            pg_service.event("login_recorded", SHOP, "c1", {}),
        )
        scores = pg_service.client.get("/v1/customers/c1/scores", headers=headers).json()
        assert Decimal(scores["net_spend"]) == Decimal("300")
        assert scores["purchase_days"] == 2
        assert scores["open_tickets"] == 1
        assert scores["logins"]["recent_logins"] == 2


class TestConsumerPath:
    def test_activity_from_kafka_updates_state_once_per_event(
        self, pg_service: Service, kafka: str, topic_namespace: str
    ) -> None:
        topic = ACTIVITY.qualified(topic_namespace)
        producer = KafkaProducer(bootstrap_servers=kafka, acks="all")
        customers, logins_each = 50, 8
        sent = []
        for index in range(customers * logins_each):
            customer = f"c{index % customers}"
            event = pg_service.event("login_recorded", SHOP, customer, {})
            sent.append(event)
            producer.send(topic, key=f"{SHOP}:{customer}".encode(), value=event.model_dump_json().encode())
        for event in sent[:20]:  # redelivered: the inbox drops them
            producer.send(
                topic, key=f"{SHOP}:{event.customer_id}".encode(), value=event.model_dump_json().encode()
            )
        producer.flush()
        producer.close()

        runner = ConsumerRunner(
            service="segmentation-worker",
            group="segmentation-worker",
            subscriber=KafkaSubscriber(
                kafka, group_id=f"{topic_namespace}-seg", topics=[topic], client_id="it"
            ),
            dead_letters=KafkaPublisher(kafka, client_id="it-dlq"),
            uow_factory=pg_service.uow_factory,
            handlers={},
            batch_handler=handlers.apply_activity,
            batch_types=handlers.ACTIVITY_TYPES,
        )
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        state = tables.customer_state.c
        try:
            eventually(
                lambda: (
                    column(pg_service, select(func.coalesce(func.sum(state.login_count), 0)))[0][0]
                    >= customers * logins_each
                ),
                timeout_s=90,
                what="every login applied",
            )
        finally:
            runner.stop()
            thread.join(30)
        totals = column(pg_service, select(func.count(), func.sum(state.login_count)))[0]
        assert tuple(totals) == (customers, customers * logins_each)
        days = column(pg_service, select(func.sum(tables.login_days.c.logins)))[0][0]
        assert days == customers * logins_each
        assert json.loads(sent[0].model_dump_json())["type"] == "login_recorded"


def poll_of(*events: Any) -> list[Record]:
    return [
        Record(
            topic=ACTIVITY.name,
            partition=0,
            offset=offset,
            key=f"{event.shop_id}:{event.customer_id}".encode(),
            value=event.model_dump_json().encode(),
        )
        for offset, event in enumerate(events)
    ]


def apply_through_the_runner(service: Service, records: list[Record], dlq: FakePublisher) -> int:
    return ConsumerRunner(
        service="segmentation-worker",
        group="segmentation-worker",
        subscriber=FakeSubscriber(records),
        dead_letters=dlq,
        uow_factory=service.uow_factory,
        handlers={},
        batch_handler=handlers.apply_activity,
        batch_types=handlers.ACTIVITY_TYPES,
        retry_delay_s=0,
        max_attempts=2,
        batch_size=len(records),
    ).run_once()


class TestWholePollsOnPostgres:
    """The runner with the array inbox and outbox, on one poll that holds everything at once."""

    def test_one_customers_events_duplicates_and_a_redelivery_count_once(self, pg_service: Service) -> None:
        headers = pg_service.register_shop(SHOP)
        now = pg_service.clock.now()
        first = pg_service.purchase(SHOP, "c1", "o1", "500", now - timedelta(hours=2))
        events = [
            first,
            pg_service.event("login_recorded", SHOP, "c1", {}),
            pg_service.purchase(SHOP, "c1", "o2", "300", now - timedelta(hours=1)),  # same day
            first,  # the same event again inside the poll
            pg_service.event(
                "refund_issued", SHOP, "c1", {"order_id": "o1", "amount": "200", "currency": "JPY"}
            ),
            pg_service.event("login_recorded", SHOP, "c1", {}),
            pg_service.purchase(SHOP, "c2", "o3", "100"),
        ]
        dlq = FakePublisher()
        assert apply_through_the_runner(pg_service, poll_of(*events), dlq) == len(events)
        assert apply_through_the_runner(pg_service, poll_of(*events), dlq) == len(events)  # redelivered

        scores = pg_service.client.get("/v1/customers/c1/scores", headers=headers).json()
        assert Decimal(scores["net_spend"]) == Decimal("600")
        assert scores["purchase_days"] == 1
        assert scores["logins"]["recent_logins"] == 2
        state = tables.customer_state.c
        assert column(pg_service, select(state.purchase_count).where(state.customer_id == "c1")) == [(2,)]
        changes = pg_service.outbox("segment_changed")
        assert sorted(event["customer_id"] for event in changes) == ["c1", "c2"]
        assert dlq.sent == []
        inbox = tables.messaging.inbox
        assert column(pg_service, select(func.count()).select_from(inbox))[0][0] == len(events) - 1

    def test_a_poison_event_in_a_big_poll_is_dead_lettered_and_the_rest_commit(
        self, pg_service: Service
    ) -> None:
        pg_service.register_shop(SHOP)
        events = [pg_service.event("login_recorded", SHOP, f"c{index % 40}", {}) for index in range(300)]
        poison = pg_service._event(
            "purchase_made", SHOP, None, {"order_id": "o-x", "amount": "1", "currency": "JPY"}
        )
        events.insert(137, poison)  # valid as an envelope, but a purchase needs a customer
        dlq = FakePublisher()

        assert apply_through_the_runner(pg_service, poll_of(*events), dlq) == len(events)

        [(topic, _key, value, headers)] = dlq.sent
        assert topic == f"{ACTIVITY.name}.dlq"
        assert value == poison.model_dump_json().encode()
        assert headers["original_offset"] == b"137"
        state = tables.customer_state.c
        assert column(pg_service, select(func.count(), func.sum(state.login_count)))[0] == (40, 300)
        inbox = tables.messaging.inbox
        assert column(pg_service, select(func.count()).select_from(inbox))[0][0] == 300


class TestKpisOnPostgres:
    @pytest.mark.parametrize("days", [30, 91, 365])
    def test_the_database_aggregates_agree_with_the_definitions_on_raw_orders(
        self, pg_service: Service, days: int
    ) -> None:
        """`/v1/kpis` aggregates in SQL; `compute_kpis` is the definition, computed on every order."""
        headers = pg_service.register_shop(SHOP)
        events = pg_service.history(SHOP, 300, seed=11)
        refunded = events[::7]
        pg_service.apply(
            *events,
            *(
                pg_service.event(
                    "refund_issued",
                    SHOP,
                    event.customer_id,
                    {"order_id": event.data["order_id"], "amount": "50", "currency": "JPY"},
                    event.time,
                )
                for event in refunded
            ),
        )
        end = pg_service.clock.now().replace(hour=0, minute=0, second=0, microsecond=0)
        start = end - timedelta(days=days)
        orders = tables.orders.c
        rows = column(
            pg_service,
            select(
                orders.customer_id,
                func.extract("epoch", orders.purchased_at),
                orders.amount - func.least(orders.refunded, orders.amount),
            ).where(orders.shop_id == SHOP, orders.purchased_at < end),
        )
        ids, times, amounts = zip(*rows, strict=True)
        expected = compute_kpis(
            list(ids),
            [float(t) for t in times],
            [float(a) for a in amounts],
            start=start.timestamp(),
            end=end.timestamp(),
        )

        response = pg_service.client.get(
            "/v1/kpis", params={"from": start.isoformat(), "to": end.isoformat()}, headers=headers
        )

        assert response.status_code == 200, response.text
        got = response.json()
        assert expected.active_customers > 10  # the period is not empty
        for name in ("active_customers", "new_customers", "previous_period_customers"):
            assert got[name] == getattr(expected, name), name
        if days == 91:  # first purchases are 30 to 365 days old: new and returning buyers both bought
            assert 0 < expected.returning_revenue < expected.revenue
        for name in (
            "revenue",
            "returning_revenue",
            "arpu",
            "repeat_purchase_rate",
            "retention_rate",
            "churn_rate",
        ):
            assert got[name] == pytest.approx(getattr(expected, name)), name
        assert got["cohorts"] == [
            {"month": c.month, "customers": c.customers, "retention": c.retention} for c in expected.cohorts
        ]


class TestKpiSnapshotsOnPostgres:
    """The daily recompute stores the standard periods' KPIs; an answer comes from the snapshot
    only while no order of its period has been written or erased since."""

    def kpis(self, service: Service, headers: dict[str, str], days: int = 30) -> dict[str, Any]:
        end = service.clock.now().replace(hour=0, minute=0, second=0, microsecond=0)
        period = {"from": (end - timedelta(days=days)).isoformat(), "to": end.isoformat()}
        response = service.client.get("/v1/kpis", params=period, headers=headers)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def snapshot_shop(self, service: Service) -> tuple[dict[str, str], dict[str, Any], datetime]:
        headers = service.register_shop(SHOP)
        service.apply(*service.history(SHOP, 200, seed=3))
        live = self.kpis(service, headers)
        # The recompute runs later in the day than the writes, as the daily one does.
        service.clock.advance(timedelta(hours=1))
        service.client.post("/v1/segmentation/recompute", headers=headers)
        service.recompute_due()
        stored_at = service.clock.now()
        service.clock.advance(timedelta(minutes=5))
        return headers, live, stored_at

    def test_a_standard_period_is_answered_from_its_snapshot_with_the_live_figures(
        self, pg_service: Service
    ) -> None:
        headers, live, stored_at = self.snapshot_shop(pg_service)

        for days in (7, 30, 90, 365):
            answer = self.kpis(pg_service, headers, days)
            assert datetime.fromisoformat(answer["computed_at"]) == stored_at, days
        answer = self.kpis(pg_service, headers)
        assert live["active_customers"] > 10
        assert {**answer, "computed_at": None, "average_clv": None} == {
            **live,
            "computed_at": None,
            "average_clv": None,
        }
        # The average CLV as the recompute left it.
        state = tables.customer_state.c
        average = column(pg_service, select(func.avg(state.clv)).where(state.clv.is_not(None)))[0][0]
        assert answer["average_clv"] == (None if average is None else pytest.approx(float(average)))

        # Another period is aggregated now.
        end = pg_service.clock.now()
        other = pg_service.client.get(
            "/v1/kpis",
            params={"from": (end - timedelta(days=30)).isoformat(), "to": end.isoformat()},
            headers=headers,
        ).json()
        assert datetime.fromisoformat(other["computed_at"]) == pg_service.clock.now()

    def test_todays_orders_leave_the_snapshot_in_use_and_a_backdated_one_does_not(
        self, pg_service: Service
    ) -> None:
        headers, live, stored_at = self.snapshot_shop(pg_service)

        pg_service.apply(pg_service.purchase(SHOP, "c-today", "o-today", "900"))
        assert datetime.fromisoformat(self.kpis(pg_service, headers)["computed_at"]) == stored_at

        pg_service.apply(
            pg_service.purchase(SHOP, "c-late", "o-late", "900", pg_service.clock.now() - timedelta(days=3))
        )
        answer = self.kpis(pg_service, headers)
        assert datetime.fromisoformat(answer["computed_at"]) == pg_service.clock.now()
        assert answer["active_customers"] == live["active_customers"] + 1
        assert answer["revenue"] == pytest.approx(live["revenue"] + 900)

    def test_a_refund_of_an_order_in_the_period_makes_the_figures_live(self, pg_service: Service) -> None:
        headers, live, _ = self.snapshot_shop(pg_service)
        order = column(
            pg_service,
            select(tables.orders.c.customer_id, tables.orders.c.order_id, tables.orders.c.purchased_at)
            .where(tables.orders.c.purchased_at >= pg_service.clock.now() - timedelta(days=20))
            .limit(1),
        )[0]

        refund = pg_service.event(
            "refund_issued", SHOP, order[0], {"order_id": order[1], "amount": "100", "currency": "JPY"}
        )
        pg_service.apply(refund)

        answer = self.kpis(pg_service, headers)
        assert datetime.fromisoformat(answer["computed_at"]) == pg_service.clock.now()
        assert answer["revenue"] == pytest.approx(live["revenue"] - 100)

    def test_an_erasure_makes_the_figures_live(self, pg_service: Service) -> None:
        headers, live, _ = self.snapshot_shop(pg_service)
        buyer = column(
            pg_service,
            select(tables.orders.c.customer_id)
            .where(tables.orders.c.purchased_at >= pg_service.clock.now() - timedelta(days=20))
            .limit(1),
        )[0][0]

        with pg_service.uow_factory() as uow:
            customer_erased(pg_service.event("customer_erased", SHOP, buyer, {"erasure_id": "er-9"}), uow)
            uow.commit()

        answer = self.kpis(pg_service, headers)
        assert datetime.fromisoformat(answer["computed_at"]) == pg_service.clock.now()
        assert answer["active_customers"] == live["active_customers"] - 1

    def test_the_periodic_job_stores_a_new_days_periods_and_replaces_out_of_date_ones(
        self, pg_service: Service
    ) -> None:
        headers, _, stored_at = self.snapshot_shop(pg_service)
        refresh = partial(queries.refresh_due_kpi_snapshots, uow_factory=pg_service.uow_factory)
        assert refresh() == []  # every standard period is current

        pg_service.clock.advance(timedelta(days=1))
        assert datetime.fromisoformat(self.kpis(pg_service, headers)["computed_at"]) == pg_service.clock.now()
        assert refresh() == [SHOP]
        refreshed_at = pg_service.clock.now()
        pg_service.clock.advance(timedelta(minutes=1))
        assert datetime.fromisoformat(self.kpis(pg_service, headers)["computed_at"]) == refreshed_at

        pg_service.clock.advance(timedelta(minutes=30))
        pg_service.apply(
            pg_service.purchase(SHOP, "c-late", "o-late", "900", pg_service.clock.now() - timedelta(days=2))
        )
        pg_service.clock.advance(timedelta(minutes=30))
        assert refresh() == [SHOP]
        answer = self.kpis(pg_service, headers)
        assert datetime.fromisoformat(answer["computed_at"]) == pg_service.clock.now()
        pg_service.clock.advance(timedelta(minutes=1))
        assert datetime.fromisoformat(self.kpis(pg_service, headers)["computed_at"]) < pg_service.clock.now()
        assert stored_at < refreshed_at
