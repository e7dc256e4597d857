"""The Cache protocol and its records: what is stored, what a lookup finds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from companion.cache.keys import CacheKey
from companion.embed.base import Vector

Layer = Literal["exact", "semantic"]


@dataclass(frozen=True)
class CacheEntry:
    """One cached reply and where it may be served."""

    key: str
    partition: str
    scope: str
    message: str  # the message as the user wrote it (the verifier reads its capitals)
    response: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    created_at: float  # epoch seconds
    expires_at: float
    vector: Vector | None = field(default=None, compare=False, repr=False)

    @property
    def size_bytes(self) -> int:
        """Bytes of the row's text and vector (what the size figures add up)."""
        text = len(self.message.encode()) + len(self.response.encode())
        return text + (self.vector.nbytes if self.vector is not None else 0) + 256


@dataclass(frozen=True)
class CacheHit:
    """A reply found for a request, the layer that found it and how alike the messages were."""

    entry: CacheEntry
    layer: Layer
    similarity: float


@dataclass(frozen=True)
class Probe:
    """One request's cache identity: its key, its message and (once embedded) its vector."""

    key: CacheKey
    message: str
    vector: Vector | None = None


class Cache(Protocol):
    """A response cache layer: look up, store, expire, clear and report."""

    def lookup(self, probe: Probe) -> CacheHit | None:
        """The cached reply for this request, or None."""
        ...

    def store(self, entry: CacheEntry) -> None:
        """Keep a reply (replaces one with the same key)."""
        ...

    def cleanup_expired(self) -> int:
        """Drop expired entries; return how many."""
        ...

    def clear(self, scope: str | None = None) -> int:
        """Drop every entry (or one scope's); return how many."""
        ...

    def stats(self) -> dict[str, Any]:
        """Counters and sizes."""
        ...
