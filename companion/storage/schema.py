"""Table definitions (SQLAlchemy Core, one MetaData), portable to SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Dialect

# Stable constraint names, so later migrations (and SQLite batch mode) can refer to them.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID_LENGTH = 64
# SQLite's FTS5 index of messages.text and its shadow tables (migration 0007): not in metadata
FTS_TABLE = "messages_fts"


def in_metadata(name: str | None, type_: str, _parents: object = None) -> bool:
    """Alembic's include_name: everything but the full-text index's own tables."""
    return not (type_ == "table" and (name or "").startswith(FTS_TABLE))

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


def user_column(name: str = "user_id", **kwargs: Any) -> sa.Column[str]:
    """A column naming a user, whose rows go with the user (ON DELETE CASCADE)."""
    return sa.Column(
        name, sa.String(ID_LENGTH), sa.ForeignKey("users.id", ondelete="CASCADE"), **kwargs
    )

# BIGINT on PostgreSQL; plain INTEGER on SQLite, where only that spelling aliases the rowid.
MessageId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware timestamp that always comes back in UTC, even from SQLite."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store UTC; a naive value is taken to be UTC already."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Attach UTC to SQLite's naive values, convert PostgreSQL's to UTC."""
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Embedding(sa.TypeDecorator[np.ndarray]):
    """A float32 vector: float32 bytes on SQLite, a pgvector `vector` on PostgreSQL (0008)."""

    impl = sa.LargeBinary()
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        """pgvector's type on PostgreSQL, a BLOB elsewhere."""
        if dialect.name == "postgresql":
            from pgvector.sqlalchemy import Vector

            return dialect.type_descriptor(Vector())
        return dialect.type_descriptor(sa.LargeBinary())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        """A numpy float32 array for pgvector, its bytes for SQLite."""
        if value is None:
            return None
        vector = np.asarray(value, dtype=np.float32)
        return vector if dialect.name == "postgresql" else vector.tobytes()

    def process_result_value(self, value: Any, dialect: Dialect) -> np.ndarray | None:
        """Always a writable float32 array."""
        if value is None:
            return None
        if isinstance(value, bytes | memoryview):
            return np.frombuffer(value, dtype=np.float32).copy()
        return np.asarray(value, dtype=np.float32)


