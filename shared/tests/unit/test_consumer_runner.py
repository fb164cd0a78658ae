from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import OperationalError

from retention_shared.events.envelope import Envelope
from retention_shared.messaging.consumer import ConsumerRunner, PermanentError
from retention_shared.testing.fakes import FakePublisher, FakeSubscriber, login_record, raw_record
from retention_shared.testing.kit_schema import applied, messaging
from retention_shared.uow import SqlAlchemyUnitOfWork


def record_application(event: Envelope, uow: SqlAlchemyUnitOfWork) -> None:
    uow.session.execute(insert(applied).values(event_id=event.id))
    uow.publish(
        "login_dropped",
        shop_id=event.shop_id,
        customer_id=event.customer_id,
        data={"recent_rate_per_week": 0, "baseline_rate_per_week": 1},
    )


def runner(
    subscriber: FakeSubscriber,
    dlq: FakePublisher,
    uow_factory: Callable[[], SqlAlchemyUnitOfWork],
    handler: Callable[[Envelope, Any], None] = record_application,
    **options: Any,
) -> ConsumerRunner:
    return ConsumerRunner(
        service="test",
        group="test-group",
        subscriber=subscriber,
        dead_letters=dlq,
        uow_factory=uow_factory,
        handlers={"login_recorded": handler},
        retry_delay_s=0,
        **options,
    )


def applied_ids(uow_factory: Callable[[], SqlAlchemyUnitOfWork]) -> list[str]:
    with uow_factory() as uow:
        return list(uow.session.execute(select(applied.c.event_id).order_by(applied.c.id)).scalars())


def outbox_count(uow_factory: Callable[[], SqlAlchemyUnitOfWork]) -> int:
    with uow_factory() as uow:
        return int(uow.session.execute(select(func.count()).select_from(messaging.outbox)).scalar_one())


class TestAtLeastOnceWithEffectivelyOnceEffects:
    def test_each_event_is_applied_once_and_offsets_follow_the_commit(self, uow_factory: Any) -> None:
        subscriber = FakeSubscriber([login_record(0, "a"), login_record(1, "b"), login_record(2, "a")])
        consumer = runner(subscriber, FakePublisher(), uow_factory)
        assert consumer.run_once() == 3
        assert applied_ids(uow_factory) == ["a", "b"]
        assert subscriber.committed == [0, 1, 2]
        assert outbox_count(uow_factory) == 2  # outgoing events written in the same transaction

    def test_a_redelivered_batch_changes_nothing(self, uow_factory: Any) -> None:
        records = [login_record(0, "a"), login_record(1, "b")]
        runner(FakeSubscriber(records), FakePublisher(), uow_factory).run_once()
        runner(FakeSubscriber(records), FakePublisher(), uow_factory).run_once()
        assert applied_ids(uow_factory) == ["a", "b"]
        assert outbox_count(uow_factory) == 2


