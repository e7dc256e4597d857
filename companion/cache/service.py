"""ResponseCache: the exact and semantic layers behind one object, with figures and a cleaner."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from companion.cache.base import CacheEntry, CacheHit, Probe
from companion.cache.entries import Entries
from companion.cache.exact import ExactCache
from companion.cache.keys import decide_scope, make_key, model_identity, persona_version
from companion.cache.semantic import SIMILARITY_THRESHOLD, SemanticCache
from companion.cache.table import CacheTable
from companion.domain import GenerationOptions
from companion.embed.base import Embedder
from companion.shared.bus import Bus
from companion.stats import percentile

log = logging.getLogger("companion.cache")
WINDOW = 1000  # recent timings kept for percentiles


class _Timings:
    """Recent durations in ms, thread-safe, with p50/p95."""

    def __init__(self) -> None:
        self._values: deque[float] = deque(maxlen=WINDOW)
        self._lock = threading.Lock()

    def add(self, ms: float) -> None:
        with self._lock:
            self._values.append(ms)

    def summary(self, name: str) -> dict[str, float]:
        """`<name>_p50_ms` and `<name>_p95_ms`."""
        with self._lock:
            values = list(self._values)
        return {
            f"{name}_p50_ms": round(percentile(values, 50), 4),
            f"{name}_p95_ms": round(percentile(values, 95), 4),
        }


class ResponseCache:
    """Exact layer first, then (with an embedder) the verified semantic layer."""

    def __init__(
        self,
        table: CacheTable,
        embedder: Embedder | None,
        *,
        ttl_s: float,
        max_entries: int,
        lru_entries: int,
        cleanup_interval_s: float,
        similarity_threshold: float = SIMILARITY_THRESHOLD,
        clock: Callable[[], float] = time.time,
        shared: Entries | None = None,
    ) -> None:
        """Without an embedder only the exact layer runs; `shared`: Redis for exact hits."""
        self.embedder = embedder
        self.exact = ExactCache(
            table, ttl_s=ttl_s, max_entries=max_entries, lru_entries=lru_entries, clock=clock,
            shared=shared,
        )
        self.bus: Bus | None = None  # set by the runtime: clear() tells every instance
        self.semantic: SemanticCache | None = None
        if embedder is not None:
            self.semantic = SemanticCache(
                table, dim=embedder.dim, threshold=similarity_threshold, clock=clock
            )
        self.cleanup_interval_s = cleanup_interval_s
        self._counts = {
            "lookups": 0,
            "exact_hits": 0,
            "semantic_hits": 0,
            "stores": 0,
            "bypassed": 0,
            "errors": 0,  # lookups or stores the database failed (served as misses / not kept)
        }
        self._lock = threading.Lock()
        self._lookup, self._semantic, self._store = _Timings(), _Timings(), _Timings()
        self._totals_at: tuple[float, dict[str, int]] | None = None
        self._stop = threading.Event()
        self._cleaner: threading.Thread | None = None

    # keys

    def probe(
        self,
        user_id: str,
        context: list[dict[str, str]],
        message: str,
        *,
        options: GenerationOptions,
        model_name: str,
        model_path: str,
        history_used: int,
        personal: bool,
    ) -> Probe:
        """The request's key: `context` is the prompt's messages before the new one."""
        scope = decide_scope(
            user_id, context, message, history_used=history_used, personal=personal
        )
        system = next((m["content"] for m in context if m["role"] == "system"), "")
        key = make_key(
            model=model_identity(model_name, model_path),
            persona=persona_version(system),
            options=options,
            scope=scope,
            message=message,
        )
        return Probe(key, message)

    # lookups and stores

    def lookup(self, probe: Probe) -> tuple[CacheHit | None, Probe]:
        """The hit (or None) and the probe, now carrying the message's vector if it was embedded."""
        started = time.perf_counter()
        hit = self.exact.lookup(probe)
        if hit is None and self.semantic is not None and self.embedder is not None:
            if probe.vector is None:
                probe = replace(probe, vector=self.embedder.embed_one(probe.message))
            hit = self.semantic.lookup(probe, self.exact.get)
            self._semantic.add((time.perf_counter() - started) * 1000)
        self._lookup.add((time.perf_counter() - started) * 1000)
        with self._lock:
            self._counts["lookups"] += 1
            if hit is not None:
                self._counts[f"{hit.layer}_hits"] += 1
        return hit, probe

    def peek(self, probe: Probe) -> CacheHit | None:
        """The exact layer's in-process LRU only: no table read, no semantic search, nothing
        counted. A caller that serves the hit calls count_hit(); one that does not, lookup()."""
        entry = self.exact.peek(probe.key.key)
        return None if entry is None else CacheHit(entry, "exact", 1.0)

    def count_hit(self, hit: CacheHit, lookup_ms: float) -> None:
        """Count a hit found by peek() and served, as lookup() counts its own."""
        self.exact.mark_used(hit.entry.key)
        self._lookup.add(lookup_ms)
        with self._lock:
            self._counts["lookups"] += 1
            self._counts[f"{hit.layer}_hits"] += 1

    def embed(self, probe: Probe) -> Probe:
        """The probe with its message vector (embedded once per request)."""
        if probe.vector is not None or self.embedder is None:
            return probe
        return replace(probe, vector=self.embedder.embed_one(probe.message))

    def store(
        self,
        probe: Probe,
        response: str,
        *,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        finish_reason: str,
        user_id: str | None = None,
    ) -> CacheEntry:
        """Keep a generated reply under the probe's key (and its vector, when it has one);
        `user_id`, whose message it answers, is remembered so forget_user() can remove it."""
        started = time.perf_counter()
        if self.semantic is not None:
            probe = self.embed(probe)
        entry = self.exact.new_entry(
            key=probe.key.key,
            partition=probe.key.partition,
            scope=probe.key.scope.label,
            message=probe.message,
            response=response,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason=finish_reason,
            vector=probe.vector,
        )
        gone = self.exact.store(entry, user_id)
        self._totals_at = None
        if self.semantic is not None:
            self.semantic.remove(gone)
            self.semantic.add(entry)
        self._store.add((time.perf_counter() - started) * 1000)
        with self._lock:
            self._counts["stores"] += 1
        return entry

    def count_error(self) -> None:
        """Count a lookup or store that failed in the database (the request went on)."""
        with self._lock:
            self._counts["errors"] += 1

    def count_bypass(self) -> None:
        """Count a request that asked not to use the cache."""
        with self._lock:
            self._counts["bypassed"] += 1

    # maintenance

    def cleanup_expired_cache(self) -> int:
        """Drop expired entries everywhere; return how many rows went."""
        gone = self.exact.cleanup_expired()
        self._totals_at = None
        if self.semantic is not None:
            self.semantic.remove(gone)
        if gone:
            log.info("cache cleanup removed %d expired entries", len(gone))
        return len(gone)

    def clear(self, scope: str | None = None) -> int:
        """Drop every entry, or those of one scope (`shared`, `user:<id>`)."""
        gone = self.exact.clear(scope)
        self._totals_at = None
        if self.semantic is not None:
            self.semantic.remove(gone)
        if self.bus is not None:
            self.bus.publish("cache_cleared", scope=scope)
        return len(gone)

    def drop_local(self, scope: str | None = None) -> None:
        """Forget in-process copies (LRU, semantic partitions): another instance cleared them."""
        self.exact.drop_local(scope)
        self._totals_at = None
        if self.semantic is not None:
            self.semantic.clear()  # partitions reload from the table when next used

    def forget_user(self, user_id: str) -> int:
        """Drop every entry a user's words reached: their scope's and those they contributed
        to in any scope (deleting a user); returns how many."""
        gone = self.exact.forget_user(user_id)
        self._totals_at = None
        if self.semantic is not None:
            self.semantic.remove(gone)
        return len(gone)

    def start(self) -> None:
        """Run cleanup_expired_cache() every cleanup_interval in a daemon thread."""
        if self._cleaner is None:
            self._cleaner = threading.Thread(
                target=self._clean_loop, name="cache-cleaner", daemon=True
            )
            self._cleaner.start()

    def close(self) -> None:
        """Stop the cleaner and write pending hit counts."""
        self._stop.set()
        if self._cleaner is not None:
            self._cleaner.join(timeout=5)
        self.exact.flush()

    def _clean_loop(self) -> None:
        """Wait an interval, clean, repeat; errors are logged, never fatal."""
        while not self._stop.wait(self.cleanup_interval_s):
            try:
                self.cleanup_expired_cache()
            except Exception:  # the loop must outlive one bad cleanup
                log.exception("cache cleanup failed")

    # figures

    def _totals(self) -> dict[str, int]:
        """Rows and bytes in the table, recounted at most once a second (stats are polled)."""
        now = time.monotonic()
        with self._lock:
            if self._totals_at is not None and now - self._totals_at[0] < 1.0:
                return self._totals_at[1]
        totals = self.exact.table.totals(self.exact.clock())
        with self._lock:
            self._totals_at = (now, totals)
        return totals

    def stats(self) -> dict[str, Any]:
        """Hit rate by layer, lookup/store percentiles, entries and bytes."""
        with self._lock:
            counts = dict(self._counts)
        lookups = counts["lookups"]
        hits = counts["exact_hits"] + counts["semantic_hits"]
        totals = self._totals()
        return {
            **counts,
            "hits": hits,
            "hit_rate": round(hits / lookups, 4) if lookups else 0.0,
            "exact_hit_rate": round(counts["exact_hits"] / lookups, 4) if lookups else 0.0,
            "semantic_hit_rate": round(counts["semantic_hits"] / lookups, 4) if lookups else 0.0,
            **self._lookup.summary("lookup"),
            **self._semantic.summary("semantic_lookup"),
            **self._store.summary("store"),
            **totals,
            "size_mb": round(totals["bytes"] / 2**20, 3),
            "lru_entries": self.exact.lru_size(),
            "vectors_in_process": self.semantic.vectors() if self.semantic else 0,
            "evicted": self.exact.evicted,
            "expired_removed": self.exact.expired,
            "semantic_rejected": self.semantic.rejected if self.semantic else 0,
            "semantic_enabled": self.semantic is not None,
        }
