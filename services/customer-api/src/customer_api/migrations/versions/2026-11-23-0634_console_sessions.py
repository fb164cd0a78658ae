"""console sessions

Revision ID: 83a75b008c7e
Revises: a06a49379bc7
Create Date: 2026-11-23 06:34:24.560914
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import retention_shared.db

revision: str = "83a75b008c7e"
down_revision: str | None = "a06a49379bc7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("shop_id", sa.String(length=128), nullable=True),
        sa.Column("key_id", sa.String(length=128), nullable=True),
        sa.Column("scopes", retention_shared.db.JSONDocument(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", retention_shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", retention_shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", retention_shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_console_sessions")),
    )
    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_console_sessions_expiry", ["expires_at"], unique=False)
        batch_op.create_index("ix_console_sessions_key", ["key_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_console_sessions_key")
        batch_op.drop_index("ix_console_sessions_expiry")

    op.drop_table("console_sessions")
