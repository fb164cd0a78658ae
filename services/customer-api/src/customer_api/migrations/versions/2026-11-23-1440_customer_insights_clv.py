"""The single customer view keeps the predicted CLV from the segmentation-worker's customer_scored

Revision ID: 8a4d2f6b0e93
Revises: 6f2b9d4e1c37
Create Date: 2026-11-23 14:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import retention_shared.db

revision: str = "8a4d2f6b0e93"
down_revision: str | None = "6f2b9d4e1c37"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("customer_insights", sa.Column("clv", sa.Float(), nullable=True))
    op.add_column("customer_insights", sa.Column("clv_horizon_months", sa.Integer(), nullable=True))
    op.add_column("customer_insights", sa.Column("expected_purchases", sa.Float(), nullable=True))
    op.add_column(
        "customer_insights", sa.Column("scores_as_of", retention_shared.db.UTCDateTime(), nullable=True)
    )


def downgrade() -> None:
    for column in ("scores_as_of", "expected_purchases", "clv_horizon_months", "clv"):
        op.drop_column("customer_insights", column)
