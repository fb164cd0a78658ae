"""Index the steps by shop and last change, for the deliveries list and summary

Revision ID: 3e8a6c0b5d21
Revises: 9fa4fb6008c7
Create Date: 2026-11-23 14:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "3e8a6c0b5d21"
down_revision: str | None = "9fa4fb6008c7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_steps_shop_updated", "steps", ["shop_id", "updated_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_steps_shop_updated", table_name="steps")
