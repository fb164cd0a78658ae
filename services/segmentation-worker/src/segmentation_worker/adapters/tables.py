"""The segmentation-worker's own database schema."""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, Numeric, PrimaryKeyConstraint, String, Table

from retention_shared.db import UTCDateTime, new_metadata
from retention_shared.messaging.outbox import messaging_tables
from retention_shared.tenancy import tenancy_replica_tables

metadata = new_metadata()
messaging = messaging_tables(metadata)
tenancy = tenancy_replica_tables(metadata)

Money = Numeric(18, 4)

customer_state = Table(
    "customer_state",
    metadata,
    Column("shop_id", String(128), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("first_purchase_at", UTCDateTime()),
    Column("last_purchase_at", UTCDateTime()),
    Column("purchase_count", Integer, nullable=False, default=0),
    Column("purchase_days", Integer, nullable=False, default=0),
    Column("gross_spend", Money, nullable=False, default=0),
    Column("refunded", Money, nullable=False, default=0),
    Column("last_login_at", UTCDateTime()),
    Column("login_count", Integer, nullable=False, default=0),
    Column("open_tickets", Integer, nullable=False, default=0),
    Column("r_score", Integer),
    Column("f_score", Integer),
    Column("m_score", Integer),
    Column("segment", String(64)),
    Column("updated_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("shop_id", "customer_id"),
    Index("ix_customer_state_segment", "shop_id", "segment"),
)

# One row per order, so refunds net against the order they belong to, whichever arrives first.
orders = Table(
    "orders",
    metadata,
    Column("shop_id", String(128), nullable=False),
    Column("order_id", String(128), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("purchased_at", UTCDateTime()),
    Column("amount", Money, nullable=False, default=0),
    Column("refunded", Money, nullable=False, default=0),
    PrimaryKeyConstraint("shop_id", "order_id"),
    Index("ix_orders_customer", "shop_id", "customer_id", "purchased_at"),
)

shop_stats = Table(
    "shop_stats",
    metadata,
    Column("shop_id", String(128), primary_key=True),
    Column("buyers", Integer, nullable=False, default=0),
    Column("net_spend", Money, nullable=False, default=0),
)
