"""Fixtures for the cache tests: a migrated SQLite file, the real embedding model, a clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from companion.cache import CacheTable, ResponseCache
from companion.embed import MemoEmbedder, load_embedder
from companion.storage import Store, open_store


class Clock:
    """A clock the test moves by hand (TTL without sleeping)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def embedder() -> MemoEmbedder:
    """The shipped embedding model, loaded once for the whole run."""
    return load_embedder()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'cache.db'}")
    yield s
    s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_cache(
    store: Store, embedder: MemoEmbedder | None, clock: Clock, **kw: float
) -> ResponseCache:
    """A ResponseCache on `store` with small, test-friendly limits."""
    args: dict[str, float] = {
        "ttl_s": 3600,
        "max_entries": 1000,
        "lru_entries": 100,
        "cleanup_interval_s": 3600,
        **kw,
    }
    return ResponseCache(
        CacheTable(store.engine),
        embedder,
        ttl_s=args["ttl_s"],
        max_entries=int(args["max_entries"]),
        lru_entries=int(args["lru_entries"]),
        cleanup_interval_s=args["cleanup_interval_s"],
        clock=clock,
    )


@pytest.fixture
def cache(store: Store, embedder: MemoEmbedder, clock: Clock) -> Iterator[ResponseCache]:
    c = make_cache(store, embedder, clock)
    yield c
    c.close()
