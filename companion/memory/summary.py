"""The running summary of a session once it outgrows the recent-message window.

Extractive, no model call: each user turn that falls out of the window adds one short item
(its extracted facts, else its first sentence); the newest MAX_ITEMS items are kept. It runs
after the reply, so it never delays a turn.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from companion.memory.extract import content_words, extract, sentences
from companion.storage import Store
from companion.storage.schema import messages, session_summaries
from companion.storage.store import history_start

MAX_ITEMS = 8
ITEM_CHARS = 120
SEPARATOR = "; "


def summarize_turn(text: str) -> str | None:
    """One short item for a user turn, or None for small talk."""
    facts = [c.text for c in extract(text) if c.kind != "event" and not c.forget]
    if facts:
        return ", ".join(facts)[:ITEM_CHARS].replace(SEPARATOR, ", ")
    first = next(sentences(text), "")
    if len(content_words(first)) < 2:
        return None
    first = first.replace(SEPARATOR, ", ")
    return "said: " + (first if len(first) <= ITEM_CHARS else first[: ITEM_CHARS - 3] + "...")


class SessionSummaries:
    """Reads and advances the stored summary of each session."""

    def __init__(self, store: Store) -> None:
        """Use `store`'s connections."""
        self.store = store

    def get(self, session_id: str) -> str | None:
        """The summary so far, or None."""
        query = sa.select(session_summaries.c.summary).where(
            session_summaries.c.session_id == session_id)
        with self.store.reading() as conn:
            return conn.execute(query).scalar_one_or_none()

    def advance(self, session_id: str, window: int, step: int = 0) -> str | None:
        """Fold the user turns that left the history window (the last `window` messages, moved
        on `step` at a time: Store.recent_messages) into the summary."""
        with self.store.reading() as conn:
            row = conn.execute(sa.select(session_summaries).where(
                session_summaries.c.session_id == session_id)).mappings().first()
            upto = int(row["upto_message_id"]) if row else 0
            complete = (messages.c.session_id == session_id, messages.c.status == "complete")
            count = conn.execute(sa.select(sa.func.count()).where(*complete)).scalar_one()
            start = history_start(int(count), max(window, 1), step)
            recent = conn.execute(  # the window's oldest message
                sa.select(messages.c.id).where(*complete).order_by(messages.c.id)
                .limit(1).offset(start)
            ).scalar_one_or_none() if start else None
            if recent is None:  # the window still holds the whole session
                return row["summary"] if row else None
            left = conn.execute(
                sa.select(messages.c.id, messages.c.text).where(
                    messages.c.session_id == session_id, messages.c.role == "user",
                    messages.c.status == "complete", messages.c.id > upto,
                    messages.c.id < recent).order_by(messages.c.id)).all()
        if not left:
            return row["summary"] if row else None
        items = [i for i in (row["summary"].split(SEPARATOR) if row else []) if i]
        items += [item for _, text in left if (item := summarize_turn(text))]
        summary = SEPARATOR.join(items[-MAX_ITEMS:])
        self._save(session_id, summary, int(left[-1][0]), exists=row is not None)
        return summary

    def _save(self, session_id: str, summary: str, upto: int, *, exists: bool) -> None:
        """Insert or update the row."""
        values = {"summary": summary, "upto_message_id": upto, "updated_at": datetime.now(UTC)}
        with self.store.writing() as conn:
            if exists:
                conn.execute(sa.update(session_summaries)
                             .where(session_summaries.c.session_id == session_id).values(**values))
            else:
                conn.execute(sa.insert(session_summaries).values(session_id=session_id, **values))
