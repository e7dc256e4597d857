"""Who owns what: private personas, cache rows' contributors, the message a reply answers.

- personas.owner_id: NULL for a shared persona (admins manage it), else the user it is
  private to (deleted with that user).
- response_cache_users: which users' messages each cached row came from, so deleting a user
  removes their rows in every scope (rows go with their cache row).
- messages.reply_to: the id of the user message an assistant message answers; existing
  replies get the nearest earlier user message of their session.

Revision ID: 0005
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MessageId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_BACKFILL = """
UPDATE messages SET reply_to = (
    SELECT max(u.id) FROM messages u
    WHERE u.session_id = messages.session_id AND u.role = 'user' AND u.id < messages.id
) WHERE role = 'assistant'
"""


def upgrade() -> None:
    """Add the columns and the contributors table; link the replies already stored."""
    with op.batch_alter_table("personas") as batch:
        batch.add_column(sa.Column("owner_id", sa.String(64), nullable=True))
        batch.create_foreign_key(
            "fk_personas_owner_id_users", "users", ["owner_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_index("ix_personas_owner_id", ["owner_id"])
    op.add_column("messages", sa.Column("reply_to", MessageId, nullable=True))
    op.execute(_BACKFILL)
    op.create_table(
        "response_cache_users",
        sa.Column("key", sa.String(96), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("key", "user_id", name="pk_response_cache_users"),
        sa.ForeignKeyConstraint(
            ["key"],
            ["response_cache.key"],
            name="fk_response_cache_users_key_response_cache",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_response_cache_users_user_id", "response_cache_users", ["user_id"])


def downgrade() -> None:
    """Drop them again."""
    op.drop_index("ix_response_cache_users_user_id", table_name="response_cache_users")
    op.drop_table("response_cache_users")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("reply_to")
    with op.batch_alter_table("personas") as batch:
        batch.drop_index("ix_personas_owner_id")
        batch.drop_constraint("fk_personas_owner_id_users", type_="foreignkey")
        batch.drop_column("owner_id")
