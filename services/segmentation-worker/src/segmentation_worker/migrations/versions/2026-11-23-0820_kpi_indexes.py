"""Indexes for KPIs aggregated by the database

Revision ID: 7b3e91c4d2a8
Revises: cfa3b8c347f1
Create Date: 2026-11-23 08:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "7b3e91c4d2a8"
down_revision: str | None = "cfa3b8c347f1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_orders_time", "orders", ["shop_id", "purchased_at"], unique=False)
    op.create_index(
        "ix_customer_state_first_purchase", "customer_state", ["shop_id", "first_purchase_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_customer_state_first_purchase", table_name="customer_state")
    op.drop_index("ix_orders_time", table_name="orders")
