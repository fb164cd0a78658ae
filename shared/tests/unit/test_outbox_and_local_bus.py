from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from retention_shared.clock import ManualClock
from retention_shared.messaging.local import LocalLog, LocalPublisher, LocalSubscriber
from retention_shared.messaging.outbox import OutboxRelay
from retention_shared.messaging.ports import PublishError
from retention_shared.testing.fakes import FakePublisher
from retention_shared.testing.kit_schema import messaging


def publish_login_dropped(uow_factory: Any, *, commit: bool, customer: str = "c1") -> None:
    with uow_factory() as uow:
        uow.publish(
            "login_dropped",
            shop_id="shop_1",
            customer_id=customer,
            data={"recent_rate_per_week": 0.5, "baseline_rate_per_week": 3},
        )
        if commit:
            uow.commit()


def relay(engine: Engine, publisher: Any, clock: ManualClock, namespace: str = "") -> OutboxRelay:
    return OutboxRelay(
        service="test", engine=engine, tables=messaging, publisher=publisher, clock=clock, namespace=namespace
    )


class TestTransactionalOutbox:
    def test_a_rolled_back_transaction_publishes_nothing(
        self, uow_factory: Any, sqlite_engine: Engine, manual_clock: ManualClock
    ) -> None:
        publish_login_dropped(uow_factory, commit=False)
        publisher = FakePublisher()
        assert relay(sqlite_engine, publisher, manual_clock).relay_once() == 0
        assert publisher.sent == []

    def test_committed_events_are_published_in_order_with_their_key(
        self, uow_factory: Any, sqlite_engine: Engine, manual_clock: ManualClock
    ) -> None:
        for customer in ("c1", "c2", "c3"):
            publish_login_dropped(uow_factory, commit=True, customer=customer)
        publisher = FakePublisher()
        assert relay(sqlite_engine, publisher, manual_clock, namespace="staging").relay_once() == 3
        assert [(topic, key) for topic, key, _, _ in publisher.sent] == [
            ("staging.retention.activity.v1", "shop_1:c1"),
            ("staging.retention.activity.v1", "shop_1:c2"),
            ("staging.retention.activity.v1", "shop_1:c3"),
        ]
        assert relay(sqlite_engine, publisher, manual_clock).relay_once() == 0

    def test_rows_stay_unpublished_until_the_broker_acknowledges(
        self, uow_factory: Any, sqlite_engine: Engine, manual_clock: ManualClock
    ) -> None:
        publish_login_dropped(uow_factory, commit=True)
        publisher = FakePublisher(fail_flushes=1)
        outbox_relay = relay(sqlite_engine, publisher, manual_clock)
        with pytest.raises(PublishError):
            outbox_relay.relay_once()
        assert outbox_relay.backlog() == 1
        assert outbox_relay.relay_once() == 1
        assert outbox_relay.backlog() == 0
        assert len(publisher.sent) == 1

    def test_published_rows_are_purged_after_the_retention_period(
        self, uow_factory: Any, sqlite_engine: Engine, manual_clock: ManualClock
    ) -> None:
        from datetime import timedelta

        publish_login_dropped(uow_factory, commit=True)
        outbox_relay = relay(sqlite_engine, FakePublisher(), manual_clock)
        outbox_relay.relay_once()
        assert outbox_relay.purge_published(timedelta(days=7)) == 0
        manual_clock.advance(timedelta(days=8))
        assert outbox_relay.purge_published(timedelta(days=7)) == 1
        with sqlite_engine.connect() as connection:
            assert connection.execute(select(func.count()).select_from(messaging.outbox)).scalar_one() == 0


class TestEmbeddedBus:
    def test_consumers_resume_from_their_committed_offset_after_a_restart(self, tmp_path: Path) -> None:
        log = LocalLog(tmp_path / "bus.db")
        publisher = LocalPublisher(log)
        for index in range(5):
            publisher.send("t", f"k{index}", f"v{index}".encode(), [("h", b"1")])
        publisher.flush()

        first = LocalSubscriber(log, group_id="g", topics=["t"])
        batch = first.poll(10, 3)
        assert [r.value for r in batch] == [b"v0", b"v1", b"v2"]
        assert batch[0].header("h") == "1"
        first.commit(batch[:2])  # the third was read but not committed: it must come again

        restarted = LocalSubscriber(LocalLog(tmp_path / "bus.db"), group_id="g", topics=["t"])
        assert [r.value for r in restarted.poll(10, 10)] == [b"v2", b"v3", b"v4"]

    def test_groups_are_independent_and_rewind_redelivers(self, tmp_path: Path) -> None:
        log = LocalLog(tmp_path / "bus.db")
        publisher = LocalPublisher(log)
        publisher.send("t", "k", b"only")
        publisher.flush()
        a = LocalSubscriber(log, group_id="a", topics=["t"])
        b = LocalSubscriber(log, group_id="b", topics=["t"])
        records = a.poll(10, 10)
        assert len(records) == 1 and len(b.poll(10, 10)) == 1
        assert a.poll(10, 10) == []
        a.rewind(records)
        assert a.poll(10, 10) == records
        assert a.lag() == 0

    def test_nothing_is_visible_before_flush(self, tmp_path: Path) -> None:
        log = LocalLog(tmp_path / "bus.db")
        publisher = LocalPublisher(log)
        publisher.send("t", "k", b"pending")
        assert LocalSubscriber(log, group_id="g", topics=["t"]).poll(10, 10) == []


class TestHousekeeping:
    def test_old_published_outbox_rows_and_old_inbox_entries_are_purged_and_nothing_else(
        self, uow_factory: Any, sqlite_engine: Engine, manual_clock: ManualClock
    ) -> None:
        from datetime import timedelta

        from retention_shared.runner import housekeeping
        from retention_shared.runtime import ServiceRuntime
        from retention_shared.web import ServiceApi

        runtime = ServiceRuntime(
            name="test",
            engine=sqlite_engine,
            tables=messaging,
            api=ServiceApi("test", []),
            uow_factory=uow_factory,
        )
        outbox_relay = relay(sqlite_engine, FakePublisher(), manual_clock)
        publish_login_dropped(uow_factory, commit=True)
        outbox_relay.relay_once()
        with uow_factory() as uow:
            uow.inbox.record("group", "shop_1", "old-event")
            uow.commit()

        manual_clock.advance(timedelta(days=8))
        publish_login_dropped(uow_factory, commit=True)  # unpublished: must survive any age
        with uow_factory() as uow:
            uow.inbox.record("group", "shop_1", "recent-event")
            uow.commit()
        assert housekeeping(runtime, outbox_relay) == (1, 0)  # the week-old published row goes

        manual_clock.advance(timedelta(days=25))  # old-event is now 33 days old, recent-event 25
        assert housekeeping(runtime, outbox_relay) == (0, 1)
        with uow_factory() as uow:
            assert uow.inbox.seen_many("group", [("shop_1", "old-event"), ("shop_1", "recent-event")]) == {
                ("shop_1", "recent-event")
            }
        assert outbox_relay.backlog() == 1
