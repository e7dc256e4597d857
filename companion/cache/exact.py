"""The exact layer: an in-process LRU in front of the response_cache table, with TTL and a cap."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from companion.cache.base import CacheEntry, CacheHit, Probe
from companion.cache.entries import Entries
from companion.cache.table import CacheTable

Clock = Callable[[], float]


class ExactCache:
    """Replies by exact key: LRU first, then the shared entries (Redis, when configured), then
    the table; expired entries never come back."""

    def __init__(
        self,
        table: CacheTable,
        *,
        ttl_s: float,
        max_entries: int,
        lru_entries: int,
        clock: Clock = time.time,
        shared: Entries | None = None,
    ) -> None:
        """`max_entries` caps the table (oldest-used evicted); `lru_entries` caps the LRU."""
        self.table = table
        self.shared = shared
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.lru_entries = lru_entries
        self.clock = clock
        self._lru: OrderedDict[str, CacheEntry] = OrderedDict()
        self._used: dict[str, tuple[int, float]] = {}  # hits not yet written to the table
        self._lock = threading.Lock()
        self._rows = table.totals(clock())["entries"]
        self.evicted = 0
        self.expired = 0

    def lookup(self, probe: Probe) -> CacheHit | None:
        """The live entry with the probe's key, or None."""
        entry = self.get(probe.key.key)
        return None if entry is None else CacheHit(entry, "exact", 1.0)

    def get(self, key: str) -> CacheEntry | None:
        """The live entry with this key (LRU, then table), counted as used; None if absent."""
        now = self.clock()
        with self._lock:
            entry = self._lru.get(key)
            if entry is not None:
                if entry.expires_at <= now:
                    del self._lru[key]
                    return None
                self._lru.move_to_end(key)
                self._mark_used(key, now)
                return entry
        entry = self.shared.get(key) if self.shared is not None else None
        if entry is None:
            entry = self.table.get(key, now)
            if entry is not None and self.shared is not None:
                self.shared.put(entry)
        if entry is not None:
            with self._lock:
                self._remember(entry)
                self._mark_used(key, now)
        return entry

    def peek(self, key: str) -> CacheEntry | None:
        """The live entry with this key if the in-process LRU holds it; never reads the table
        (so it may run on the event loop) and does not count a use (see mark_used)."""
        now = self.clock()
        with self._lock:
            entry = self._lru.get(key)
            if entry is None or entry.expires_at <= now:
                return None
            self._lru.move_to_end(key)
            return entry

    def mark_used(self, key: str) -> None:
        """Count one use of an entry found by peek()."""
        now = self.clock()
        with self._lock:
            self._mark_used(key, now)

    def new_entry(self, **fields: Any) -> CacheEntry:
        """An entry stamped now, expiring after the TTL."""
        now = self.clock()
        return CacheEntry(created_at=now, expires_at=now + self.ttl_s, **fields)

    def store(self, entry: CacheEntry, contributor: str | None = None) -> list[tuple[str, str]]:
        """Keep the entry (and who contributed it); return the (key, partition) of any entries
        evicted to make room."""
        self.table.upsert(entry, self.clock(), contributor)
        if self.shared is not None:
            self.shared.put(entry)
        with self._lock:
            if entry.key not in self._lru:
                self._rows += 1
            self._remember(entry)
            over = self._rows - self.max_entries
        return self._evict() if over > 0 else []

    def remove(self, keys: list[tuple[str, str]]) -> None:
        """Forget entries already deleted from the table (here and in the shared entries)."""
        if self.shared is not None and keys:
            self.shared.delete(k for k, _ in keys)
        with self._lock:
            for key, _ in keys:
                self._lru.pop(key, None)
                self._used.pop(key, None)

    def cleanup_expired(self) -> list[tuple[str, str]]:
        """Write pending hit counts, drop expired rows and LRU entries; return what was dropped."""
        self.flush()
        gone = self.table.delete_expired(self.clock())
        self.remove(gone)
        with self._lock:
            now = self.clock()
            stale = [k for k, e in self._lru.items() if e.expires_at <= now]
            for key in stale:
                del self._lru[key]
            self._rows = max(0, self._rows - len(gone))
            self.expired += len(gone)
        return gone

    def clear(self, scope: str | None = None) -> list[tuple[str, str]]:
        """Drop every entry, or one scope's."""
        self.flush()
        gone = self.table.delete_scope(scope)
        if self.shared is not None:
            self.shared.delete(k for k, _ in gone)
        self.drop_local(scope)
        with self._lock:
            self._rows = max(0, self._rows - len(gone))
        return gone

    def drop_local(self, scope: str | None = None) -> None:
        """Forget the in-process copies (of one scope): another instance cleared them."""
        with self._lock:
            if scope is None:
                self._lru.clear()
                self._used.clear()
            else:
                for key in [k for k, e in self._lru.items() if e.scope == scope]:
                    del self._lru[key]

    def forget_user(self, user_id: str) -> list[tuple[str, str]]:
        """Drop every entry a user's words reached, in the table and in process."""
        self.flush()
        gone = self.table.delete_user(user_id)
        self.remove(gone)
        with self._lock:
            self._rows = max(0, self._rows - len(gone))
        return gone

    def flush(self) -> None:
        """Write the hit counts and last-use times gathered since the last flush."""
        with self._lock:
            used, self._used = self._used, {}
        self.table.touch(used)

    def lru_size(self) -> int:
        """Entries held in process."""
        with self._lock:
            return len(self._lru)

    def _evict(self) -> list[tuple[str, str]]:
        """Recount, then drop the least recently used rows beyond the cap (1% at a time)."""
        self.flush()
        rows = self.table.totals(self.clock())["entries"]
        over = rows - self.max_entries
        if over <= 0:
            with self._lock:
                self._rows = rows
            return []
        gone = self.table.evict_oldest(over + self.max_entries // 100)
        self.remove(gone)
        with self._lock:
            self._rows = rows - len(gone)
            self.evicted += len(gone)
        return gone

    def _mark_used(self, key: str, now: float) -> None:
        """Count a hit for the next flush (caller holds the lock)."""
        count, _ = self._used.get(key, (0, now))
        self._used[key] = (count + 1, now)

    def _remember(self, entry: CacheEntry) -> None:
        """Put the entry in the LRU, dropping the oldest beyond its cap (caller holds the lock)."""
        self._lru[entry.key] = entry
        self._lru.move_to_end(entry.key)
        while len(self._lru) > self.lru_entries:
            self._lru.popitem(last=False)
