"""Everything stored about one user: export it as JSON, or delete it all."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from companion.cache.table import rows_of_user
from companion.errors import NotFound
from companion.personal import Personal
from companion.storage import Store
from companion.storage.schema import messages, response_cache, session_summaries, sessions, users


def _iso(row: dict[str, Any]) -> dict[str, Any]:
    """A row with its datetimes as ISO strings."""
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}


def export_user(store: Store, personal: Personal, user_id: str) -> dict[str, Any]:
    """Sessions with messages and summaries, memories with history, relationships, and the
    user's private personas."""
    with store.reading() as conn:
        user = conn.execute(sa.select(users).where(users.c.id == user_id)).mappings().first()
        if user is None:
            raise NotFound(f"no user {user_id!r}", field="user_id")
        rows = conn.execute(sa.select(sessions).where(sessions.c.user_id == user_id)
                            .order_by(sessions.c.created_at)).mappings().all()
        out_sessions = []
        for s in rows:
            msgs = conn.execute(sa.select(messages).where(messages.c.session_id == s["id"])
                                .order_by(messages.c.id)).mappings().all()
            summary = conn.execute(sa.select(session_summaries.c.summary).where(
                session_summaries.c.session_id == s["id"])).scalar_one_or_none()
            out_sessions.append({**_iso(dict(s)), "summary": summary,
                                 "messages": [_iso(dict(m)) for m in msgs]})
    memory = personal.memory
    mems = memory.repo.page(user_id, limit=1_000_000) if memory is not None else []
    return {
        "user": _iso(dict(user)),
        "sessions": out_sessions,
        "memories": [m.to_dict() for m in mems],
        "episodes": [e.to_dict() for e in memory.episodes(user_id, limit=10_000_000)]
        if memory is not None else [],
        "memory_history": memory.history(user_id) if memory is not None else [],
        "relationships": personal.personas.relationships(user_id),
        "personas": [p.to_dict() for p in personal.personas.all(user_id) if p.owner_id == user_id],
    }


def delete_user(store: Store, personal: Personal, user_id: str) -> dict[str, int]:
    """Delete the user row (sessions, messages, summaries, memories, history, relationships and
    private personas go with it by cascade) and every cache row their words reached, in any
    scope; returns counts. (The server drops its in-process cache entries first:
    ResponseCache.forget_user.)"""
    with store.writing() as conn:
        counts = {
            "sessions": int(conn.execute(sa.select(sa.func.count()).select_from(sessions)
                                         .where(sessions.c.user_id == user_id)).scalar_one()),
            "cache_entries": int(conn.execute(sa.delete(response_cache).where(
                rows_of_user(user_id))).rowcount),
        }
        gone = conn.execute(sa.delete(users).where(users.c.id == user_id)).rowcount
    if not gone:
        raise NotFound(f"no user {user_id!r}", field="user_id")
    if personal.memory is not None:
        personal.memory.forget_user(user_id)
    return counts
