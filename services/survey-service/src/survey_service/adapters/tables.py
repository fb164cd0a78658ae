"""The survey-service's own database schema."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from retention_shared.db import JSONDocument, UTCDateTime, new_metadata
from retention_shared.messaging.outbox import messaging_tables
from retention_shared.tenancy import tenancy_replica_tables

metadata = new_metadata()
messaging = messaging_tables(metadata)
tenancy = tenancy_replica_tables(metadata)

ID = String(64)
SHOP = String(128)
CUSTOMER = String(128)

surveys = Table(
    "surveys",
    metadata,
    Column("survey_id", ID, primary_key=True),
    Column("shop_id", SHOP, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("name", String(200), nullable=False),
    Column("comment_enabled", Boolean, nullable=False),
    # {"ja": {"question": ..., "comment_question": ...}, "en": {...}}
    Column("texts", JSONDocument, nullable=False),
    # Set on the shop's default survey of a kind (what `nps`, `csat` and `ces` stand for in URLs).
    Column("default_kind", String(8), nullable=True),
    Column("archived_at", UTCDateTime(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    UniqueConstraint("shop_id", "default_kind", name="uq_surveys_default_kind"),
    Index("ix_surveys_shop_created", "shop_id", "created_at"),
)

# What the service knows of a customer: the language to ask in, the segment to report under, and
# when the customer was last invited (the survey-fatigue lock). Nothing else is kept.
survey_customers = Table(
    "survey_customers",
    metadata,
    Column("shop_id", SHOP, nullable=False),
    Column("customer_id", CUSTOMER, nullable=False),
    Column("locale", String(16), nullable=True),
    Column("segment", String(64), nullable=True),
    Column("last_invited_at", UTCDateTime(), nullable=True),
    PrimaryKeyConstraint("shop_id", "customer_id"),
)

invitations = Table(
    "invitations",
    metadata,
    Column("invitation_id", ID, primary_key=True),
    # The random part of the signed token; the token itself is never stored.
    Column("token_id", String(32), nullable=False),
    Column("shop_id", SHOP, nullable=False),
    Column("survey_id", ID, nullable=False),
    Column("customer_id", CUSTOMER, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("context_type", String(16), nullable=False),
    Column("context_id", String(128), nullable=False),
    Column("touchpoint", String(16), nullable=False),
    Column("segment", String(64), nullable=True),
    Column("locale", String(8), nullable=False),
    Column("idempotency_key", String(128), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    UniqueConstraint("token_id", name="uq_invitations_token_id"),
    UniqueConstraint("shop_id", "idempotency_key", name="uq_invitations_idempotency_key"),
    Index("ix_invitations_customer", "shop_id", "customer_id", "created_at"),
)

responses = Table(
    "responses",
    metadata,
    Column("response_id", ID, primary_key=True),
    Column("invitation_id", ID, nullable=False),
    Column("shop_id", SHOP, nullable=False),
    Column("survey_id", ID, nullable=False),
    Column("customer_id", CUSTOMER, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("score", SmallInteger, nullable=False),
    Column("comment", Text, nullable=True),
    Column("context_type", String(16), nullable=False),
    Column("context_id", String(128), nullable=False),
    Column("touchpoint", String(16), nullable=False),
    Column("segment", String(64), nullable=True),
    Column("locale", String(8), nullable=False),
    Column("answered_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("revision", Integer, nullable=False),
    UniqueConstraint("invitation_id", name="uq_responses_invitation_id"),
    Index("ix_responses_survey_answered", "shop_id", "survey_id", "answered_at", "response_id"),
    Index("ix_responses_customer", "shop_id", "customer_id"),
)

# Counts kept per shop-local day, touchpoint and segment, with one column per score (a histogram):
# the results read these, so a results query costs the same with a thousand responses or ten
# million, and an erasure, which deletes the responses, leaves the counts standing. One row holds
# every score so that a year of a survey is a few thousand rows. '' stands for "no segment known".
SCORE_POINTS = range(11)  # 0-10 covers every kind's scale
SCORE_COLUMNS = tuple(f"score_{point}" for point in SCORE_POINTS)

response_tallies = Table(
    "response_tallies",
    metadata,
    Column("shop_id", SHOP, nullable=False),
    Column("survey_id", ID, nullable=False),
    Column("day", Date, nullable=False),
    Column("touchpoint", String(16), nullable=False),
    Column("segment", String(64), nullable=False),
    *(Column(name, Integer, nullable=False, server_default="0") for name in SCORE_COLUMNS),
    PrimaryKeyConstraint("shop_id", "survey_id", "day", "touchpoint", "segment"),
)

invitation_tallies = Table(
    "invitation_tallies",
    metadata,
    Column("shop_id", SHOP, nullable=False),
    Column("survey_id", ID, nullable=False),
    Column("day", Date, nullable=False),
    Column("touchpoint", String(16), nullable=False),
    Column("segment", String(64), nullable=False),
    Column("invitations", Integer, nullable=False),
    PrimaryKeyConstraint("shop_id", "survey_id", "day", "touchpoint", "segment"),
)
