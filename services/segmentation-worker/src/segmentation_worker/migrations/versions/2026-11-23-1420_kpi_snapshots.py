"""KPI snapshots of the standard periods, what tells when they are out of date, moves by time

Revision ID: 4c1d7e2f9a60
Revises: 7b3e91c4d2a8
Create Date: 2026-11-23 14:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import retention_shared.db

revision: str = "4c1d7e2f9a60"
down_revision: str | None = "7b3e91c4d2a8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("updated_at", retention_shared.db.UTCDateTime(), nullable=True))
    op.create_index("ix_orders_updated", "orders", ["shop_id", "updated_at"], unique=False)
    op.add_column("shop_stats", sa.Column("kpi_revised_at", retention_shared.db.UTCDateTime(), nullable=True))
    op.create_table(
        "kpi_snapshots",
        sa.Column("shop_id", sa.String(length=128), nullable=False),
        sa.Column("period_start", retention_shared.db.UTCDateTime(), nullable=False),
        sa.Column("period_end", retention_shared.db.UTCDateTime(), nullable=False),
        sa.Column("figures", retention_shared.db.JSONDocument(), nullable=False),
        sa.Column("average_clv", sa.Float(), nullable=True),
        sa.Column("computed_at", retention_shared.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("shop_id", "period_start", "period_end", name=op.f("pk_kpi_snapshots")),
    )
    op.create_index("ix_segment_history_time", "segment_history", ["shop_id", "changed_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_segment_history_time", table_name="segment_history")
    op.drop_table("kpi_snapshots")
    op.drop_column("shop_stats", "kpi_revised_at")
    op.drop_index("ix_orders_updated", table_name="orders")
    op.drop_column("orders", "updated_at")
