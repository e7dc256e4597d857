"""Create episode_sentences: the sentence vectors of long user turns (recall scores a turn by
the best of its own vector and its sentences').

Rows go with their turn and with their user (ON DELETE CASCADE on both). The vectors are
pgvector `vector`s on PostgreSQL (as 0008 made the other embeddings), float32 blobs elsewhere.

Revision ID: 0010
Revises: 0005 (the head before it: 0009 -> 0005)
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _embedding() -> sa.types.TypeEngine[object]:
    """pgvector's `vector` on PostgreSQL, else a BLOB."""
    if op.get_bind().dialect.name == "postgresql":
        from pgvector.sqlalchemy import Vector

        return Vector()
    return sa.LargeBinary()


def upgrade() -> None:
    """Create the table and its indexes (per user for loading, per turn for the cascade)."""
    op.create_table(
        "episode_sentences",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("episode_id", ROW_ID, nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("embedding", _embedding(), nullable=False),
        sa.ForeignKeyConstraint(
            ["episode_id"],
            ["episodes.id"],
            name="fk_episode_sentences_episode_id_episodes",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_episode_sentences_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_episode_sentences"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_episode_sentences_user_id_episode_id", "episode_sentences", ["user_id", "episode_id"]
    )
    op.create_index("ix_episode_sentences_episode_id", "episode_sentences", ["episode_id"])


def downgrade() -> None:
    """Drop the table and its indexes."""
    op.drop_index("ix_episode_sentences_episode_id", table_name="episode_sentences")
    op.drop_index("ix_episode_sentences_user_id_episode_id", table_name="episode_sentences")
    op.drop_table("episode_sentences")
