"""The loyalty programme's tables (registered on the customer-api's metadata)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, Numeric, PrimaryKeyConstraint, String, Table

from customer_api.adapters.tables import metadata
from retention_shared.db import JSONDocument, UTCDateTime

Money = Numeric(18, 4)

# A shop's programme; a shop without a row runs the defaults (customer_api.domain.loyalty.DEFAULT_RULES).
loyalty_settings = Table(
    "loyalty_settings",
    metadata,
    Column("shop_id", String(128), primary_key=True),
    Column("rules", JSONDocument, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# One row per member. Its row lock serialises every change to the member's points and tier.
loyalty_accounts = Table(
    "loyalty_accounts",
    metadata,
    Column("shop_id", String(128), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("tier", String(32), nullable=False),
    Column("tier_since", UTCDateTime(), nullable=False),
    Column("tier_evaluated_at", UTCDateTime(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("shop_id", "customer_id"),
    Index("ix_loyalty_accounts_evaluated", "tier_evaluated_at"),
)

# Append-only. Each row moves points in or out of one lot: an `earn` row opens the lot (positive
# points); `redeem`, `clawback` and `expire` rows take from it (negative points) and repeat its
# `expires_at`, so the balance is one sum over the rows that have not expired.
loyalty_ledger = Table(
    "loyalty_ledger",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("shop_id", String(128), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("points", Integer, nullable=False),
    Column("lot_id", String(40), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("order_id", String(128)),
    Column("event_id", String(128)),
    Column("redemption_id", String(40)),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("recorded_at", UTCDateTime(), nullable=False),
    Index("ix_loyalty_ledger_customer", "shop_id", "customer_id", "expires_at"),
    Index("ix_loyalty_ledger_expires_at", "expires_at"),
)

# One row per order, so a refund claws back against its own order whichever of the two arrives
# first, and an order reported twice earns once. `points_reversed` counts the points its refunds
# have taken back, `points_unrecovered` those that were already spent and could not be.
loyalty_orders = Table(
    "loyalty_orders",
    metadata,
    Column("shop_id", String(128), nullable=False),
    Column("order_id", String(128), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("purchased_at", UTCDateTime()),
    Column("amount", Money, nullable=False),
    Column("refunded", Money, nullable=False),
    Column("multiplier", Numeric(8, 4)),
    Column("points_earned", Integer, nullable=False),
    Column("points_reversed", Integer, nullable=False),
    Column("points_unrecovered", Integer, nullable=False),
    Column("lot_id", String(40)),
    Column("lot_expires_at", UTCDateTime()),
    Column("updated_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("shop_id", "order_id"),
    Index("ix_loyalty_orders_customer", "shop_id", "customer_id", "purchased_at"),
)

# Redemptions by their idempotency key (per customer): repeating the request answers the first result.
loyalty_redemptions = Table(
    "loyalty_redemptions",
    metadata,
    Column("shop_id", String(128), nullable=False),
    Column("redemption_id", String(40), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("idempotency_key", String(128), nullable=False),
    Column("points", Integer, nullable=False),
    Column("reason", String(200)),
    Column("balance_after", Integer, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("shop_id", "redemption_id"),
    Index("uq_loyalty_redemptions_key", "shop_id", "customer_id", "idempotency_key", unique=True),
)
