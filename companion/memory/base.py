"""Memory records and the MemoryStore protocol: what a memory is, what recall returns."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from companion.embed.base import Vector

# explicit: "remember that ..."; profile: name, age, home, work, family, pets;
# preference: likes and dislikes; plan; feeling; event: other first-person statements.
Kind = Literal["explicit", "profile", "preference", "plan", "feeling", "event"]
Event = Literal["ADD", "UPDATE", "DELETE", "NONE"]

# Starting importance per kind: explicit requests and personal facts high, chatter low.
BASE_IMPORTANCE: dict[str, float] = {
    "explicit": 1.0,
    "profile": 0.8,
    "preference": 0.6,
    "plan": 0.55,
    "feeling": 0.4,
    "event": 0.25,  # under min_importance: an episode fades after days_old unless recalled
}
REPEAT_BOOST = 0.1  # the same fact said again
RECALL_BOOST = 0.02  # a memory that was chosen for a prompt


@dataclass(frozen=True)
class Candidate:
    """A fact extracted from one user turn, before reconciliation."""

    text: str
    kind: Kind
    topics: tuple[str, ...] = ()
    slot: str | None = None  # one value per slot: a new value UPDATEs the old one
    subject: str | None = None  # who it is about; None = the user
    importance: float = 0.5
    forget: bool = False  # "forget that ...": DELETE what matches


@dataclass(frozen=True)
class Memory:
    """One stored memory of one user."""

    id: int
    user_id: str
    kind: str
    slot: str | None
    subject: str | None
    text: str
    topics: tuple[str, ...]
    importance: float
    use_count: int
    source_ids: tuple[int, ...]
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None
    embedding: Vector | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (no embedding)."""
        return {
            "id": self.id,
            "user_id": self.user_id,
            "kind": self.kind,
            "slot": self.slot,
            "subject": self.subject,
            "text": self.text,
            "topics": list(self.topics),
            "importance": round(self.importance, 3),
            "use_count": self.use_count,
            "source_ids": list(self.source_ids),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
        }


    @property
    def key(self) -> int:
        """The memory's key in the recall index (facts even, episodes odd)."""
        return self.id * 2

    @property
    def is_episode(self) -> bool:
        """False: a fact (see Episode)."""
        return False


