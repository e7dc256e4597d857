"""PostgreSQL: embeddings become pgvector columns, memories a stored tsvector with a GIN index.

Nothing changes on SQLite (float32 blobs, FTS5 in process). On PostgreSQL the extension
`vector` must be available: a server without it stops here with a message that says so.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import sqlalchemy as sa
from alembic import op

from companion.errors import ConfigError

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = (("memories", "id"), ("response_cache", "key"))
# What the stored `tsv` column holds (kept by PostgreSQL on every insert and update).
MEMORY_TSVECTOR = (
    "to_tsvector('english'::regconfig, text || ' ' || coalesce(subject, '') || ' ' || topics)"
)


def _convert(table: str, key: str, new_type: str, to_new: bool) -> None:
    """Change the embedding column's type, carrying each row's vector across."""
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(f"SELECT {key}, embedding FROM {table} WHERE embedding IS NOT NULL")
    ).all()
    op.execute(f"ALTER TABLE {table} ALTER COLUMN embedding TYPE {new_type} USING NULL")
    cast = "CAST(:v AS vector)" if to_new else ":v"
    update = sa.text(f"UPDATE {table} SET embedding = {cast} WHERE {key} = :k")
    for row_key, value in rows:
        if to_new:  # float32 bytes -> '[x,y,...]'
            vector = np.frombuffer(bytes(value), dtype=np.float32)
            literal: object = "[" + ",".join(repr(float(x)) for x in vector) + "]"
        else:  # '[x,y,...]' -> float32 bytes
            floats = [float(x) for x in str(value).strip("[]").split(",")]
            literal = np.asarray(floats, dtype=np.float32).tobytes()
        bind.execute(update, {"v": literal, "k": row_key})


def upgrade() -> None:
    """On PostgreSQL: the extension, vector columns, the GIN index."""
    if op.get_bind().dialect.name != "postgresql":
        return
    available = (
        op.get_bind()
        .execute(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"))
        .first()
    )
    if available is None:
        raise ConfigError(
            "this PostgreSQL server has no pgvector: install it (the postgresql-NN-pgvector "
            "package or github.com/pgvector/pgvector), then run CREATE EXTENSION vector"
        )
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    for table, key in TABLES:
        _convert(table, key, "vector", to_new=True)
    op.execute(
        f"ALTER TABLE memories ADD COLUMN tsv tsvector "
        f"GENERATED ALWAYS AS ({MEMORY_TSVECTOR}) STORED"
    )
    op.execute("CREATE INDEX ix_memories_fts ON memories USING gin (tsv)")


def downgrade() -> None:
    """Back to float32 blobs (the extension stays: other databases may use it)."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX IF EXISTS ix_memories_fts")
    op.execute("ALTER TABLE memories DROP COLUMN IF EXISTS tsv")
    for table, key in TABLES:
        _convert(table, key, "bytea", to_new=False)
