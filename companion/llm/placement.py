"""Which model server serves a session: rendezvous hashing over the healthy set, with load caps.

Each session keeps one server while that server is healthy, so its prompt prefix stays in that
server's KV cache and turn N reuses turns 1..N-1. A new (or moved) session goes to the healthy
server with the highest hash of (session, server) among those under both caps: requests in
flight under `cap`, and active sessions (a turn within ACTIVE_S) no more than the even share
after placing it (consistent hashing with bounded loads, Mirrokni et al. 2018). The second cap
matters because a server keeps only so many prompts (its slots, its prompt cache): rendezvous
alone puts 5 or 6 of 8 sessions on one of two servers about 3 times in 4, and that server's
slots then evict each other's prompts while the other's sit idle. When no server is under both,
the first under the request cap; when every server is over that, the least loaded. Losing a
server moves only the sessions it held, not everyone's.

The session -> server map lives in Redis when `redis_url` is set, so every app instance sends a
session to the same server; otherwise in this process. `round_robin` ignores sessions (the
benchmark's baseline).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from companion.shared.link import RedisLink

MAP_TTL_S = 7 * 24 * 3600  # a session idle this long forgets its server
LOCAL_SESSIONS = 100_000  # sessions remembered in process (LRU)
ACTIVE_S = 60.0  # a session with no turn for this long no longer counts on its server


def score(session: str, server: str) -> int:
    """The rendezvous weight of `server` for `session` (stable across processes)."""
    digest = hashlib.blake2b(f"{session}\x00{server}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def ranked(session: str, servers: Sequence[str]) -> list[str]:
    """`servers` in rendezvous order for `session`: the first is its home."""
    return sorted(servers, key=lambda s: score(session, s), reverse=True)


def choose(
    session: str,
    healthy: Sequence[str],
    load: Callable[[str], int],
    cap: int,
    active: Mapping[str, int] | None = None,
) -> str:
    """The highest-ranked healthy server whose load is under `cap` and whose `active` sessions
    are below the even share once this one is placed; else the highest-ranked under `cap`; else
    the least loaded."""
    order = ranked(session, healthy)
    counts = active or {}
    share = math.ceil((sum(counts.get(s, 0) for s in healthy) + 1) / len(healthy))
    under = [server for server in order if load(server) < cap]
    for server in under:
        if counts.get(server, 0) < share:
            return server
    return under[0] if under else min(order, key=load)


class SessionMap(Protocol):
    def get(self, session: str) -> str | None: ...

    def set(self, session: str, server: str) -> None: ...

    def seen(self, session: str, server: str) -> None:
        """`session` had a turn on `server` now."""
        ...

    def active(self, servers: Sequence[str]) -> dict[str, int]:
        """Sessions with a turn within ACTIVE_S, by server."""
        ...


class LocalMap:
    """The session -> server map of one instance (LRU-bounded), and its active sessions."""

    def __init__(self, limit: int = LOCAL_SESSIONS, clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self.clock = clock
        self._map: OrderedDict[str, str] = OrderedDict()
        self._seen: dict[str, dict[str, float]] = {}  # server -> session -> last turn
        self._lock = threading.Lock()

    def get(self, session: str) -> str | None:
        with self._lock:
            server = self._map.get(session)
            if server is not None:
                self._map.move_to_end(session)
            return server

    def set(self, session: str, server: str) -> None:
        with self._lock:
            self._map[session] = server
            self._map.move_to_end(session)
            while len(self._map) > self.limit:
                self._map.popitem(last=False)

    def seen(self, session: str, server: str) -> None:
        now = self.clock()
        with self._lock:
            for other, sessions in self._seen.items():
                if other != server:
                    sessions.pop(session, None)  # it moved
            self._seen.setdefault(server, {})[session] = now

    def active(self, servers: Sequence[str]) -> dict[str, int]:
        since = self.clock() - ACTIVE_S
        with self._lock:  # sessions past the window leave as they are counted
            for sessions in self._seen.values():
                for old in [k for k, t in sessions.items() if t < since]:
                    del sessions[old]
            return {s: len(self._seen.get(s, {})) for s in servers}


class RedisMap:
    """The map in Redis, shared by every instance; the local one while Redis is down."""

    def __init__(self, link: RedisLink, ttl_s: int = MAP_TTL_S) -> None:
        self.link = link
        self.ttl_s = ttl_s
        self.local = LocalMap()

    def get(self, session: str) -> str | None:
        key = self.link.key("placement", session)
        raw = self.link.call(lambda c: c.get(key), None)
        if raw is None:
            return self.local.get(session)
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def set(self, session: str, server: str) -> None:
        self.local.set(session, server)
        key = self.link.key("placement", session)
        self.link.call(lambda c: c.set(key, server, ex=self.ttl_s), None)

    def _active_key(self, server: str) -> str:
        return self.link.key("placement-active", server)

    def seen(self, session: str, server: str) -> None:
        """A sorted set per server: session -> time of its last turn (a session that moved
        ages out of its old server's set within ACTIVE_S)."""
        self.local.seen(session, server)
        key, now = self._active_key(server), time.time()

        def write(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            pipe.zadd(key, {session: now})
            pipe.zremrangebyscore(key, "-inf", now - ACTIVE_S)
            pipe.expire(key, int(ACTIVE_S) * 2)
            pipe.execute()

        self.link.call(write, None)

    def active(self, servers: Sequence[str]) -> dict[str, int]:
        since = time.time() - ACTIVE_S

        def count(client: Any) -> dict[str, int]:
            pipe = client.pipeline(transaction=False)
            for server in servers:
                pipe.zcount(self._active_key(server), since, "+inf")
            return dict(zip(servers, (int(n) for n in pipe.execute()), strict=True))

        return self.link.call(count, None) or self.local.active(servers)


class Placement:
    """Session-affine (or round-robin) choice of a server among the healthy ones."""

    def __init__(self, sessions: SessionMap, mode: str = "affinity", cap: int = 8) -> None:
        self.sessions = sessions
        self.mode = mode
        self.cap = cap
        self._turn = itertools.count()
        self.moves = 0  # sessions whose server was down and that went to another

    def place(self, session: str | None, healthy: Sequence[str], load: Callable[[str], int]) -> str:
        """The server for this request of `session` (None: no session, any server)."""
        if not healthy:
            raise ValueError("no healthy server")
        if self.mode == "round_robin" or session is None:
            return healthy[next(self._turn) % len(healthy)]
        mapped = self.sessions.get(session)
        if mapped in healthy:
            self.sessions.seen(session, mapped)
            return mapped  # its cache is there: stay even above the caps
        server = choose(session, healthy, load, self.cap, self.sessions.active(healthy))
        if mapped is not None:
            self.moves += 1
        self.sessions.set(session, server)
        self.sessions.seen(session, server)
        return server
