"""The outbox and inbox on PostgreSQL, where they write a whole batch in one statement (COPY, arrays)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from psycopg.errors import UniqueViolation
from sqlalchemy import Engine, select

from retention_shared.testing.kit_schema import messaging
from retention_shared.uow import SqlAlchemyUnitOfWork

pytestmark = pytest.mark.integration

AWKWARD = 'tab\t, newline\n, return\r, backslash \\, quote " and 日本語'


def outbox_rows(engine: Engine) -> list[tuple[str, str, str]]:
    with engine.connect() as connection:
        table = messaging.outbox
        return [
            (row.event_id, row.key, row.payload)
            for row in connection.execute(
                select(table.c.event_id, table.c.key, table.c.payload).order_by(table.c.id)
            )
        ]


def test_a_batch_of_events_is_stored_intact_and_in_the_order_it_was_added(
    pg_uow: Callable[[], SqlAlchemyUnitOfWork], pg_engine: Engine
) -> None:
    with pg_uow() as uow:
        for number in range(300):
            uow.publish(
                "login_recorded",
                shop_id="shop-1",
                customer_id=f"c{number % 7}",
                data={"device": AWKWARD},
                event_id=f"e{number:04d}",
            )
        uow.outbox.add_serialized(
            event_id=AWKWARD, topic="retention.test.v1", key=AWKWARD, envelope=json.dumps({"x": AWKWARD})
        )
        uow.commit()

    rows = outbox_rows(pg_engine)
    assert [event_id for event_id, _, _ in rows] == [f"e{n:04d}" for n in range(300)] + [AWKWARD]
    assert rows[5][1] == "shop-1:c5"
    assert json.loads(rows[5][2])["data"]["device"] == AWKWARD
    assert rows[-1] == (AWKWARD, AWKWARD, json.dumps({"x": AWKWARD}))


def test_events_of_a_rolled_back_unit_of_work_are_not_stored(
    pg_uow: Callable[[], SqlAlchemyUnitOfWork], pg_engine: Engine
) -> None:
    with pg_uow() as uow:
        uow.publish("login_recorded", shop_id="s", customer_id="c", data={}, event_id="gone")
    assert outbox_rows(pg_engine) == []


def test_the_inbox_answers_which_identities_of_a_batch_it_has_seen(
    pg_uow: Callable[[], SqlAlchemyUnitOfWork],
) -> None:
    recorded = [("shop-a", f"e{n}") for n in range(0, 600, 2)] + [("shop-a", AWKWARD)]
    with pg_uow() as uow:
        uow.inbox.record_many("group", recorded)
        uow.commit()

    asked = [("shop-a", f"e{n}") for n in range(600)] + [("shop-b", "e0"), ("shop-a", AWKWARD)]
    with pg_uow() as uow:
        seen = uow.inbox.seen_many("group", asked)
        # The same event id under another shop, or for another group, is not a repeat.
        assert seen == set(recorded)
        assert uow.inbox.seen_many("other-group", asked) == set()


def test_recording_an_identity_twice_fails_the_transaction_instead_of_applying_it_twice(
    pg_uow: Callable[[], SqlAlchemyUnitOfWork],
) -> None:
    with pg_uow() as uow:
        uow.inbox.record_many("group", [("s", "e1")])
        uow.commit()
    with pg_uow() as uow, pytest.raises(UniqueViolation):
        uow.inbox.record_many("group", [("s", "e2"), ("s", "e1")])
    with pg_uow() as uow:
        assert uow.inbox.seen_many("group", [("s", "e1"), ("s", "e2")]) == {("s", "e1")}
