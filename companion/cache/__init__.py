"""The response cache: exact and semantic layers, scoped to user and context (issue 4)."""

from __future__ import annotations

from companion.cache.base import Cache, CacheEntry, CacheHit, Probe
from companion.cache.entries import Entries
from companion.cache.keys import Scope, decide_scope, make_key, normalise_message
from companion.cache.service import ResponseCache
from companion.cache.table import CacheTable
from companion.config import Settings
from companion.embed.base import Embedder
from companion.storage import Store


def open_cache(
    settings: Settings, store: Store, embedder: Embedder | None, shared: Entries | None = None
) -> ResponseCache:
    """The cache the settings ask for (the semantic layer needs the embedder; `shared` is the
    exact layer's Redis level when redis_url is set)."""
    return ResponseCache(
        CacheTable(store.engine),
        embedder if settings.semantic_cache else None,
        ttl_s=settings.cache_ttl_hours * 3600,
        max_entries=settings.cache_max_entries,
        lru_entries=settings.cache_lru_entries,
        cleanup_interval_s=settings.cleanup_interval,
        shared=shared,
    )


__all__ = [
    "Cache",
    "CacheEntry",
    "CacheHit",
    "CacheTable",
    "Probe",
    "ResponseCache",
    "Scope",
    "decide_scope",
    "make_key",
    "normalise_message",
    "open_cache",
]
