"""Create episodes: every chat turn kept as episodic memory beside the extracted facts.

Revision ID: 0006
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _embedding() -> sa.types.TypeEngine[object]:
    """pgvector's `vector` on PostgreSQL (as 0008 made the other embeddings), else a BLOB."""
    if op.get_bind().dialect.name == "postgresql":
        from pgvector.sqlalchemy import Vector

        return Vector()
    return sa.LargeBinary()


def upgrade() -> None:
    """Create the table and its two per-user indexes (by time, by message)."""
    op.create_table(
        "episodes",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=True),
        sa.Column("message_id", ROW_ID, nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(64), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("importance", sa.Float(), nullable=False),
        sa.Column("use_count", sa.Integer(), nullable=False),
        sa.Column("embedding", _embedding(), nullable=True),
        sa.Column("embedding_model", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_episodes_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_episodes"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_episodes_user_id_created_at", "episodes", ["user_id", "created_at"])
    op.create_index("ix_episodes_user_id_message_id", "episodes", ["user_id", "message_id"])


def downgrade() -> None:
    """Drop the table and its indexes."""
    op.drop_index("ix_episodes_user_id_message_id", table_name="episodes")
    op.drop_index("ix_episodes_user_id_created_at", table_name="episodes")
    op.drop_table("episodes")
