"""Bulk INSERTs that cost one round trip and one short statement on PostgreSQL.

A batch of answers writes dozens of rows into each of three tables. On PostgreSQL the rows travel
as one array per column into `INSERT ... SELECT * FROM unnest(...)`: a statement of fixed, short
text whatever the row count (psycopg parses and caches it once), with the values adapted in bulk.
Elsewhere (SQLite, the embedded mode) the rows go through an ordinary executemany.
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
    if add_on_conflict:
        keys = ", ".join(column.name for column in table.primary_key.columns)
        sums = ", ".join(f"{name} = {table.name}.{name} + EXCLUDED.{name}" for name in add_on_conflict)
        statement += f" ON CONFLICT ({keys}) DO UPDATE SET {sums}"
    return text(statement)


def insert_rows(
    session: Session, table: Table, rows: list[dict[str, Any]], *, add_on_conflict: tuple[str, ...] = ()
) -> None:
    """Insert rows that all have the same keys. With `add_on_conflict`, a row whose primary key
    exists adds its values of those columns to the existing ones instead (counters)."""
    if not rows:
        return
    columns = tuple(rows[0])
    if session.get_bind().dialect.name == "postgresql":
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
