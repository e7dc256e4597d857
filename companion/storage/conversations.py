"""Sessions and messages beyond one turn: rename, delete, full-text search, and the row changes
behind the chat actions (regenerate, edit-and-resend, continue)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from companion.domain import Message, Session
from companion.errors import InputError, NotFound
from companion.storage.schema import FTS_TABLE, messages, sessions
from companion.storage.store import Store, _message, _now

MARK_START, MARK_END = "\x02", "\x03"  # around the matched words of a search snippet
_WORD = re.compile(r"\w+", re.UNICODE)
MAX_TITLE = 255


@dataclass(frozen=True)
class SearchHit:
    """One message that matched a search, with its session's title and a marked snippet."""

    message_id: int
    session_id: str
    session_title: str | None
    role: str
    snippet: str
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "session_id": self.session_id,
            "session_title": self.session_title,
            "role": self.role,
            "snippet": self.snippet,
            "created_at": self.created_at.isoformat(),
        }


def rename_session(store: Store, session_id: str, title: str) -> Session:
    """Give a session a new title (1-255 characters after trimming)."""
    title = " ".join(title.split())
    if not title or len(title) > MAX_TITLE:
        raise InputError(f"title must be 1-{MAX_TITLE} characters", field="title")
    with store.writing() as conn:
        done = conn.execute(
            sa.update(sessions).where(sessions.c.id == session_id).values(title=title)
        )
        if done.rowcount == 0:
            raise NotFound(f"no session {session_id!r}", field="session_id")
    found = store.get_session(session_id)
    assert found is not None
    return found


def delete_session(store: Store, session_id: str) -> int:
    """Delete a session and its messages (and their search index rows); how many messages."""
    with store.writing() as conn:
        count = conn.execute(
            sa.select(sa.func.count()).where(messages.c.session_id == session_id)
        ).scalar_one()
        conn.execute(sa.delete(messages).where(messages.c.session_id == session_id))
        done = conn.execute(sa.delete(sessions).where(sessions.c.id == session_id))
        if done.rowcount == 0:
            raise NotFound(f"no session {session_id!r}", field="session_id")
    return int(count)


def fts_query(text: str) -> str:
    """An FTS5 MATCH expression for what a person typed: every word, the last as a prefix."""
    words = _WORD.findall(text)
    if not words:
        raise InputError("q must contain a letter or a digit", field="q")
    quoted = ['"' + w.replace('"', '""') + '"' for w in words[:16]]
    quoted[-1] += "*"
    return " ".join(quoted)


def search_messages(store: Store, user_id: str, text: str, limit: int = 20) -> list[SearchHit]:
    """A user's messages (shown ones) matching every word of `text`, best match first."""
    with store.reading() as conn:
        if conn.dialect.name == "sqlite":
            rows = _search_sqlite(conn, user_id, fts_query(text), limit)
        else:
            rows = _search_postgres(conn, user_id, text, limit)
    return [
        SearchHit(
            message_id=int(r["id"]),
            session_id=r["session_id"],
            session_title=r["title"],
            role=r["role"],
            snippet=r["snippet"],
            created_at=r["created_at"],
        )
        for r in rows
    ]


def _search_sqlite(conn: Connection, user_id: str, match: str, limit: int) -> list[Any]:
    """FTS5 with bm25 ranking and a snippet of about 16 words."""
    sql = sa.text(
        f"SELECT m.id, m.session_id, m.role, m.created_at, s.title, "
        f"snippet({FTS_TABLE}, 0, :a, :b, '…', 16) AS snippet "
        f"FROM {FTS_TABLE} JOIN messages m ON m.id = {FTS_TABLE}.rowid "
        f"JOIN sessions s ON s.id = m.session_id "
        f"WHERE {FTS_TABLE} MATCH :q AND s.user_id = :u AND m.active "
        f"ORDER BY bm25({FTS_TABLE}) LIMIT :n"
    ).columns(created_at=messages.c.created_at.type)
    params = {"q": match, "u": user_id, "n": limit, "a": MARK_START, "b": MARK_END}
    return list(conn.execute(sql, params).mappings())


