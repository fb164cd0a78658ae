"""Per-shop retention period for raw events

Revision ID: 5d1c0e7a9b42
Revises: 83a75b008c7e
Create Date: 2026-11-23 07:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import retention_shared.db

revision: str = "5d1c0e7a9b42"
down_revision: str | None = "83a75b008c7e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "retention_policies",
        sa.Column("shop_id", sa.String(length=128), nullable=False),
        sa.Column("raw_event_days", sa.Integer(), nullable=False),
        sa.Column("updated_at", retention_shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("shop_id"),
    )
    op.create_index("ix_ingested_events_age", "ingested_events", ["shop_id", "occurred_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_ingested_events_age", table_name="ingested_events")
    op.drop_table("retention_policies")
