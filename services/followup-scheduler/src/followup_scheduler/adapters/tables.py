"""The followup-scheduler's own database schema: every run and every step is a row."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    Index,
    Integer,
    PrimaryKeyConstraint,
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

# What the scheduler knows of each customer, from customer_upserted and consent_changed.
contacts = Table(
    "contacts",
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
    Column("consents", JSONDocument, nullable=False, default=dict),
    # What other services tell us about the customer, for trigger conditions and templates.
    Column("segment", String(32)),
    Column("tier", String(32)),
    Column("churn_band", String(16)),
    Column("attributes", JSONDocument),
    Column("updated_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("shop_id", "customer_id"),
)

playbooks = Table(
    "playbooks",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("shop_id", String(128), nullable=False),
    Column("key", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("trigger_event", String(64), nullable=False),
    Column("document", JSONDocument, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime()),
    UniqueConstraint("shop_id", "key", name="uq_playbooks_shop_key"),
    Index("ix_playbooks_trigger", "shop_id", "trigger_event"),
)

# Every saved version of every playbook; a run keeps following the version it started with.
playbook_versions = Table(
    "playbook_versions",
    metadata,
    Column("playbook_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("document", JSONDocument, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("playbook_id", "version"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("shop_id", String(128), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("playbook_id", String(64), nullable=False),
    Column("playbook_key", String(64), nullable=False),
    Column("playbook_version", Integer, nullable=False),
    Column("business_key", String(256), nullable=False),
    Column("trigger_event_id", String(200), nullable=False),
    Column("context", JSONDocument, nullable=False),
    Column("status", String(16), nullable=False),
    Column("exit_reason", String(200)),
    Column("holdout_group", String(16), nullable=False, default="treated"),
    Column("triggered_at", UTCDateTime()),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("ended_at", UTCDateTime()),
    UniqueConstraint("shop_id", "playbook_key", "business_key", name="uq_runs_once_per_key"),
    Index("ix_runs_customer", "shop_id", "customer_id", "status"),
    Index("ix_runs_playbook", "shop_id", "playbook_key", "started_at"),
)

steps = Table(
    "steps",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("run_id", String(64), nullable=False, index=True),
    Column("shop_id", String(128), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("playbook_key", String(64), nullable=False),
    Column("step_key", String(64), nullable=False),
    Column("position", Integer, nullable=False),
    Column("action", String(32), nullable=False),
    Column("priority", String(16), nullable=False),
    Column("channels", JSONDocument, nullable=False),
    Column("template", String(128), nullable=False),
    Column("survey", String(128)),
    Column("due_at", UTCDateTime(), nullable=False),
    Column("first_due_at", UTCDateTime()),
    Column("status", String(16), nullable=False),
    Column("idempotency_key", String(128), nullable=False, unique=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("reason", String(500)),
    Column("channel", String(16)),
    Column("sent_at", UTCDateTime()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index("ix_steps_due", "status", "due_at"),
    Index("ix_steps_customer", "shop_id", "customer_id"),
    # The deliveries list and summary: a shop's steps by last change.
    Index("ix_steps_shop_updated", "shop_id", "updated_at"),
)

# What was actually sent, as rendered; erased with the customer.
messages = Table(
    "messages",
    metadata,
    Column("step_id", String(64), primary_key=True),
    Column("shop_id", String(128), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("recipient", String(320), nullable=False),
    Column("subject", String(500)),
    Column("body", Text, nullable=False),
    Column("sent_at", UTCDateTime(), nullable=False),
    Index("ix_messages_customer", "shop_id", "customer_id"),
)

# A shop's contact hygiene settings (FollowupSettings as JSON); absent means the defaults.
shop_settings = Table(
    "shop_settings",
    metadata,
    Column("shop_id", String(128), primary_key=True),
    Column("document", JSONDocument, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# Per-shop channel configuration. Secrets are write-only through the API.
channel_configs = Table(
    "channel_configs",
    metadata,
    Column("shop_id", String(128), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("settings", JSONDocument, nullable=False),
    Column("secrets", JSONDocument, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("shop_id", "channel"),
)

# Purchases seen on purchase_made: conversion goals, first purchase and the last order.
purchases = Table(
    "purchases",
    metadata,
    Column("shop_id", String(128), nullable=False),
    Column("order_id", String(200), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("amount", String(40), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("shop_id", "order_id"),
    Index("ix_purchases_customer", "shop_id", "customer_id", "occurred_at"),
)

# "Customers who bought X also bought Y": pair counts per shop, from purchase_made items.
co_purchases = Table(
    "co_purchases",
    metadata,
    Column("shop_id", String(128), nullable=False),
    Column("sku", String(128), nullable=False),
    Column("other_sku", String(128), nullable=False),
    Column("count", Integer, nullable=False),
    PrimaryKeyConstraint("shop_id", "sku", "other_sku"),
)

customer_products = Table(
    "customer_products",
    metadata,
    Column("shop_id", String(128), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("sku", String(128), nullable=False),
    PrimaryKeyConstraint("shop_id", "customer_id", "sku"),
)

products = Table(
    "products",
    metadata,
    Column("shop_id", String(128), nullable=False),
    Column("sku", String(128), nullable=False),
    Column("name", String(500)),
    Column("category", String(128)),
    PrimaryKeyConstraint("shop_id", "sku"),
)
