"""The exact cache layer in Redis: one string per key (JSON, no vector), expiring with its TTL.

Keys are the cache keys as they are (model, persona, options, scope and message hashed), so
the scopes are the same as on one instance and a user's entry never reaches another user.
Redis down or slow: a miss (the database table still answers), after at most 100 ms.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict

from companion.cache.base import CacheEntry
from companion.shared.link import RedisLink

BATCH = 500


class RedisEntries:
    """Cached replies in Redis, shared by every instance with the same prefix."""

    def __init__(self, link: RedisLink, clock: Callable[[], float] = time.time) -> None:
        self.link = link
        self.clock = clock

    def _key(self, key: str) -> str:
        return self.link.key("cache", key)

    def get(self, key: str) -> CacheEntry | None:
        """The entry, or None (absent, expired, or Redis unavailable)."""
        raw = self.link.call(lambda c: c.get(self._key(key)), None)
        if raw is None:
            return None
        entry = CacheEntry(**json.loads(raw))
        return entry if entry.expires_at > self.clock() else None

    def put(self, entry: CacheEntry) -> None:
        """Keep the entry until its expires_at (Redis drops it then)."""
        ttl_ms = int((entry.expires_at - self.clock()) * 1000)
        if ttl_ms <= 0:
            return
        fields = asdict(entry)
        fields.pop("vector")
        value = json.dumps(fields)
        self.link.call(lambda c: c.set(self._key(entry.key), value, px=ttl_ms), None)

    def delete(self, keys: Iterable[str]) -> None:
        """Drop these keys."""
        names = [self._key(k) for k in keys]
        for start in range(0, len(names), BATCH):
            chunk = names[start : start + BATCH]
            self.link.call(lambda c, chunk=chunk: c.delete(*chunk), None)
