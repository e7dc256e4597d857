"""bench cache --database-url/--redis-url: the exact layer on the shared backends beside SQLite.

Every lookup here misses the in-process LRU on purpose (lru_entries=0), as a lookup on another
instance would: SQLite's table (`exact_cold_lookup_*`), PostgreSQL's table (`pg_table_lookup_*`)
and, with Redis, Redis in front of PostgreSQL (`pg_lookup_*`, the issue's <= 1 ms goal).
"""

from __future__ import annotations

import tempfile
import time
import uuid

from companion.bench.shared import prefixed, scratch_database
from companion.cache import Probe, ResponseCache, open_cache
from companion.cache.redis_entries import RedisEntries
from companion.config import Settings
from companion.shared.link import RedisLink
from companion.stats import percentile
from companion.storage import Store, open_store
from companion.turn import options_from


def _probes(cache: ResponseCache, settings: Settings, messages: list[str]) -> list[Probe]:
    """One shared-scope probe per distinct message."""
    opts = options_from(settings)
    system = [{"role": "system", "content": settings.system_prompt}]
    return [
        cache.probe(
            "visitor",
            system,
            m,
            options=opts,
            model_name="bench",
            model_path="bench",
            history_used=0,
            personal=False,
        )
        for m in dict.fromkeys(messages)
    ]


def _time(cache: ResponseCache, probes: list[Probe]) -> dict[str, float]:
    """Store every probe's reply, then look each up twice (cold LRU); ms percentiles."""
    stores, lookups = [], []
    for probe in probes:
        started = time.perf_counter()
        cache.store(
            probe,
            "a cached reply",
            model="bench",
            prompt_tokens=5,
            completion_tokens=3,
            finish_reason="stop",
        )
        stores.append((time.perf_counter() - started) * 1000)
    for _ in range(2):
        for probe in probes:
            started = time.perf_counter()
            hit = cache.exact.lookup(probe)
            lookups.append((time.perf_counter() - started) * 1000)
            assert hit is not None, "a stored reply was not found"
    return {
        "lookup_p50_ms": round(percentile(lookups, 50), 4),
        "lookup_p95_ms": round(percentile(lookups, 95), 4),
        "store_p50_ms": round(percentile(stores, 50), 4),
    }


def _cache(url: str, settings: Settings, redis: RedisLink | None) -> tuple[ResponseCache, Store]:
    """The exact layer as configured, but with no in-process LRU and no semantic layer."""
    store = open_store(url)
    cold = settings.model_copy(update={"cache_lru_entries": 0, "semantic_cache": False})
    shared = RedisEntries(redis) if redis is not None else None
    return open_cache(cold, store, None, shared), store


def shared_cache_figures(
    settings: Settings, messages: list[str], database_url: str, redis_url: str | None
) -> dict[str, float]:
    """Cold exact lookups on SQLite, PostgreSQL and (with redis_url) Redis, in one run."""
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache, store = _cache(f"sqlite:///{tmp}/cold.db", settings, None)
        figures |= {
            f"exact_cold_{k}": v
            for k, v in _time(cache, _probes(cache, settings, messages)).items()
        }
        store.close()
    with scratch_database(database_url) as url:
        cache, store = _cache(url, settings, None)
        figures |= prefixed(
            {f"table_{k}": v for k, v in _time(cache, _probes(cache, settings, messages)).items()}
        )
        store.close()
    if redis_url:
        link = RedisLink(redis_url, f"companion-bench-{uuid.uuid4().hex[:8]}:")
        with scratch_database(database_url) as url:
            cache, store = _cache(url, settings, link)
            probes = _probes(cache, settings, messages)
            figures |= prefixed(_time(cache, probes))
            RedisEntries(link).delete(p.key.key for p in probes)
            store.close()
        link.close()
    return figures
