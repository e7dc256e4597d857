"""One test body per piece of shared state, run against the in-process backend and against
Redis (a real redis-server; no fakes): limits, session locks, invalidation bus, cache entries."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from companion.cache.base import CacheEntry
from companion.cache.entries import Entries, LocalEntries
from companion.cache.redis_entries import RedisEntries
from companion.errors import Overloaded
from companion.limits import Limits, UserLimits
from companion.shared.bus import Bus, LocalBus
from companion.shared.link import RedisLink
from companion.shared.locks import LocalLocks, SessionLocks
from companion.shared.redis_bus import RedisBus
from companion.shared.redis_limits import RedisLimits
from companion.shared.redis_locks import RedisLocks
from tests.servers import Redis

BACKENDS = ["local", "redis"]


@pytest.fixture
def link(redis_server: Redis, redis_prefix: str) -> Iterator[RedisLink]:
    connection = RedisLink(redis_server.url, redis_prefix)
    yield connection
    connection.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Callable[[], RedisLink] | None:
    """None for the in-process backend; for Redis, a maker of links ("instances")."""
    if request.param == "local":
        return None
    server: Redis = request.getfixturevalue("redis_server")
    prefix: str = request.getfixturevalue("redis_prefix")
    return lambda: RedisLink(server.url, prefix)


def _limits(backend: Callable[[], RedisLink] | None, per_minute: int, concurrent: int) -> Limits:
    if backend is None:
        return UserLimits(per_minute, concurrent)
    return RedisLimits(backend(), per_minute, concurrent)


def test_limits_rate(backend: Callable[[], RedisLink] | None) -> None:
    limits = _limits(backend, per_minute=5, concurrent=10)
    for _ in range(5):
        limits.release("alice", limits.acquire("alice"))
    with pytest.raises(Overloaded, match="5 requests per minute") as refused:
        limits.acquire("alice")
    assert refused.value.retry_after_s >= 1
    limits.release("bob", limits.acquire("bob"))  # another user has their own bucket


def test_limits_concurrency(backend: Callable[[], RedisLink] | None) -> None:
    limits = _limits(backend, per_minute=100, concurrent=2)
    first, _second = limits.acquire("alice"), limits.acquire("alice")
    with pytest.raises(Overloaded, match="in flight"):
        limits.acquire("alice")
    limits.release("alice", first)
    limits.acquire("alice")


def test_redis_rate_limit_holds_across_three_instances(
    redis_server: Redis, redis_prefix: str
) -> None:
    instances = [RedisLimits(RedisLink(redis_server.url, redis_prefix), 6, 10) for _ in range(3)]
    admitted = 0
    for _ in range(4):
        for limits in instances:
            try:
                limits.release("carol", limits.acquire("carol"))
                admitted += 1
            except Overloaded:
                pass
    assert admitted == 6  # N a minute in all, not 3N


def _locks(backend: Callable[[], RedisLink] | None, wait_s: float) -> SessionLocks:
    return LocalLocks(wait_s) if backend is None else RedisLocks(backend(), wait_s, ttl_s=2)


async def test_session_lock_serialises_turns(backend: Callable[[], RedisLink] | None) -> None:
    first, second = _locks(backend, 5), _locks(backend, 5)
    if backend is None:
        second = first  # one process: one set of locks
    order: list[str] = []

    async def turn(locks: SessionLocks, name: str) -> None:
        async with locks.hold("s1"):
            order.append(f"{name} start")
            await asyncio.sleep(0.2)
            order.append(f"{name} end")

    await asyncio.gather(turn(first, "a"), turn(second, "b"))
    assert order in (
        ["a start", "a end", "b start", "b end"],
        ["b start", "b end", "a start", "a end"],
    )


async def test_session_lock_wait_is_bounded(backend: Callable[[], RedisLink] | None) -> None:
    locks = _locks(backend, 0.3)
    async with locks.hold("s2"):
        with pytest.raises(Overloaded, match="another turn"):
            async with locks.hold("s2"):
                pass
    async with locks.hold("s2"):  # free again
        pass


async def test_a_dead_instances_lock_expires(link: RedisLink) -> None:
    link.client.set(link.key("session", "s3"), "dead-instance", px=500)  # holder never releases
    started = time.monotonic()
    async with RedisLocks(link, wait_s=5, ttl_s=2).hold("s3"):
        assert 0.3 < time.monotonic() - started < 2


def _bus(backend: Callable[[], RedisLink] | None) -> Bus:
    return LocalBus() if backend is None else RedisBus(backend())


def test_bus_reaches_every_instance_within_a_second(
    backend: Callable[[], RedisLink] | None,
) -> None:
    sender = _bus(backend)
    receiver = sender if backend is None else _bus(backend)
    heard: list[tuple[str, dict[str, Any]]] = []
    got = threading.Event()
    receiver.subscribe(lambda event, data: (heard.append((event, data)), got.set()))
    started = time.monotonic()
    sender.publish("cache_cleared", scope="user:alice")
    assert got.wait(1.0), "not delivered within one second"
    assert time.monotonic() - started < 1.0
    assert heard == [("cache_cleared", {"scope": "user:alice"})]
    sender.close()
    receiver.close()


def _entry(key: str, expires_in: float) -> CacheEntry:
    now = time.time()
    return CacheEntry(
        key=key,
        partition="p",
        scope="user:alice",
        message="hi there",
        response="hello!",
        model="m",
        prompt_tokens=3,
        completion_tokens=2,
        finish_reason="stop",
        created_at=now,
        expires_at=now + expires_in,
    )


def _entries(backend: Callable[[], RedisLink] | None) -> Entries:
    return LocalEntries(100) if backend is None else RedisEntries(backend())


def test_entries_get_put_delete_expire(backend: Callable[[], RedisLink] | None) -> None:
    entries = _entries(backend)
    entry = _entry("k1", 60)
    assert entries.get("k1") is None
    entries.put(entry)
    found = entries.get("k1")
    assert found is not None and found.response == "hello!" and found.scope == "user:alice"
    entries.delete(["k1"])
    assert entries.get("k1") is None
    entries.put(_entry("k2", 0.3))
    time.sleep(0.5)
    assert entries.get("k2") is None  # past its TTL


def test_redis_down_is_a_fast_miss_then_recovers(redis_server: Redis, redis_prefix: str) -> None:
    link = RedisLink(redis_server.url, redis_prefix, cooldown_s=0.5)
    entries, limits = RedisEntries(link), RedisLimits(link, 100, 10)
    entries.put(_entry("k", 60))
    redis_server.stop()
    try:
        started = time.monotonic()
        assert entries.get("k") is None  # a miss, not an error
        assert time.monotonic() - started < 0.3  # one 100 ms timeout at most
        assert limits.acquire("dave").startswith("local")  # per-instance limits meanwhile
        started = time.monotonic()
        assert entries.get("k") is None and time.monotonic() - started < 0.01  # breaker open
        assert link.health()["status"] == "degraded"
    finally:
        redis_server.start()
    time.sleep(0.6)  # the cool-down passes; the next call tries Redis again
    assert link.health()["status"] == "ok"
    entries.put(_entry("k", 60))
    assert entries.get("k") is not None
