"""Create client_turns (OpenAI API conversations sent whole by the client).

Revision ID: 0009
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """One row per request seen: which session its conversation is kept in."""
    op.create_table(
        "client_turns",
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "digest", name="pk_client_turns"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_client_turns_user_id_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name="fk_client_turns_session_id_sessions",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_client_turns_session_id", "client_turns", ["session_id"])


def downgrade() -> None:
    """Drop the table."""
    op.drop_index("ix_client_turns_session_id", table_name="client_turns")
    op.drop_table("client_turns")
