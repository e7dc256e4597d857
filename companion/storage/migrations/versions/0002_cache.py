"""Create response_cache (the persistent layer of the response cache).

Revision ID: 0002
Revises: 0001
Create Date: 2024-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the table and its lookup, scope, expiry and eviction indexes."""
    op.create_table(
        "response_cache",
        sa.Column("key", sa.String(96), nullable=False),
        sa.Column("partition", sa.String(96), nullable=False),
        sa.Column("scope", sa.String(80), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("finish_reason", sa.String(16), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_response_cache"),
    )
    op.create_index("ix_response_cache_partition", "response_cache", ["partition"])
    op.create_index("ix_response_cache_scope", "response_cache", ["scope"])
    op.create_index("ix_response_cache_expires_at", "response_cache", ["expires_at"])
    op.create_index("ix_response_cache_last_used_at", "response_cache", ["last_used_at"])


def downgrade() -> None:
    """Drop the table and its indexes."""
    for name in ("last_used_at", "expires_at", "scope", "partition"):
        op.drop_index(f"ix_response_cache_{name}", table_name="response_cache")
    op.drop_table("response_cache")
