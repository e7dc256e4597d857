"""Which session a client-sent conversation is kept in, and whether its new turn is new.

A client of the OpenAI API sends the whole conversation on every call. Each request is recorded
by a digest of the user and its messages; the next request of the same conversation repeats
those messages and adds the reply and a new turn, so the digest of its messages up to the
previous user turn names the session. A request whose own digest is known is a resend or a
regenerate: it is kept in the same session, and the memory does not learn from it again.

Two conversations that open with the same words cannot be told apart from one resent first
turn; they are kept in one session record, but each reply is made from its own request's
messages only (a client that wants them apart names its session: X-Session-Id).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from companion.storage import Store
from companion.storage.schema import client_turns


def digest(user_id: str, messages: list[dict[str, Any]]) -> str:
    """sha256 of the user and the messages (canonical JSON)."""
    text = json.dumps([user_id, messages], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Lineage:
    """Where this request's turn goes."""

    session_id: str
    digest: str
    seen: bool  # this exact request came before (a resend or a regenerate)
    new: bool = False  # a conversation not seen before: its session is made by this turn


def _previous_end(messages: list[dict[str, Any]]) -> int:
    """Length of the previous request's messages: up to the last user turn before the final
    message (0 when there is none: a conversation's first request)."""
    for i in range(len(messages) - 2, -1, -1):
        if messages[i]["role"] == "user":
            return i + 1
    return 0


def resolve(store: Store, user_id: str, messages: list[dict[str, Any]]) -> Lineage:
    """The session of the conversation `messages` continue (a new id when none is known)."""
    mine = digest(user_id, messages)
    end = _previous_end(messages)
    wanted = [mine] + ([digest(user_id, messages[:end])] if end else [])
    with store.reading() as conn:
        rows = dict(
            conn.execute(
                sa.select(client_turns.c.digest, client_turns.c.session_id).where(
                    client_turns.c.user_id == user_id, client_turns.c.digest.in_(wanted)
                )
            ).all()
        )
    if mine in rows:
        return Lineage(rows[mine], mine, True)
    if len(wanted) > 1 and wanted[1] in rows:
        return Lineage(rows[wanted[1]], mine, False)
    return Lineage(f"oa-{uuid.uuid4().hex[:24]}", mine, False, new=True)


def record(store: Store, user_id: str, lineage: Lineage, message_id: int | None) -> None:
    """Remember this request (once; a concurrent twin's row wins)."""
    if lineage.seen or not lineage.digest:  # known, or a session the client named
        return
    row = {
        "user_id": user_id,
        "digest": lineage.digest,
        "session_id": lineage.session_id,
        "message_id": message_id,
        "created_at": datetime.now(UTC),
    }
    with store.writing() as conn:
        exists = conn.execute(
            sa.select(client_turns.c.digest).where(
                client_turns.c.user_id == user_id, client_turns.c.digest == lineage.digest
            )
        ).first()
        if exists is None:
            conn.execute(client_turns.insert().values(**row))