users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(ID_LENGTH), primary_key=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.String(ID_LENGTH), primary_key=True),
    user_column(nullable=False),
    sa.Column("title", sa.String(255), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index("ix_sessions_user_id_updated_at", "user_id", "updated_at"),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", MessageId, primary_key=True, autoincrement=True),
    sa.Column(
        "session_id",
        sa.String(ID_LENGTH),
        sa.ForeignKey("sessions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("text", sa.Text(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("token_count", sa.Integer(), nullable=True),
    sa.Column("cached", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("model", sa.String(255), nullable=True),
    sa.Column("timings", sa.JSON(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    # stop / regenerate / edit / continue (issue 17): why generation ended; false once a
    # regenerate or an edit replaced it (kept, out of the prompt); the replies to one message
    sa.Column("finish_reason", sa.String(16), nullable=True),
    sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true()),
    sa.Column("alt_group", MessageId, nullable=True),
    sa.Column("reply_to", MessageId, nullable=True),  # an assistant message: the one it answers
    sa.Index("ix_messages_session_id_id", "session_id", "id"),
    # Never reuse a deleted id on SQLite (ignored by other dialects).
    sqlite_autoincrement=True,
)

# Response cache (issue 4): one row per cached reply; scope "shared" or "user:<id>".
response_cache = sa.Table(
    "response_cache",
    metadata,
    sa.Column("key", sa.String(96), primary_key=True),
    sa.Column("partition", sa.String(96), nullable=False),
    sa.Column("scope", sa.String(80), nullable=False),
    sa.Column("message", sa.Text(), nullable=False),
    sa.Column("response", sa.Text(), nullable=False),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("prompt_tokens", sa.Integer(), nullable=False),
    sa.Column("completion_tokens", sa.Integer(), nullable=False),
    sa.Column("finish_reason", sa.String(16), nullable=False),
    sa.Column("embedding", Embedding(), nullable=True),
    sa.Column("size_bytes", sa.Integer(), nullable=False),
    sa.Column("hits", sa.Integer(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("last_used_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Index("ix_response_cache_partition", "partition"),
    sa.Index("ix_response_cache_scope", "scope"),
    sa.Index("ix_response_cache_expires_at", "expires_at"),
    sa.Index("ix_response_cache_last_used_at", "last_used_at"),
)

# Which users' messages each cached row came from: deleting a user removes their rows in every
# scope (these rows go with their cache row).
response_cache_users = sa.Table(
    "response_cache_users",
    metadata,
    sa.Column("key", sa.String(96), sa.ForeignKey("response_cache.key", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("user_id", sa.String(ID_LENGTH), primary_key=True),
    sa.Index("ix_response_cache_users_user_id", "user_id"),
)

# Long-term memory (issue 5). On SQLite the full-text and vector indexes live in process
# (memory/index.py); on PostgreSQL they are a GIN index and pgvector (memory/pg_index.py, 0008).
memories = sa.Table(
    "memories",
    metadata,
    sa.Column("id", MessageId, primary_key=True, autoincrement=True),
    user_column(nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("slot", sa.String(128), nullable=True),
    sa.Column("subject", sa.String(ID_LENGTH), nullable=True),
    sa.Column("text", sa.Text(), nullable=False),
    sa.Column("topics", sa.String(255), nullable=False),
    sa.Column("importance", sa.Float(), nullable=False),
    sa.Column("use_count", sa.Integer(), nullable=False),
    sa.Column("source_ids", sa.JSON(), nullable=False),
    sa.Column("embedding", Embedding(), nullable=True),
    sa.Column("embedding_model", sa.String(255), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("last_used_at", UTCDateTime(), nullable=True),
    sa.Index("ix_memories_user_id_slot", "user_id", "slot"),
    sa.Index("ix_memories_user_id_importance", "user_id", "importance"),
    sqlite_autoincrement=True,
)

memory_history = sa.Table(
    "memory_history",
    metadata,
    sa.Column("id", MessageId, primary_key=True, autoincrement=True),
    sa.Column("memory_id", sa.Integer(), nullable=False),
    user_column(nullable=False),
    sa.Column("event", sa.String(8), nullable=False),
    sa.Column("old_text", sa.Text(), nullable=True),
    sa.Column("new_text", sa.Text(), nullable=True),
    sa.Column("old_importance", sa.Float(), nullable=True),
    sa.Column("new_importance", sa.Float(), nullable=True),
    sa.Column("message_id", sa.Integer(), nullable=True),
    sa.Column("reason", sa.String(255), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index("ix_memory_history_user_id_memory_id", "user_id", "memory_id"),
)

# Episodic memory (issue 14): every turn of a user's chats (the user's and the assistant's),
# with its session, time and message; facts point to their turns through source_ids.
episodes = sa.Table(
    "episodes",
    metadata,
    sa.Column("id", MessageId, primary_key=True, autoincrement=True),
    user_column(nullable=False),
    sa.Column("session_id", sa.String(ID_LENGTH), nullable=True),
    sa.Column("message_id", MessageId, nullable=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("subject", sa.String(ID_LENGTH), nullable=True),
    sa.Column("text", sa.Text(), nullable=False),
    sa.Column("importance", sa.Float(), nullable=False),
    sa.Column("use_count", sa.Integer(), nullable=False),
    sa.Column("embedding", Embedding(), nullable=True),
    sa.Column("embedding_model", sa.String(255), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("last_used_at", UTCDateTime(), nullable=True),
    sa.Column("superseded_at", UTCDateTime(), nullable=True),
    sa.Index("ix_episodes_user_id_created_at", "user_id", "created_at"),
    sa.Index("ix_episodes_user_id_message_id", "user_id", "message_id"),
    sqlite_autoincrement=True,
)

# A long user turn's sentences, each embedded apart (issue 14): recall scores the turn by the
# best of its own vector and its sentences', so a fact said in passing inside a long request is
# found. They go with their turn (and with their user): ON DELETE CASCADE on both.
episode_sentences = sa.Table(
    "episode_sentences",
    metadata,
    sa.Column("id", MessageId, primary_key=True, autoincrement=True),
    sa.Column(
        "episode_id", MessageId, sa.ForeignKey("episodes.id", ondelete="CASCADE"), nullable=False
    ),
    user_column(nullable=False),
    sa.Column("position", sa.Integer(), nullable=False),
    sa.Column("embedding", Embedding(), nullable=False),
    sa.Index("ix_episode_sentences_user_id_episode_id", "user_id", "episode_id"),
    sa.Index("ix_episode_sentences_episode_id", "episode_id"),
    sqlite_autoincrement=True,
)

session_summaries = sa.Table(
    "session_summaries",
    metadata,
    sa.Column(
        "session_id",
        sa.String(ID_LENGTH),
        sa.ForeignKey("sessions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("summary", sa.Text(), nullable=False),
    sa.Column("upto_message_id", sa.Integer(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

personas = sa.Table(
    "personas",
    metadata,
    sa.Column("id", sa.String(ID_LENGTH), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("data", sa.JSON(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    # None: a shared persona (admins manage it); else private to that user, deleted with them
    user_column("owner_id", nullable=True, index=True),
)

# The image of an imported PNG character card (issue 17), shown as the persona's avatar.
persona_avatars = sa.Table(
    "persona_avatars",
    metadata,
    sa.Column("persona_id", sa.String(ID_LENGTH), primary_key=True),
    sa.Column("png", sa.LargeBinary(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# Per user and persona: which persona is active, and how the relationship stands.
relationships = sa.Table(
    "relationships",
    metadata,
    user_column(primary_key=True),
    sa.Column("persona_id", sa.String(ID_LENGTH), primary_key=True),
    sa.Column("familiarity", sa.Float(), nullable=False),
    sa.Column("affinity", sa.Float(), nullable=False),
    sa.Column("interactions", sa.Integer(), nullable=False),
    sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# API keys (companion/auth.py): bearer keys bound to a user, stored only as hashes.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(24), primary_key=True),
    user_column(nullable=False, index=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("admin", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
)

# OpenAI API conversations sent whole by the client (companion/openai_compat/lineage.py): one
# row per request seen, by a digest of the user and the messages up to the new turn, so that
# the next request of the conversation finds its session and a resent turn is learned once.
client_turns = sa.Table(
    "client_turns",
    metadata,
    user_column(primary_key=True),
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("session_id", sa.String(ID_LENGTH), sa.ForeignKey("sessions.id", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("message_id", sa.Integer(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)
