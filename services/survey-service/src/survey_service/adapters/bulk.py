"""Bulk INSERTs that cost one round trip and no per-value Python work on PostgreSQL.

A batch of answers writes hundreds of rows into the responses and the outbox, and a few into the
tallies. On PostgreSQL plain inserts go through COPY: psycopg formats each row in C and the server
parses no INSERT at all. (Passing the rows as text arrays to `unnest` costs more than the rest of
the answer path put together: psycopg quotes every array element in Python, character class by
character class, and an outbox payload is JSON full of quotes.) Counters that add on conflict
cannot be copied, so they travel as one array per column into `INSERT ... SELECT * FROM unnest(...)
ON CONFLICT DO UPDATE`: a statement of fixed, short text whatever the row count. Those rows are
few (one per day, touchpoint and segment) and hold no text worth quoting. Elsewhere (SQLite, the
embedded mode) the rows go through an ordinary executemany.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import Table, insert, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

_POSTGRESQL = postgresql.dialect()


@cache
def _unnest_statement(table: Table, columns: tuple[str, ...], add_on_conflict: tuple[str, ...]) -> Any:
    arrays = ", ".join(
        f"CAST(:{name} AS {table.c[name].type.compile(dialect=_POSTGRESQL)}[])" for name in columns
    )
    statement = f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({arrays})"
    keys = ", ".join(column.name for column in table.primary_key.columns)
    sums = ", ".join(f"{name} = {table.name}.{name} + EXCLUDED.{name}" for name in add_on_conflict)
    statement += f" ON CONFLICT ({keys}) DO UPDATE SET {sums}"
    return text(statement)


@cache
def _copy_statement(table: Table, columns: tuple[str, ...]) -> str:
    return f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"


def _copy_rows(session: Session, table: Table, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    # The session's own connection, so the rows are part of its transaction.
    connection = session.connection().connection.driver_connection
    with connection.cursor() as cursor, cursor.copy(_copy_statement(table, columns)) as copy:  # type: ignore[union-attr]
        for row in rows:
            copy.write_row([row[name] for name in columns])


def insert_rows(
    session: Session, table: Table, rows: list[dict[str, Any]], *, add_on_conflict: tuple[str, ...] = ()
) -> None:
    """Insert rows that all have the same keys. With `add_on_conflict`, a row whose primary key
    exists adds its values of those columns to the existing ones instead (counters)."""
    if not rows:
        return
    columns = tuple(rows[0])
    if session.get_bind().dialect.name == "postgresql":
        if not add_on_conflict:
            _copy_rows(session, table, columns, rows)
            return
        statement = _unnest_statement(table, columns, add_on_conflict)
        session.execute(statement, {name: [row[name] for row in rows] for name in columns})
        return
    if not add_on_conflict:
        session.execute(insert(table), rows)
        return
    upsert = sqlite.insert(table)
    session.execute(
        upsert.on_conflict_do_update(
            index_elements=list(table.primary_key.columns),
            set_={name: table.c[name] + upsert.excluded[name] for name in add_on_conflict},
        ),
        rows,
    )
