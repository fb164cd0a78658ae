"""The customer-api's own database schema."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    func,
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
# Search by the start of an email or a name, in any case (`GET /v1/customers?q=`). On PostgreSQL
# the pattern operator class lets `LIKE 'prefix%'` use the index whatever the database's collation.
for _column in ("email", "name"):
    Index(
        f"ix_customers_{_column}_search",
        customers.c.shop_id,
        func.lower(customers.c[_column]).label(f"lower_{_column}"),
        postgresql_ops={f"lower_{_column}": "text_pattern_ops"},
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

# The single customer view's read model: what the other services concluded about the customer,
# kept current from their events (never by calling them), each part with the time it refers to.
customer_insights = Table(
    "customer_insights",
    metadata,
    Column("shop_id", String(128), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("segment", String(64)),
    Column("rfm", JSONDocument),
    Column("segment_as_of", UTCDateTime()),
    Column("churn_risk", String(16)),
    Column("probability_alive", Float),
    Column("churn_as_of", UTCDateTime()),
    Column("last_survey", JSONDocument),
    Column("survey_as_of", UTCDateTime()),
    Column("clv", Float),
    Column("clv_horizon_months", Integer),
    Column("expected_purchases", Float),
    Column("scores_as_of", UTCDateTime()),
    PrimaryKeyConstraint("shop_id", "customer_id"),
    Index("ix_customer_insights_segment", "shop_id", "segment"),
    Index("ix_customer_insights_churn", "shop_id", "churn_risk"),
)

customer_followups = Table(
    "customer_followups",
    metadata,
    Column("shop_id", String(128), nullable=False),
    Column("step_id", String(64), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("playbook", String(64), nullable=False),
    Column("step", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("channel", String(16)),
    Column("due_at", UTCDateTime()),
    Column("reason", String(500)),
    Column("updated_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("shop_id", "step_id"),
    Index("ix_customer_followups_customer", "shop_id", "customer_id", "due_at"),
)

customer_survey_answers = Table(
    "customer_survey_answers",
    metadata,
    Column("shop_id", String(128), nullable=False),
    Column("response_id", String(64), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("survey_id", String(64), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("score", Integer, nullable=False),
    Column("detractor", Boolean, nullable=False),
    Column("answered_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("shop_id", "response_id"),
    Index("ix_customer_survey_answers_customer", "shop_id", "customer_id", "answered_at"),
)

# Proof that a customer was erased, without any personal data: the subject is an HMAC of the
# shop's customer id, so the receipt cannot be read back but can be matched when asked about an id.
erasure_receipts = Table(
    "erasure_receipts",
    metadata,
    Column("erasure_id", String(64), primary_key=True),
    Column("shop_id", String(128), nullable=False),
    Column("subject_digest", String(64), nullable=False),
    Column("requested_at", UTCDateTime(), nullable=False),
    Column("services", JSONDocument, nullable=False),
    Column("completed_at", UTCDateTime()),
    Index("ix_erasure_receipts_subject", "shop_id", "subject_digest"),
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
    # The retention job deletes a shop's events by age.
    Index("ix_ingested_events_age", "shop_id", "occurred_at"),
)

# How long each shop keeps raw events (`ingested_events`); shops without a row get the default.
retention_policies = Table(
    "retention_policies",
    metadata,
    Column("shop_id", String(128), primary_key=True),
    Column("raw_event_days", Integer, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# Signed-in console users. The cookie holds a random token; only its SHA-256 is stored, with the
# shop and key it acts for (never the key itself), so a stolen table yields no usable session.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("shop_id", String(128)),
    Column("key_id", String(128)),
    Column("scopes", JSONDocument, nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("last_seen_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Index("ix_console_sessions_key", "key_id"),
    Index("ix_console_sessions_expiry", "expires_at"),
)

from customer_api.adapters import loyalty_tables  # noqa: E402,F401  (registers the loyalty tables)
