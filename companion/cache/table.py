"""The persistent layer: the response_cache table (SQLite or PostgreSQL through SQLAlchemy Core)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, RowMapping

from companion.cache.base import CacheEntry
from companion.storage.schema import response_cache as t
from companion.storage.schema import response_cache_users as contributors

_UPDATABLE = [c.name for c in t.columns if c.name not in ("key", "hits")]


def rows_of_user(user_id: str) -> sa.ColumnElement[bool]:
    """The cache rows a user's words reached: their own scope's and every row they
    contributed to (shared ones too)."""
    contributed = sa.select(contributors.c.key).where(contributors.c.user_id == user_id)
    return sa.or_(t.c.scope == f"user:{user_id}", t.c.key.in_(contributed))


def _dt(epoch: float) -> datetime:
    """Epoch seconds as an aware UTC datetime."""
    return datetime.fromtimestamp(epoch, UTC)


def _epoch(value: datetime) -> float:
    """An aware datetime as epoch seconds."""
    return value.timestamp()


def entry_from_row(row: Mapping[str, Any] | RowMapping) -> CacheEntry:
    """Turn a response_cache row into a CacheEntry."""
    return CacheEntry(
        key=row["key"],
        partition=row["partition"],
        scope=row["scope"],
        message=row["message"],
        response=row["response"],
        model=row["model"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        finish_reason=row["finish_reason"],
        created_at=_epoch(row["created_at"]),
        expires_at=_epoch(row["expires_at"]),
        vector=row["embedding"],
    )


def _row_of(entry: CacheEntry, now: float) -> dict[str, Any]:
    """The column values of an entry."""
    return {
        "key": entry.key,
        "partition": entry.partition,
        "scope": entry.scope,
        "message": entry.message,
        "response": entry.response,
        "model": entry.model,
        "prompt_tokens": entry.prompt_tokens,
        "completion_tokens": entry.completion_tokens,
        "finish_reason": entry.finish_reason,
        "embedding": entry.vector,
        "size_bytes": entry.size_bytes,
        "hits": 0,
        "created_at": _dt(entry.created_at),
        "last_used_at": _dt(now),
        "expires_at": _dt(entry.expires_at),
    }


class CacheTable:
    """Rows of cached replies; one writer at a time (a lock here, SQLite's own across processes)."""

    def __init__(self, engine: Engine) -> None:
        """Use a migrated engine (open_store runs the migrations)."""
        self._engine = engine
        self._lock = threading.Lock()
        dialect = engine.dialect.name
        self._insert: Any = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}.get(dialect)
        self._upsert_stmt: Any = None

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction at a time."""
        with self._lock, self._engine.begin() as conn:
            yield conn

    def get(self, key: str, now: float) -> CacheEntry | None:
        """The live entry with this key, or None."""
        query = sa.select(t).where(t.c.key == key, t.c.expires_at > _dt(now))
        with self._engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else entry_from_row(row)

    def upsert(self, entry: CacheEntry, now: float, contributor: str | None = None) -> None:
        """Insert the entry or replace the one with its key; remember `contributor`, the user
        whose message it answers (delete_user removes the row with them)."""
        values = _row_of(entry, now)
        with self._write() as conn:
            if self._insert is None:  # another dialect: portable delete + insert
                conn.execute(sa.delete(t).where(t.c.key == entry.key))
                conn.execute(sa.insert(t).values(**values))
            else:
                conn.execute(self._upsert(), values)
            if contributor is not None:
                self._contributed(conn, entry.key, contributor)

    def _contributed(self, conn: Connection, key: str, user_id: str) -> None:
        """Add (key, user) to the contributors unless it is there."""
        row = {"key": key, "user_id": user_id}
        if self._insert is not None:
            conn.execute(self._insert(contributors).values(**row).on_conflict_do_nothing())
            return
        known = sa.select(contributors.c.key).where(
            contributors.c.key == key, contributors.c.user_id == user_id)
        if conn.execute(known).first() is None:
            conn.execute(sa.insert(contributors).values(**row))

    def _upsert(self) -> Any:
        """INSERT ... ON CONFLICT (key) DO UPDATE, built once (its values are bound per row:
        building and compiling the statement per store was half a store's time)."""
        if self._upsert_stmt is None:
            stmt = self._insert(t)
            self._upsert_stmt = stmt.on_conflict_do_update(
                index_elements=[t.c.key], set_={c: stmt.excluded[c] for c in _UPDATABLE}
            )
        return self._upsert_stmt

    def partition(self, partition: str, now: float) -> list[tuple[str, str, np.ndarray]]:
        """(key, message, vector) of a partition's live entries that have a vector."""
        query = sa.select(t.c.key, t.c.message, t.c.embedding).where(
            t.c.partition == partition, t.c.expires_at > _dt(now), t.c.embedding.is_not(None)
        )
        with self._engine.connect() as conn:
            return [(r[0], r[1], r[2]) for r in conn.execute(query)]

    def touch(self, used: Mapping[str, tuple[int, float]]) -> None:
        """Add hits and move last_used_at forward for the keys used since the last flush."""
        if not used:
            return
        stmt = (
            sa.update(t)
            .where(t.c.key == sa.bindparam("k"))
            .values(hits=t.c.hits + sa.bindparam("n"), last_used_at=sa.bindparam("at"))
        )
        params = [{"k": k, "n": n, "at": _dt(at)} for k, (n, at) in used.items()]
        with self._write() as conn:
            conn.execute(stmt, params)

    def _delete_where(self, where: sa.ColumnElement[bool]) -> list[tuple[str, str]]:
        """Delete matching rows; return their (key, partition)."""
        with self._write() as conn:
            gone = [
                (r[0], r[1]) for r in conn.execute(sa.select(t.c.key, t.c.partition).where(where))
            ]
            if gone:
                conn.execute(sa.delete(t).where(where))
        return gone

    def delete_expired(self, now: float) -> list[tuple[str, str]]:
        """Drop rows past their expiry."""
        return self._delete_where(t.c.expires_at <= _dt(now))

    def delete_scope(self, scope: str | None) -> list[tuple[str, str]]:
        """Drop every row, or one scope's rows."""
        return self._delete_where(sa.true() if scope is None else t.c.scope == scope)

    def delete_user(self, user_id: str) -> list[tuple[str, str]]:
        """Drop every row a user's words reached (rows_of_user)."""
        return self._delete_where(rows_of_user(user_id))

    def evict_oldest(self, count: int) -> list[tuple[str, str]]:
        """Drop the `count` least recently used rows."""
        oldest = sa.select(t.c.key).order_by(t.c.last_used_at.asc()).limit(count).scalar_subquery()
        return self._delete_where(t.c.key.in_(oldest))

    def delete_keys(self, keys: Iterable[str]) -> None:
        """Drop these rows."""
        keys = list(keys)
        if keys:
            with self._write() as conn:
                conn.execute(sa.delete(t).where(t.c.key.in_(keys)))

    def totals(self, now: float) -> dict[str, int]:
        """Rows, bytes, shared rows and expired rows still on disk."""
        query = sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(t.c.size_bytes), 0),
            sa.func.coalesce(sa.func.sum(sa.case((t.c.scope == "shared", 1), else_=0)), 0),
            sa.func.coalesce(sa.func.sum(sa.case((t.c.expires_at <= _dt(now), 1), else_=0)), 0),
        )
        with self._engine.connect() as conn:
            rows, size, shared, expired = conn.execute(query).one()
        return {
            "entries": int(rows),
            "bytes": int(size),
            "shared_entries": int(shared),
            "expired_entries": int(expired),
        }
