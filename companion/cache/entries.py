"""Cached replies by exact key, shared by instances: the `Entries` interface and its in-process
backend. RedisEntries (redis_entries.py) is the shared one: a reply cached by one instance is
a hit on every other, and Redis drops it when its TTL (cache_ttl_hours) runs out.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Protocol

from companion.cache.base import CacheEntry


class Entries(Protocol):
    """Entries by key with their own expiry (the exact layer's second level)."""

    def get(self, key: str) -> CacheEntry | None:
        """The live entry with this key, or None."""
        ...

    def put(self, entry: CacheEntry) -> None:
        """Keep the entry until its expires_at."""
        ...

    def delete(self, keys: Iterable[str]) -> None:
        """Drop these keys."""
        ...


class LocalEntries:
    """An LRU of at most `capacity` entries in this process, expired entries never returned."""

    def __init__(self, capacity: int, clock: Callable[[], float] = time.time) -> None:
        self.capacity = capacity
        self.clock = clock
        self._items: OrderedDict[str, CacheEntry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> CacheEntry | None:
        """The live entry, moved to the LRU's young end."""
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                return None
            if entry.expires_at <= self.clock():
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return entry

    def put(self, entry: CacheEntry) -> None:
        """Keep the entry, dropping the oldest beyond capacity."""
        with self._lock:
            self._items[entry.key] = entry
            self._items.move_to_end(entry.key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def delete(self, keys: Iterable[str]) -> None:
        """Drop these keys."""
        with self._lock:
            for key in keys:
                self._items.pop(key, None)
