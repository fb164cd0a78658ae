"""The customer-api's own database schema."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from retention_shared.db import JSONDocument, UTCDateTime, new_metadata
from retention_shared.messaging.outbox import messaging_tables

metadata = new_metadata()
messaging = messaging_tables(metadata)

shops = Table(
    "shops",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("locale", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(128), primary_key=True),
    Column("shop_id", String(128), ForeignKey("shops.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("prefix", String(32), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("scopes", JSONDocument, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
)

customers = Table(
    "customers",
    metadata,
    Column("shop_id", String(128), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("email", String(320)),
    Column("phone", String(32)),
    Column("line_user_id", String(128)),
    Column("name", String(200)),
    Column("locale", String(16)),
    Column("timezone", String(64)),
    Column("birthday", Date),
    Column("attributes", JSONDocument, nullable=False, default=dict),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("shop_id", "customer_id"),
)

consents = Table(
    "consents",
    metadata,
    Column("shop_id", String(128), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("granted", Boolean, nullable=False),
    Column("legal_basis", String(64), nullable=False),
    Column("source", String(64), nullable=False),
    Column("changed_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("shop_id", "customer_id", "channel"),
)

consent_history = Table(
    "consent_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("shop_id", String(128), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("granted", Boolean, nullable=False),
    Column("legal_basis", String(64), nullable=False),
    Column("source", String(64), nullable=False),
    Column("changed_at", UTCDateTime(), nullable=False),
    Index("ix_consent_history_customer", "shop_id", "customer_id"),
)

# Every ingested event, once: the primary key makes ingestion idempotent on (shop, event id),
# and the rows are the customer's raw activity history.
ingested_events = Table(
    "ingested_events",
    metadata,
    Column("shop_id", String(128), nullable=False),
    Column("event_id", String(128), nullable=False),
    Column("type", String(64), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("payload", Text, nullable=False),
    PrimaryKeyConstraint("shop_id", "event_id"),
    Index("ix_ingested_events_customer", "shop_id", "customer_id", "occurred_at"),
)
