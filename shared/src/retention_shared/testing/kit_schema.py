"""A tiny service schema (outbox, inbox and one effects table) for testing the kit itself."""

from __future__ import annotations

from sqlalchemy import Column, Engine, Integer, String, Table

from retention_shared.db import create_db_engine, new_metadata
from retention_shared.messaging.outbox import messaging_tables

metadata = new_metadata()
messaging = messaging_tables(metadata)
applied = Table(
    "applied",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(200), nullable=False),
    Column("note", String(200)),
)


def make_engine(url: str) -> Engine:
    engine = create_db_engine(url)
    metadata.create_all(engine)
    return engine
