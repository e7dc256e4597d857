"""The pg_* parts of bench cache and bench memory: measured on a real PostgreSQL (pgvector) and a
real Redis, in a scratch database that is dropped afterwards, beside SQLite in the same run."""

from __future__ import annotations

import redis
import sqlalchemy as sa

from companion.bench.cache_shared import shared_cache_figures
from companion.bench.memory import query_figures
from companion.bench.shared import scratch_database
from companion.config import Settings
from companion.storage import open_store
from tests.servers import Postgres, Redis

MESSAGES = [
    "What should I cook tonight?",
    "Can you recommend a good book about the sea?",
    "How do I keep basil alive on a windowsill?",
    "What should I cook tonight?",  # a repeat: one probe per distinct message
    "Tell me a fun fact about octopuses.",
]


def _bench_databases(pg_server: Postgres) -> list[str]:
    engine = sa.create_engine(pg_server.url("postgres"), poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        names = conn.execute(
            sa.text("SELECT datname FROM pg_database WHERE datname LIKE 'companion_bench_%'")
        ).scalars()
        found = list(names)
    engine.dispose()
    return found


def test_bench_cache_times_postgres_and_redis_beside_sqlite_and_cleans_up(
    settings: Settings, pg_server: Postgres, redis_server: Redis
) -> None:
    figures = shared_cache_figures(settings, MESSAGES, pg_server.url("postgres"), redis_server.url)
    for name in (
        "exact_cold_lookup_p50_ms",  # SQLite's table, no in-process LRU
        "pg_table_lookup_p50_ms",  # PostgreSQL's table
        "pg_lookup_p50_ms",  # Redis in front of PostgreSQL: the issue's <= 1 ms figure
        "pg_lookup_p95_ms",
        "pg_store_p50_ms",
    ):
        assert isinstance(figures[name], float) and figures[name] > 0, name
    assert figures["pg_lookup_p50_ms"] <= figures["pg_lookup_p95_ms"]
    assert _bench_databases(pg_server) == []  # the scratch databases are dropped
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.keys("companion-bench-*") == []  # and the bench's Redis keys
    finally:
        client.close()


def test_bench_memory_times_recall_with_the_store_on_postgres(
    settings: Settings, pg_server: Postgres
) -> None:
    conversation = "\n".join(
        f"User {1 + i % 2}: {line}"
        for i, line in enumerate(
            [
                "Hi there, how are you today?",
                "I'm good, I just got back from a hike with my dog.",
                "What kind of dog do you have?",
                "A border collie named Juno, she loves the mountains.",
                "Do you like cooking on weekends?",
                "Yes, I bake sourdough bread every Sunday.",
            ]
        )
    )
    rows = [
        {
            "user 1 personas": "I have a border collie.\nI love hiking in the mountains.",
            "user 2 personas": "I bake bread every Sunday.\nI work as a nurse.",
            "Best Generated Conversation": conversation,
        }
    ]
    with scratch_database(pg_server.url("postgres")) as url:
        figures = query_figures(settings, 12, rows, sweep=(0, 6), url=url, headline=6)
        store = open_store(url)
        try:
            with store.engine.connect() as conn:
                kept = conn.execute(
                    sa.text("SELECT user_id, count(*) FROM memories GROUP BY user_id")
                ).all()
                turns = conn.execute(sa.text("SELECT count(*) FROM episodes")).scalar_one()
        finally:
            store.close()
    per_user = dict(kept)  # the facts went to PostgreSQL, per user, among 100 users' (the goal's)
    assert len(per_user) == 100 and set(per_user.values()) == {12}
    assert per_user["bench"] == 12 and figures["users"] == 100
    assert turns == 6
    assert figures["queries"] == 2  # the conversation's two questions
    assert figures["memories_per_user"] == 12 and figures["turns_per_user"] == 6
    assert 0 < figures["total_memory_ms_p50"] <= figures["total_memory_ms_p95"]
    assert figures["total_memory_ms_p95_at_0_turns"] > 0
    assert _bench_databases(pg_server) == []
