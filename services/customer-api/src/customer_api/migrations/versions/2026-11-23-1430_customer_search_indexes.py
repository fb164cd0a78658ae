"""Indexes for searching customers by the start of their email or name, in any case

Revision ID: 6f2b9d4e1c37
Revises: 5d1c0e7a9b42
Create Date: 2026-11-23 14:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "6f2b9d4e1c37"
down_revision: str | None = "5d1c0e7a9b42"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("email", "name")


def upgrade() -> None:
    for column in COLUMNS:
        op.create_index(
            f"ix_customers_{column}_search",
            "customers",
            ["shop_id", sa.text(f"lower({column})")],
            unique=False,
            postgresql_ops={f"lower({column})": "text_pattern_ops"},
        )


def downgrade() -> None:
    for column in COLUMNS:
        op.drop_index(f"ix_customers_{column}_search", table_name="customers")