class TestPoisonMessages:
    def test_a_malformed_record_goes_to_the_dead_letter_topic_and_the_batch_goes_on(
        self, uow_factory: Any
    ) -> None:
        dlq = FakePublisher()
        subscriber = FakeSubscriber(
            [login_record(0, "a"), raw_record(1, b"\xff not json"), login_record(2, "b")]
        )
        runner(subscriber, dlq, uow_factory).run_once()
        assert applied_ids(uow_factory) == ["a", "b"]
        [(topic, _key, value, headers)] = dlq.sent
        assert topic == "retention.activity.v1.dlq"
        assert value == b"\xff not json"
        assert b"not JSON" in headers["error"]
        assert headers["original_offset"] == b"1"
        assert subscriber.committed == [0, 1, 2]

    def test_a_handler_that_keeps_failing_is_dead_lettered_with_its_writes_undone(
        self, uow_factory: Any
    ) -> None:
        calls: list[str] = []

        def flaky(event: Envelope, uow: SqlAlchemyUnitOfWork) -> None:
            calls.append(event.id)
            record_application(event, uow)
            if event.id == "bad":
                raise RuntimeError("downstream exploded")

        dlq = FakePublisher()
        runner(
            FakeSubscriber([login_record(0, "bad"), login_record(1, "good")]),
            dlq,
            uow_factory,
            flaky,
            max_attempts=3,
        ).run_once()
        assert calls.count("bad") == 3
        assert applied_ids(uow_factory) == ["good"]
        assert outbox_count(uow_factory) == 1
        assert dlq.sent[0][3]["error_type"] == b"RuntimeError"

    def test_a_transient_failure_is_retried_and_then_applied_once(self, uow_factory: Any) -> None:
        failures = {"a": 2}

        def transient(event: Envelope, uow: SqlAlchemyUnitOfWork) -> None:
            record_application(event, uow)
            if failures.get(event.id, 0) > 0:
                failures[event.id] -= 1
                raise TimeoutError("slow dependency")

        dlq = FakePublisher()
        runner(FakeSubscriber([login_record(0, "a")]), dlq, uow_factory, transient).run_once()
        assert applied_ids(uow_factory) == ["a"]
        assert dlq.sent == []

    def test_a_permanent_error_is_not_retried(self, uow_factory: Any) -> None:
        calls = []

        def refuse(event: Envelope, uow: SqlAlchemyUnitOfWork) -> None:
            calls.append(event.id)
            raise PermanentError("cannot ever work")

        dlq = FakePublisher()
        runner(FakeSubscriber([login_record(0, "a")]), dlq, uow_factory, refuse).run_once()
        assert calls == ["a"]
        assert len(dlq.sent) == 1


class TestInfrastructureFailures:
    def test_a_database_outage_retries_the_batch_instead_of_dead_lettering(self, uow_factory: Any) -> None:
        outage = {"left": 2}

        def needs_db(event: Envelope, uow: SqlAlchemyUnitOfWork) -> None:
            if outage["left"]:
                outage["left"] -= 1
                raise OperationalError("SELECT 1", {}, Exception("connection refused"))
            record_application(event, uow)

        dlq = FakePublisher()
        subscriber = FakeSubscriber([login_record(0, "a")])
        runner(subscriber, dlq, uow_factory, needs_db).run_once()
        assert applied_ids(uow_factory) == ["a"]
        assert dlq.sent == []
        assert subscriber.committed == [0]

    def test_when_the_dead_letter_topic_is_unreachable_nothing_is_committed(self, uow_factory: Any) -> None:
        dlq = FakePublisher(fail_flushes=1)
        subscriber = FakeSubscriber([login_record(0, "a"), raw_record(1, b"junk")])
        runner(subscriber, dlq, uow_factory).run_once()
        # First attempt: the DLQ flush failed, so the whole batch rolled back and was retried.
        assert applied_ids(uow_factory) == ["a"]
        assert len(dlq.sent) == 1


class TestGracefulStop:
    def test_stop_lets_the_batch_in_flight_finish(self, uow_factory: Any) -> None:
        subscriber = FakeSubscriber([login_record(i, f"e{i}") for i in range(5)])
        consumer = runner(subscriber, FakePublisher(), uow_factory, batch_size=5)

        def stop_midway(event: Envelope, uow: SqlAlchemyUnitOfWork) -> None:
            record_application(event, uow)
            consumer.stop()

        consumer._handlers["login_recorded"] = stop_midway
        consumer.run()
        assert applied_ids(uow_factory) == [f"e{i}" for i in range(5)]
        assert subscriber.committed == [0, 1, 2, 3, 4]
        assert subscriber.closed


@pytest.mark.parametrize("event_id", ["same"])
def test_inbox_is_scoped_by_shop(uow_factory: Any, event_id: str) -> None:
    first = login_record(0, event_id)
    other_shop = raw_record(1, {**__import__("json").loads(first.value), "shop_id": "shop_2"})
    runner(FakeSubscriber([first, other_shop]), FakePublisher(), uow_factory).run_once()
    assert applied_ids(uow_factory) == [event_id, event_id]


