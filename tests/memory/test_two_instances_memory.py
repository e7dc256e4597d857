"""Two memory services on one PostgreSQL, each with its own Redis bus (as two instances): a
memory added through one is recalled through the other even after the other loaded the user."""

from __future__ import annotations

import time

from companion.embed import Embedder
from companion.memory import MemoryService
from companion.shared.link import RedisLink
from companion.shared.redis_bus import RedisBus
from companion.storage import open_store
from tests.servers import Redis


def test_a_memory_added_on_one_instance_is_recalled_on_the_other(
    pg_url: str, redis_server: Redis, redis_prefix: str, embedder: Embedder
) -> None:
    services, buses = [], []
    for _ in range(2):
        service = MemoryService(open_store(pg_url), embedder)
        bus = RedisBus(RedisLink(redis_server.url, redis_prefix))
        service.bus = bus
        bus.subscribe(
            lambda event, data, s=service: (
                s.forget_user(data["user_id"])
                if event in ("memory_changed", "memory_deleted")
                else None
            )
        )
        services.append(service)
        buses.append(bus)
    a, b = services
    try:
        assert b.recall("zoe", "Where does my sister live?") == []  # b has loaded zoe
        added = a.add("zoe", "My sister Alice lives in Lisbon")
        deadline = time.monotonic() + 1.0
        found: list[str] = []
        while time.monotonic() < deadline and not found:
            found = [r.memory.text for r in b.recall("zoe", "Where does my sister live?")]
            time.sleep(0.05)
        assert "My sister Alice lives in Lisbon" in found  # within the one second goal
        a.delete("zoe", added.id)
        time.sleep(0.3)
        assert b.recall("zoe", "Where does my sister live?") == []
    finally:
        for service, bus in zip(services, buses, strict=True):
            bus.close()
            service.close()
            service.store.close()
