"""Memory notes in a client-sent conversation: nothing the client already sent, and each note
kept where it was first recalled, so consecutive calls share their prompt up to the new turn.

A client of the OpenAI API sends the whole conversation on every call, and the KV cache reuses
the previous call's prompt only as far as the new prompt repeats it token for token. So:

- **Nothing already said is recalled.** A turn of this conversation (its session, or a turn
  whose text is one of the client's messages) and a fact learned only from such turns are left
  out: the client's messages already hold them, and recalling them would say them twice.
- **Notes stay where they were put.** The notes recalled for a user turn go just before that
  turn's message, in that call and in every later call of the conversation (anchored by the
  digest of the conversation up to that message), and an item already noted earlier in the
  conversation is not noted again. A later call thus repeats the previous prompt and only
  appends the previous reply, the new turn and that turn's new notes (if any).

Anchors live in this process (`NOTE_ANCHORS` conversations' turns, least recently used out):
after a restart, or on another worker, earlier turns' notes are gone from the prompt, which
costs one full prefill, as the KV cache itself is gone there. A note whose memory was deleted
since leaves the prompt at the next call.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from companion.anchors import Anchors
from companion.context import render_notes
from companion.memory.base import Recalled
from companion.storage import Store
from companion.storage.schema import messages as messages_table

if TYPE_CHECKING:
    from companion.chat import Companion

NOTE_ANCHORS = 20_000  # user turns with notes remembered per process (least recently used out)
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Note:
    """One recalled item as it reads in the prompt."""

    key: int  # its key in the memory index (facts even, turns odd)
    line: str
    text: str = ""  # the item's words, normalised (a turn and the fact quoting it are one)

    @classmethod
    def of(cls, recalled: Recalled, line: str) -> Note:
        return cls(recalled.memory.key, line, norm(recalled.memory.text))


def norm(text: str) -> str:
    """Lower case, one space between words."""
    return _SPACES.sub(" ", text).strip().lower()


def turn_digests(user_id: str, messages: Sequence[dict[str, Any]]) -> list[str | None]:
    """For each message, the digest of the conversation up to and including it when it is a
    user message (None for the others): the anchor of that turn's notes."""
    running = hashlib.sha256(json.dumps(user_id).encode("utf-8"))
    out: list[str | None] = []
    for m in messages:
        running.update(json.dumps(m, sort_keys=True, separators=(",", ":")).encode("utf-8"))
        out.append(running.copy().hexdigest() if m.get("role") == "user" else None)
    return out


class NoteAnchors(Anchors[str, tuple[Note, ...]]):
    """Notes per anchored user turn (by the digest of the client's turns up to it)."""

    def __init__(self, limit: int = NOTE_ANCHORS) -> None:
        super().__init__(limit)

    def put(self, key: str | None, value: Sequence[Note]) -> None:  # type: ignore[override]
        super().put(key, tuple(value))


_ANCHORS: weakref.WeakKeyDictionary[Any, NoteAnchors] = weakref.WeakKeyDictionary()
_ANCHORS_LOCK = threading.Lock()


def anchors_of(companion: Companion) -> NoteAnchors:
    """The anchors of one Companion (one per serving process)."""
    with _ANCHORS_LOCK:
        found = _ANCHORS.get(companion)
        if found is None:
            found = _ANCHORS[companion] = NoteAnchors()
        return found


@dataclass(frozen=True)
class Anchored:
    """The earlier turns' notes of one request: by message index, and every key noted."""

    before: dict[int, tuple[Note, ...]]  # message index -> notes that go just before it
    keys: frozenset[int]

    @property
    def texts(self) -> frozenset[str]:
        """The noted items' words (normalised)."""
        return frozenset(n.text for notes in self.before.values() for n in notes)

    def blocks(self) -> dict[int, str]:
        """The notes blocks as the prompt carries them, by message index."""
        lines = {i: [n.line for n in notes] for i, notes in self.before.items()}
        return {i: text for i, ls in lines.items() if (text := render_notes(ls, None))}

    def only(self, live: set[int]) -> Anchored:
        """Without the notes whose memory is gone (deleted since)."""
        before = {i: kept for i, notes in self.before.items()
                  if (kept := tuple(n for n in notes if n.key in live))}  # fmt: skip
        return Anchored(before, frozenset(n.key for ns in before.values() for n in ns))


def earlier_notes(anchors: NoteAnchors, digests: Sequence[str | None]) -> Anchored:
    """The notes anchored at the client's earlier user turns (the last message excluded)."""
    before = {i: found for i, d in enumerate(digests[:-1]) if (found := anchors.get(d))}
    return Anchored(before, frozenset(n.key for ns in before.values() for n in ns))


def with_notes(turns: list[dict[str, str]], offset: int, blocks: dict[int, str]
               ) -> list[dict[str, str]]:  # fmt: skip
    """The client's turns (turns[0] is message `offset`) with each block of notes (by message
    index) as a system message just before its user turn."""
    out: list[dict[str, str]] = []
    for j, turn in enumerate(turns):
        if text := blocks.get(j + offset):
            out.append({"role": "system", "content": text})
        out.append(turn)
    return out


def said_elsewhere(store: Store, recalled: Sequence[Recalled], session_id: str,
                   messages: Sequence[dict[str, Any]]) -> list[Recalled]:  # fmt: skip
    """The recalled items the conversation does not already hold: no turn of its session or
    with the text of one of the client's messages, no fact learned only from such turns."""
    sent = {norm(m.get("content") or "") for m in messages}
    sources = {i for r in recalled if not r.is_episode for i in r.memory.source_ids}  # type: ignore[union-attr]
    found: dict[int, tuple[str, str]] = {}
    if sources:
        with store.reading() as conn:
            rows = conn.execute(
                sa.select(messages_table.c.id, messages_table.c.session_id,
                          messages_table.c.text).where(messages_table.c.id.in_(sources))
            ).all()  # fmt: skip
        found = {row.id: (row.session_id, row.text) for row in rows}

    def here(session: str | None, text: str) -> bool:
        return session == session_id or norm(text) in sent

    kept = []
    for r in recalled:
        if r.is_episode:
            if here(r.memory.session_id, r.memory.text):  # type: ignore[union-attr]
                continue
        else:
            origin = [found[i] for i in r.memory.source_ids if i in found]  # type: ignore[union-attr]
            if origin and all(here(s, t) for s, t in origin):
                continue
        kept.append(r)
    return kept