class TestBatchHandlers:
    """A service may apply a whole poll at once; a failing batch falls back to one event at a time."""

    def test_a_batch_is_applied_in_one_call_without_duplicates(self, uow_factory: Any) -> None:
        calls: list[list[str]] = []

        def apply_all(events: list[Envelope], uow: SqlAlchemyUnitOfWork) -> None:
            calls.append([e.id for e in events])
            for event in events:
                record_application(event, uow)

        subscriber = FakeSubscriber([login_record(0, "a"), login_record(1, "b"), login_record(2, "a")])
        ConsumerRunner(
            service="t",
            group="g",
            subscriber=subscriber,
            dead_letters=FakePublisher(),
            uow_factory=uow_factory,
            handlers={},
            batch_handler=apply_all,
            batch_types=frozenset({"login_recorded"}),
        ).run_once()
        assert calls == [["a", "b"]]
        assert applied_ids(uow_factory) == ["a", "b"]
        # A redelivery of the same records is dropped by the inbox before the batch handler runs.
        ConsumerRunner(
            service="t",
            group="g",
            subscriber=FakeSubscriber([login_record(0, "a")]),
            dead_letters=FakePublisher(),
            uow_factory=uow_factory,
            handlers={},
            batch_handler=apply_all,
            batch_types=frozenset({"login_recorded"}),
        ).run_once()
        assert calls == [["a", "b"]]

    def test_one_poison_event_does_not_sink_the_batch(self, uow_factory: Any) -> None:
        def apply_all(events: list[Envelope], uow: SqlAlchemyUnitOfWork) -> None:
            for event in events:
                if event.id == "poison":
                    raise ValueError("cannot apply")
                record_application(event, uow)

        dlq = FakePublisher()
        records = [login_record(0, "a"), login_record(1, "poison"), login_record(2, "b")]
        ConsumerRunner(
            service="t",
            group="g",
            subscriber=FakeSubscriber(records),
            dead_letters=dlq,
            uow_factory=uow_factory,
            handlers={},
            batch_handler=apply_all,
            batch_types=frozenset({"login_recorded"}),
            retry_delay_s=0,
            max_attempts=2,
        ).run_once()
        assert applied_ids(uow_factory) == ["a", "b"]
        assert [value for _, _, value, _ in dlq.sent] == [records[1].value]
        assert outbox_count(uow_factory) == 2


class TestBatchFallback:
    """A failing batch is halved until the poison event stands alone; the rest still go in groups."""

    def test_a_poison_event_in_a_big_batch_is_dead_lettered_and_the_rest_apply_in_order(
        self, uow_factory: Any
    ) -> None:
        calls: list[list[str]] = []

        def apply_all(events: list[Envelope], uow: SqlAlchemyUnitOfWork) -> None:
            calls.append([e.id for e in events])
            for event in events:
                if event.id == "e5":
                    raise ValueError("cannot apply")
                record_application(event, uow)

        dlq = FakePublisher()
        records = [login_record(i, f"e{i}") for i in range(8)]
        subscriber = FakeSubscriber(records)
        ConsumerRunner(
            service="t",
            group="g",
            subscriber=subscriber,
            dead_letters=dlq,
            uow_factory=uow_factory,
            handlers={},
            batch_handler=apply_all,
            batch_types=frozenset({"login_recorded"}),
            retry_delay_s=0,
            max_attempts=2,
        ).run_once()
        assert applied_ids(uow_factory) == ["e0", "e1", "e2", "e3", "e4", "e6", "e7"]
        assert [value for _, _, value, _ in dlq.sent] == [records[5].value]
        assert subscriber.committed == list(range(8))
        assert ["e0", "e1", "e2", "e3"] in calls  # the clean half went in one call
        assert ["e6", "e7"] in calls
        assert calls.count(["e5"]) == 2  # alone, it had its retries before the dead-letter topic
        assert outbox_count(uow_factory) == 7


class TestFastDecoding:
    def test_records_the_fast_path_refuses_keep_the_reference_error(self, uow_factory: Any) -> None:
        dlq = FakePublisher()
        bad_data = {**json.loads(login_record(0, "x").value), "type": "purchase_made", "data": {}}
        subscriber = FakeSubscriber([raw_record(0, bad_data), raw_record(1, [1, 2]), login_record(2, "ok")])
        runner(subscriber, dlq, uow_factory).run_once()
        assert applied_ids(uow_factory) == ["ok"]
        errors = [headers["error"] for _, _, _, headers in dlq.sent]
        assert b"data.order_id" in errors[0]
        assert errors[1] == b"envelope must be a JSON object"