def _search_postgres(conn: Connection, user_id: str, text: str, limit: int) -> list[Any]:
    """PostgreSQL's tsvector search (the GIN index of migration 0007), ts_rank ordered."""
    sql = sa.text(
        "SELECT m.id, m.session_id, m.role, m.created_at, s.title, "
        "ts_headline('simple', m.text, q, 'StartSel=' || :a || ', StopSel=' || :b || "
        "', MaxWords=16, MinWords=4') AS snippet "
        "FROM messages m JOIN sessions s ON s.id = m.session_id, "
        "plainto_tsquery('simple', :q) q "
        "WHERE to_tsvector('simple', m.text) @@ q AND s.user_id = :u AND m.active "
        "ORDER BY ts_rank(to_tsvector('simple', m.text), q) DESC LIMIT :n"
    ).columns(created_at=messages.c.created_at.type)
    params = {"q": text, "u": user_id, "n": limit, "a": MARK_START, "b": MARK_END}
    return list(conn.execute(sql, params).mappings())


def get_message(store: Store, message_id: int) -> Message:
    """One message by id (NotFound when absent)."""
    with store.reading() as conn:
        row = conn.execute(sa.select(messages).where(messages.c.id == message_id)).mappings()
        first = row.first()
    if first is None:
        raise NotFound(f"no message {message_id}", field="message_id")
    return _message(first)


def active_messages(store: Store, session_id: str) -> list[Message]:
    """The messages a session shows now, oldest first."""
    query = (
        sa.select(messages)
        .where(messages.c.session_id == session_id, messages.c.active == sa.true())
        .order_by(messages.c.id)
    )
    with store.reading() as conn:
        return [_message(r) for r in conn.execute(query).mappings()]


def retire_from(store: Store, session_id: str, first_id: int) -> int:
    """Take a message and every later one of its session out of the conversation (kept)."""
    with store.writing() as conn:
        done = conn.execute(
            sa.update(messages)
            .where(messages.c.session_id == session_id, messages.c.id >= first_id)
            .values(active=False)
        )
    return int(done.rowcount)


def reactivate(store: Store, message_ids: list[int]) -> None:
    """Put retired messages back into their conversation."""
    with store.writing() as conn:
        conn.execute(sa.update(messages).where(messages.c.id.in_(message_ids)).values(active=True))


def group_replies(store: Store, group: int, message_ids: list[int]) -> None:
    """Mark replies as alternatives of one another (the group id is the first reply's)."""
    with store.writing() as conn:
        conn.execute(
            sa.update(messages).where(messages.c.id.in_(message_ids)).values(alt_group=group)
        )


def extend_reply(
    store: Store,
    message_id: int,
    more: str,
    *,
    asked_id: int,
    finish_reason: str,
    tokens: int,
    timings: dict[str, float],
) -> Message:
    """Append continued text to a reply; it and the message it answers become complete."""
    with store.writing() as conn:
        conn.execute(sa.update(messages).where(messages.c.id == asked_id).values(status="complete"))
        row = conn.execute(sa.select(messages).where(messages.c.id == message_id)).mappings()
        old = _message(row.one())
        conn.execute(
            sa.update(messages)
            .where(messages.c.id == message_id)
            .values(
                text=old.text + more,
                finish_reason=finish_reason,
                status="complete",
                token_count=(old.token_count or 0) + tokens,
                timings={**old.timings, **timings},
            )
        )
        conn.execute(
            sa.update(sessions).where(sessions.c.id == old.session_id).values(updated_at=_now())
        )
        row = conn.execute(sa.select(messages).where(messages.c.id == message_id)).mappings()
        return _message(row.one())
