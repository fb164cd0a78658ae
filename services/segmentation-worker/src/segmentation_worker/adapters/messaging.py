"""The inbox and outbox with PostgreSQL array statements, for a consumer that applies whole polls.

The kit's Inbox and OutboxWriter send one row per statement through executemany; a poll of 500
events then costs 500 inbox inserts plus one lookup whose `IN` list has 500 bound parameters to
render. Here a poll costs one statement each: the rows travel as a few arrays and `unnest` turns
them back into rows. The arrays go in binary (`%b`): psycopg escapes each item of a text array
with a regular expression in Python, which costs several times more. Other databases (SQLite in
embedded mode) keep the kit's statements.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from retention_shared.messaging.outbox import Inbox, OutboxWriter


def _cursor(session: Session) -> Any:
    raw = session.connection().connection.driver_connection
    assert raw is not None
    return raw.cursor()


class ArrayInbox(Inbox):
    """The kit's inbox; on PostgreSQL a poll's lookups and inserts are one statement each."""

    def seen_many(self, group: str, identities: list[tuple[str, str]]) -> set[tuple[str, str]]:
        if not identities:
            return set()
        wanted = set(identities)
        with _cursor(self._session) as cursor:
            # `= ANY(array)` is one parameter however long the poll, and uses ix_inbox_lookup.
            cursor.execute(
                f"SELECT shop_id, event_id FROM {self._table.name}"
                " WHERE consumer_group = %s AND event_id = ANY(%b::text[])",
                (group, sorted({event_id for _, event_id in identities})),
            )
            return {pair for pair in cursor.fetchall() if pair in wanted}

    def record_many(self, group: str, identities: list[tuple[str, str]]) -> None:
        if not identities:
            return
        with _cursor(self._session) as cursor:
            # A plain INSERT, as the kit's: an identity recorded meanwhile by another consumer of
            # the group still fails the batch instead of being applied twice.
            cursor.execute(
                f"INSERT INTO {self._table.name} (consumer_group, shop_id, event_id, processed_at)"
                " SELECT %s, shop_id, event_id, %s"
                " FROM unnest(%b::text[], %b::text[]) AS i(shop_id, event_id)",
                (
                    group,
                    self._clock.now(),
                    [shop_id for shop_id, _ in identities],
                    [event_id for _, event_id in identities],
                ),
            )


class ArrayOutboxWriter(OutboxWriter):
    """The kit's outbox writer; on PostgreSQL a unit of work's events are one INSERT."""

    def flush(self) -> None:
        if not self._pending:
            return
        rows = self._pending
        names = ("event_id", "topic", "key", "payload", "created_at")
        types = ("text", "text", "text", "text", "timestamptz")
        with _cursor(self._session) as cursor:
            # The relay publishes in id order, and ids are drawn in the order rows are inserted:
            # ORDER BY the position keeps each customer's events in the order they were added.
            cursor.execute(
                f"INSERT INTO {self._tables.outbox.name} ({', '.join(names)})"
                f" SELECT {', '.join(names)} FROM unnest({', '.join(f'%b::{t}[]' for t in types)})"
                f" WITH ORDINALITY AS o({', '.join(names)}, position) ORDER BY position",
                [[row[name] for row in rows] for name in names],
            )
        self._pending = []
