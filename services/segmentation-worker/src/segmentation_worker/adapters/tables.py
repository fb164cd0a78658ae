"""The segmentation-worker's own database schema."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    Float,
    Index,
    Integer,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

from retention_shared.db import JSONDocument, UTCDateTime, new_metadata
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
    Column("first_login_at", UTCDateTime()),
    Column("last_login_at", UTCDateTime()),
    Column("login_count", Integer, nullable=False, default=0),
    Column("open_tickets", Integer, nullable=False, default=0),
    Column("last_nps_score", Integer),
    Column("last_nps_at", UTCDateTime()),
    Column("r_score", Integer),
    Column("f_score", Integer),
    Column("m_score", Integer),
    Column("segment", String(64)),
    Column("segment_since", UTCDateTime()),
    # Predictions of the shop's current model fit (empty until a fit exists).
    Column("p_alive", Float),
    Column("expected_purchases", Float),
    Column("expected_spend", Float),
    Column("clv", Float),
    Column("churn_band", String(8)),
    # The sort key of "riskiest first": the band's rank plus the probability of having left.
    Column("churn_score", Float),
    # True from a login drop until the login rate recovers: one login_dropped per episode.
    Column("login_drop_active", Boolean, nullable=False, default=False, server_default=false()),
    Column("scored_at", UTCDateTime()),
    Column("updated_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("shop_id", "customer_id"),
    # Few secondary indexes: the recompute rewrites scores daily, and an update that changes no
    # indexed column can stay on its page (a HOT update, see the fillfactor) at a fraction of the cost.
    # The first purchase (KPI cohorts) is written once per customer, never by the recompute.
    Index("ix_customer_state_segment", "shop_id", "segment"),
    Index("ix_customer_state_first_purchase", "shop_id", "first_purchase_at"),
    postgresql_with={"fillfactor": 70},
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
    # When this worker last wrote the row (a purchase or refund applied): a stored KPI snapshot is
    # out of date once an order of its period has been written after it (see kpi_snapshots).
    Column("updated_at", UTCDateTime()),
    PrimaryKeyConstraint("shop_id", "order_id"),
    Index("ix_orders_customer", "shop_id", "customer_id", "purchased_at"),
    # KPIs aggregate a shop's orders of a period.
    Index("ix_orders_time", "shop_id", "purchased_at"),
    Index("ix_orders_updated", "shop_id", "updated_at"),
)

shop_stats = Table(
    "shop_stats",
    metadata,
    Column("shop_id", String(128), primary_key=True),
    Column("buyers", Integer, nullable=False, default=0),
    Column("net_spend", Money, nullable=False, default=0),
    # What the last recompute learnt about the shop, for scoring single customers in between:
    # the quintile cut points and the typical gap between two purchase days.
    Column("quintile_edges", JSONDocument),
    Column("typical_interval_days", Float),
    Column("last_recompute_at", UTCDateTime()),
    # Set when orders are deleted (erasure), which no order's updated_at can show.
    Column("kpi_revised_at", UTCDateTime()),
)

# The KPI figures of a shop's standard periods (whole UTC days), computed by the daily recompute:
# aggregating a period's orders takes seconds for a shop with millions of them, too slow for a
# dashboard view. A snapshot is used only while no order of its period has been written since.
kpi_snapshots = Table(
    "kpi_snapshots",
    metadata,
    Column("shop_id", String(128), nullable=False),
    Column("period_start", UTCDateTime(), nullable=False),
    Column("period_end", UTCDateTime(), nullable=False),
    Column("figures", JSONDocument, nullable=False),
    Column("average_clv", Float),
    Column("computed_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("shop_id", "period_start", "period_end"),
)

# Support tickets one row each, so a resolution counts once whichever of the two arrives first.
tickets = Table(
    "tickets",
    metadata,
    Column("shop_id", String(128), nullable=False),
    Column("ticket_id", String(128), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("opened_at", UTCDateTime()),
    Column("resolved_at", UTCDateTime()),
    PrimaryKeyConstraint("shop_id", "ticket_id"),
    Index("ix_tickets_customer", "shop_id", "customer_id"),
)

# Logins per customer and UTC day, for the login rhythm and login-drop windows; days older than
# the longest window are purged by the recompute.
login_days = Table(
    "login_days",
    metadata,
    Column("shop_id", String(128), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("day", Date, nullable=False),
    Column("logins", Integer, nullable=False, default=0),
    PrimaryKeyConstraint("shop_id", "customer_id", "day"),
    Index("ix_login_days_day", "shop_id", "day"),
)

segment_history = Table(
    "segment_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("shop_id", String(128), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("changed_at", UTCDateTime(), nullable=False),
    Column("from_segment", String(64)),
    Column("to_segment", String(64), nullable=False),
    Index("ix_segment_history_customer", "shop_id", "customer_id", "changed_at"),
    # The shop's moves between segments over a period.
    Index("ix_segment_history_time", "shop_id", "changed_at"),
)

# Each shop's segmentation settings as one validated document (see domain/config.py).
segmentation_config = Table(
    "segmentation_config",
    metadata,
    Column("shop_id", String(128), primary_key=True),
    Column("document", JSONDocument, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# Every model fit, versioned per shop and model; the highest version is the current one.
model_fits = Table(
    "model_fits",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("shop_id", String(128), nullable=False),
    Column("model", String(32), nullable=False),
    Column("version", Integer, nullable=False),
    Column("fitted_at", UTCDateTime(), nullable=False),
    Column("time_unit", String(16), nullable=False),
    Column("parameters", JSONDocument, nullable=False),
    Column("diagnostics", JSONDocument, nullable=False),
    UniqueConstraint("shop_id", "model", "version"),
)

recompute_runs = Table(
    "recompute_runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("shop_id", String(128), nullable=False),
    Column("trigger", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("requested_at", UTCDateTime(), nullable=False),
    Column("started_at", UTCDateTime()),
    Column("finished_at", UTCDateTime()),
    Column("summary", JSONDocument),
    Column("error", Text),
    Index("ix_recompute_runs_shop", "shop_id", "status", "requested_at"),
)
