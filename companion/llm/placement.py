"""Which model server serves a session: rendezvous hashing over the healthy set, with a load cap.

Each session keeps one server while that server is healthy, so its prompt prefix stays in that
server's KV cache and turn N reuses turns 1..N-1. A new (or moved) session goes to the healthy
server with the highest hash of (session, server) among those whose load is under the cap; when
every server is over it, to the least loaded. Adding or losing a server moves only the sessions
that server gains or held (rendezvous hashing's property), not everyone's.

The session -> server map lives in Redis when `redis_url` is set, so every app instance sends a
session to the same server; otherwise in this process. `round_robin` ignores sessions (the
benchmark's baseline).
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

from companion.shared.link import RedisLink

MAP_TTL_S = 7 * 24 * 3600  # a session idle this long forgets its server
LOCAL_SESSIONS = 100_000  # sessions remembered in process (LRU)


def score(session: str, server: str) -> int:
    """The rendezvous weight of `server` for `session` (stable across processes)."""
    digest = hashlib.blake2b(f"{session}\x00{server}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def ranked(session: str, servers: Sequence[str]) -> list[str]:
    """`servers` in rendezvous order for `session`: the first is its home."""
    return sorted(servers, key=lambda s: score(session, s), reverse=True)


def choose(session: str, healthy: Sequence[str], load: Callable[[str], int], cap: int) -> str:
    """The highest-ranked healthy server whose load is under `cap`; else the least loaded."""
    order = ranked(session, healthy)
    for server in order:
        if load(server) < cap:
            return server
    return min(order, key=load)


class SessionMap(Protocol):
    def get(self, session: str) -> str | None: ...

    def set(self, session: str, server: str) -> None: ...


class LocalMap:
    """The session -> server map of one instance (LRU-bounded)."""

    def __init__(self, limit: int = LOCAL_SESSIONS) -> None:
        self.limit = limit
        self._map: OrderedDict[str, str] = OrderedDict()
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
            return mapped  # its cache is there: stay even above the cap
        server = choose(session, healthy, load, self.cap)
        if mapped is not None:
            self.moves += 1
        self.sessions.set(session, server)
        return server
