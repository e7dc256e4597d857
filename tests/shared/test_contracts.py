"""One test body per piece of shared state, run against the in-process backend and against
Redis (a real redis-server; no fakes): limits, session locks, invalidation bus, cache entries."""

from __future__ import annotations

import asyncio
import contextlib
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
from companion.shared.locks import LocalLocks, SessionBusy, SessionLocks
from companion.shared.redis_anchors import RedisAnchors
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


def _instances(backend: Callable[[], RedisLink] | None, wait_s: float) -> list[SessionLocks]:
    """Two instances' locks: with Redis, two links; in process, one set (one instance)."""
    first = _locks(backend, wait_s)
    return [first, first if backend is None else _locks(backend, wait_s)]


async def test_session_lock_serialises_turns(backend: Callable[[], RedisLink] | None) -> None:
    first, second = _instances(backend, 5)
    order: list[str] = []

    async def turn(locks: SessionLocks, name: str, session: str = "s1") -> None:
        async with locks.hold(session):
            order.append(f"{name} start")
            await asyncio.sleep(0.2)
            order.append(f"{name} end")

    await asyncio.gather(turn(first, "a"), turn(second, "b"), turn(second, "c", "other"))
    mine = [e for e in order if e[0] in "ab"]
    assert mine in (
        ["a start", "a end", "b start", "b end"],
        ["b start", "b end", "a start", "a end"],
    )
    assert order.index("c start") < order.index(mine[1])  # another session is not held up


async def test_session_lock_busy_past_the_wait_is_409(
    backend: Callable[[], RedisLink] | None,
) -> None:
    holder, other = _instances(backend, 0.3)
    async with holder.hold("s2"):
        with pytest.raises(SessionBusy, match="still answering an earlier message") as busy:
            async with other.hold("s2"):
                pass
    assert busy.value.status_code == 409 and busy.value.code == "session_busy"
    assert busy.value.retry_after_s >= 1
    async with other.hold("s2"):  # free again once the holder is done
        pass


async def test_session_lock_is_released_when_a_turn_fails_or_is_cancelled(
    backend: Callable[[], RedisLink] | None,
) -> None:
    holder, other = _instances(backend, 1)
    with pytest.raises(RuntimeError):
        async with holder.hold("s4"):
            raise RuntimeError("the engine failed")
    started = asyncio.Event()

    async def stuck() -> None:
        async with holder.hold("s4"):
            started.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(stuck())
    await started.wait()
    task.cancel()  # the client went away
    with contextlib.suppress(asyncio.CancelledError):
        await task
    waited = time.monotonic()
    async with other.hold("s4"):
        assert time.monotonic() - waited < 0.5


async def test_local_session_lock_serves_turns_in_arrival_order() -> None:
    locks, order = LocalLocks(5), []

    async def turn(i: int) -> None:
        async with locks.hold("s"):
            order.append(("start", i))
            await asyncio.sleep(0.01)
            order.append(("end", i))

    await asyncio.gather(*(turn(i) for i in range(4)))
    assert order == [(step, i) for i in range(4) for step in ("start", "end")]
    assert locks.busy() == 0  # nothing kept for sessions nobody holds


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


def test_notes_blocks_reach_every_instance_and_stay_local_without_redis(
    redis_server: Redis, redis_prefix: str
) -> None:
    a, b = (RedisAnchors(RedisLink(redis_server.url, redis_prefix), 10) for _ in range(2))
    a.put(41, "Notes for this reply ... - likes sailing")
    assert b.get(41) == "Notes for this reply ... - likes sailing"  # the other instance
    assert b.get(42) is None and b.get(None) is None
    redis_server.stop()
    try:
        a.put(43, "made while Redis is down")
        assert a.get(43) == "made while Redis is down"  # this process's own, as before
        assert b.get(43) is None
        assert b.get(41) is not None  # already copied into the other process
    finally:
        redis_server.start()


def test_active_sessions_per_model_server_are_shared_by_every_instance(
    redis_server: Redis, redis_prefix: str
) -> None:
    from companion.llm.placement import Placement, RedisMap

    servers = ["http://m1:8080", "http://m2:8080"]
    links = [RedisLink(redis_server.url, redis_prefix) for _ in range(2)]
    try:
        instances = [Placement(RedisMap(link)) for link in links]
        homes = [instances[i % 2].place(f"s{i}", servers, lambda _s: 0) for i in range(8)]
        # each instance saw half the sessions, yet together they split them evenly
        assert sorted(homes.count(s) for s in servers) == [4, 4]
        assert RedisMap(links[0]).active(servers) == {s: 4 for s in servers}
        # and each session stays where the other instance put it
        assert [instances[(i + 1) % 2].place(f"s{i}", servers, lambda _s: 0)
                for i in range(8)] == homes  # fmt: skip
    finally:
        for link in links:
            link.close()
