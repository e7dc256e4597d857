"""The exact layer on a real SQLite file: hits, TTL, cleanup, eviction, restarts, figures."""

from __future__ import annotations

import sqlalchemy as sa

from companion.cache import Probe, ResponseCache
from companion.cache.keys import decide_scope, make_key
from companion.domain import GenerationOptions
from companion.storage import Store
from companion.storage.schema import response_cache
from tests.cache.conftest import Clock, make_cache

SYSTEM = [{"role": "system", "content": "You are Nova."}]


def probe(message: str, user: str = "u", history_used: int = 0) -> Probe:
    scope = decide_scope(user, SYSTEM, message, history_used=history_used, personal=False)
    key = make_key(
        model="m", persona="p", options=GenerationOptions(), scope=scope, message=message
    )
    return Probe(key, message)


def keep(cache: ResponseCache, message: str, reply: str, user: str = "u") -> None:
    cache.store(
        probe(message, user),
        reply,
        model="m",
        prompt_tokens=5,
        completion_tokens=3,
        finish_reason="stop",
    )


def test_store_then_exact_hit_ignoring_case_and_spaces(store: Store, clock: Clock) -> None:
    cache = make_cache(store, None, clock)
    keep(cache, "Name three fruits.", "Apple, pear, plum.")
    hit, _ = cache.lookup(probe("name  three FRUITS."))
    assert hit is not None and hit.layer == "exact" and hit.entry.response == "Apple, pear, plum."
    miss, _ = cache.lookup(probe("Name three fruits!"))
    assert miss is None


def test_entries_expire_after_the_ttl(store: Store, clock: Clock) -> None:
    cache = make_cache(store, None, clock, ttl_s=60)
    keep(cache, "Hello?", "Hi!")
    clock.advance(59)
    assert cache.lookup(probe("Hello?"))[0] is not None
    clock.advance(2)
    assert cache.lookup(probe("Hello?"))[0] is None
    fresh = make_cache(store, None, clock, ttl_s=60)  # not from the table either
    assert fresh.lookup(probe("Hello?"))[0] is None


def test_cleanup_removes_expired_rows_only(store: Store, clock: Clock) -> None:
    cache = make_cache(store, None, clock, ttl_s=100)
    keep(cache, "old one", "x")
    clock.advance(60)
    keep(cache, "new one", "y")
    clock.advance(50)
    assert cache.cleanup_expired_cache() == 1
    with store.engine.connect() as conn:
        left = conn.execute(sa.select(response_cache.c.message)).scalars().all()
    assert left == ["new one"]
    assert cache.stats()["expired_removed"] == 1
    assert cache.cleanup_expired_cache() == 0


def test_cleaner_thread_runs_every_interval(store: Store) -> None:
    clock = Clock()
    cache = make_cache(store, None, clock, ttl_s=10, cleanup_interval_s=0.05)
    keep(cache, "short lived", "x")
    clock.advance(20)
    cache.start()
    try:
        for _ in range(100):
            if cache.stats()["entries"] == 0:
                break
            import time

            time.sleep(0.05)
        assert cache.stats()["entries"] == 0
    finally:
        cache.close()


def test_size_cap_evicts_the_least_recently_used(store: Store, clock: Clock) -> None:
    cache = make_cache(store, None, clock, max_entries=5, lru_entries=2)
    for i in range(5):
        keep(cache, f"question {i}", f"answer {i}")
        clock.advance(1)
    assert cache.lookup(probe("question 0"))[0] is not None  # used: now the newest
    clock.advance(1)
    keep(cache, "question 5", "answer 5")
    stats = cache.stats()
    assert stats["entries"] == 5 and stats["evicted"] == 1
    assert cache.lookup(probe("question 1"))[0] is None  # the least recently used went
    assert cache.lookup(probe("question 0"))[0] is not None


def test_entries_survive_a_restart(store: Store, clock: Clock) -> None:
    first = make_cache(store, None, clock)
    keep(first, "What is a haiku?", "A short poem.")
    first.close()
    second = make_cache(store, None, clock)
    hit, _ = second.lookup(probe("What is a haiku?"))
    assert hit is not None and hit.entry.response == "A short poem."


def test_clear_by_scope_and_all(store: Store, clock: Clock) -> None:
    cache = make_cache(store, None, clock)
    keep(cache, "shared question", "x")
    cache.store(
        probe("mine", "alice", history_used=2),
        "y",
        model="m",
        prompt_tokens=1,
        completion_tokens=1,
        finish_reason="stop",
    )
    assert cache.clear("user:alice") == 1
    assert cache.lookup(probe("mine", "alice", history_used=2))[0] is None
    assert cache.lookup(probe("shared question"))[0] is not None
    assert cache.clear() == 1
    assert cache.stats()["entries"] == 0


def test_stats_count_layers_times_and_sizes(store: Store, clock: Clock) -> None:
    cache = make_cache(store, None, clock)
    keep(cache, "a question", "an answer")
    cache.lookup(probe("a question"))
    cache.lookup(probe("another question"))
    cache.count_bypass()
    stats = cache.stats()
    assert stats["lookups"] == 2 and stats["exact_hits"] == 1 and stats["hit_rate"] == 0.5
    assert stats["bypassed"] == 1 and stats["stores"] == 1
    assert stats["entries"] == 1 and stats["bytes"] > 0
    assert stats["lookup_p50_ms"] > 0 and stats["store_p50_ms"] > 0