@dataclass(frozen=True)
class Episode:
    """One chat turn kept as episodic memory: the words as said, by whom, where and when.

    The user's turns and the assistant's replies are both kept (role), so "what did you
    recommend" can be answered; only the user's turns ever become facts (memories).
    """

    id: int
    user_id: str
    session_id: str | None
    message_id: int | None
    role: str  # "user" or "assistant"
    subject: str | None  # who spoke when not the user or the companion (a LoCoMo speaker)
    text: str
    importance: float
    use_count: int
    created_at: datetime
    last_used_at: datetime | None
    embedding: Vector | None = field(default=None, repr=False, compare=False)
    superseded_at: datetime | None = None  # a fact it told has since changed
    # a long user turn's sentence vectors (one row each; episode_sentences), else None
    sentence_vectors: Vector | None = field(default=None, repr=False, compare=False)

    kind = "episode"
    slot = None
    topics: tuple[str, ...] = ()

    @property
    def key(self) -> int:
        """The episode's key in the recall index (facts even, episodes odd)."""
        return self.id * 2 + 1

    @property
    def is_episode(self) -> bool:
        """True: a turn, not a fact."""
        return True

    @property
    def updated_at(self) -> datetime:
        """An episode never changes: its time is when it was said."""
        return self.created_at

    @property
    def source_ids(self) -> tuple[int, ...]:
        """The message it was (one id, or none when fed without one)."""
        return () if self.message_id is None else (self.message_id,)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (no embedding)."""
        return {
            "id": self.id,
            "type": "episode",
            "user_id": self.user_id,
            "session_id": self.session_id,
            "message_id": self.message_id,
            "role": self.role,
            "subject": self.subject,
            "text": self.text,
            "importance": round(self.importance, 3),
            "use_count": self.use_count,
            "source_ids": list(self.source_ids),
            "created_at": self.created_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
            "superseded_at": self.superseded_at.isoformat() if self.superseded_at else None,
        }


Item = Memory | Episode  # what recall ranks


@dataclass(frozen=True)
class Recalled:
    """A fact or a turn chosen for a prompt, with its score and the parts that made it up.

    `snippet`: the part of a turn that matched (for a fact, of its source turn when that
    was found too), short enough for the prompt.
    """

    memory: Item
    score: float
    reasons: dict[str, Any]
    snippet: str | None = None

    @property
    def is_episode(self) -> bool:
        """A turn (True) or a fact (False)."""
        return self.memory.is_episode

    def to_dict(self) -> dict[str, Any]:
        """The item plus `type`, `score`, `reasons` and `snippet`."""
        return {**self.memory.to_dict(), "type": "episode" if self.is_episode else "fact",
                "score": round(self.score, 4), "reasons": self.reasons, "snippet": self.snippet}


@dataclass(frozen=True)
class Change:
    """One reconciliation outcome, as written to memory_history."""

    event: Event
    memory_id: int
    old_text: str | None
    new_text: str | None
    reason: str


@dataclass(frozen=True)
class CleanupReport:
    """What one cleanup pass removed."""

    expired: int
    over_limit: int
    users: int
    episodes_expired: int = 0
    episodes_over_limit: int = 0

    def to_dict(self) -> dict[str, int]:
        """Counts by reason."""
        return {"expired": self.expired, "over_limit": self.over_limit, "users": self.users,
                "episodes_expired": self.episodes_expired,
                "episodes_over_limit": self.episodes_over_limit}


class MemoryStore(Protocol):
    """Long-term memory as the chat service uses it."""

    def observe(self, user_id: str, text: str, message_id: int | None) -> list[Change]:
        """Extract facts from a user turn and reconcile them with what is stored."""
        ...

    def recall(
        self, user_id: str, query: str, vector: Vector | None = None, k: int | None = None
    ) -> list[Recalled]:
        """The best `k` memories of `user_id` for `query`, with reasons."""
        ...

    def mark_used(self, user_id: str, ids: Sequence[int]) -> None:
        """Memories that went into a prompt."""
        ...

    def cleanup(self, user_id: str | None = None) -> CleanupReport:
        """Apply the expiry and per-user limit policy."""
        ...


class SearchIndex(Protocol):
    """Full-text and vector search over users' memories: in process on SQLite (index.py),
    in the database on PostgreSQL (pg_index.py)."""

    def ensure(self, user_id: str, load: Callable[[str], list[Memory]]) -> None:
        """Make the user's memories searchable (load them with `load` where that is needed)."""
        ...

    def put_many(self, user_id: str, items: Iterable[Memory]) -> None:
        """Memories just written."""
        ...

    def remove(self, user_id: str, ids: Iterable[int]) -> None:
        """Memories just deleted."""
        ...

    def drop(self, user_id: str) -> None:
        """Forget whatever is held for the user."""
        ...

    def memories(self, user_id: str) -> dict[int, Memory]:
        """Every searchable memory of the user by id."""
        ...

    def fetch(self, user_id: str, ids: Iterable[int]) -> dict[int, Memory]:
        """These memories of the user by id."""
        ...

    def text_search(self, user_id: str, query: str, limit: int = 50,
                    column: str | None = None) -> list[tuple[int, float]]:
        """(id, score) best first; the score is negative, lower is better (bm25's sign)."""
        ...

    def vector_search(self, user_id: str, vector: Vector,
                      limit: int = 50) -> list[tuple[int, float]]:
        """(id, cosine similarity) best first."""
        ...

    def close(self) -> None:
        """Free what the index holds."""
        ...
