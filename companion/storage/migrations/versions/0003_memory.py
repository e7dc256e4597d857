"""Create memories, memory_history, session_summaries, personas and relationships.

Revision ID: 0003
Revises: 0002
Create Date: 2024-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _user_fk(table: str) -> sa.ForeignKeyConstraint:
    """A cascading foreign key to users.id, named as schema.py names it."""
    return sa.ForeignKeyConstraint(
        ["user_id"], ["users.id"], name=f"fk_{table}_user_id_users", ondelete="CASCADE"
    )


def upgrade() -> None:
    """Create the memory and persona tables."""
    op.create_table(
        "memories",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("slot", sa.String(128), nullable=True),
        sa.Column("subject", sa.String(64), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("topics", sa.String(255), nullable=False),
        sa.Column("importance", sa.Float(), nullable=False),
        sa.Column("use_count", sa.Integer(), nullable=False),
        sa.Column("source_ids", sa.JSON(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.Column("embedding_model", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        _user_fk("memories"),
        sa.PrimaryKeyConstraint("id", name="pk_memories"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_memories_user_id_slot", "memories", ["user_id", "slot"])
    op.create_index("ix_memories_user_id_importance", "memories", ["user_id", "importance"])
    op.create_table(
        "memory_history",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("memory_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("event", sa.String(8), nullable=False),
        sa.Column("old_text", sa.Text(), nullable=True),
        sa.Column("new_text", sa.Text(), nullable=True),
        sa.Column("old_importance", sa.Float(), nullable=True),
        sa.Column("new_importance", sa.Float(), nullable=True),
        sa.Column("message_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _user_fk("memory_history"),
        sa.PrimaryKeyConstraint("id", name="pk_memory_history"),
    )
    op.create_index(
        "ix_memory_history_user_id_memory_id", "memory_history", ["user_id", "memory_id"]
    )
    op.create_table(
        "session_summaries",
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("upto_message_id", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"],
            name="fk_session_summaries_session_id_sessions", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_id", name="pk_session_summaries"),
    )
    op.create_table(
        "personas",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_personas"),
    )
    op.create_table(
        "relationships",
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("persona_id", sa.String(64), nullable=False),
        sa.Column("familiarity", sa.Float(), nullable=False),
        sa.Column("affinity", sa.Float(), nullable=False),
        sa.Column("interactions", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _user_fk("relationships"),
        sa.PrimaryKeyConstraint("user_id", "persona_id", name="pk_relationships"),
    )


def downgrade() -> None:
    """Drop everything upgrade() created."""
    op.drop_table("relationships")
    op.drop_table("personas")
    op.drop_table("session_summaries")
    op.drop_index("ix_memory_history_user_id_memory_id", table_name="memory_history")
    op.drop_table("memory_history")
    op.drop_index("ix_memories_user_id_importance", table_name="memories")
    op.drop_index("ix_memories_user_id_slot", table_name="memories")
    op.drop_table("memories")
