"""The spec's cleanup policy: days_old 90 / min_importance 0.3 / max_memories 1000."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from companion.embed import Embedder
from companion.memory import CleanupPolicy, MemoryService
from companion.storage import Store
from companion.storage.schema import memories


def backdate(store: Store, memory_id: int, days: float) -> None:
    when = datetime.now(UTC) - timedelta(days=days)
    with store.writing() as conn:
        conn.execute(sa.update(memories).where(memories.c.id == memory_id)
                     .values(created_at=when, updated_at=when))


def test_old_unimportant_memories_expire_and_the_rest_stay(memory: MemoryService,
                                                           store: Store) -> None:
    old_low = memory.add("u", "Had a sandwich for lunch", importance=0.2)
    old_high = memory.add("u", "Allergic to peanuts", importance=0.9)
    new_low = memory.add("u", "Watched a film yesterday", importance=0.2)
    used_low = memory.add("u", "Likes the blue mug", importance=0.2)
    for m in (old_low, old_high, used_low):
        backdate(store, m.id, 120)
    memory.forget_user("u")  # reload from the database
    memory.mark_used("u", [used_low.id])  # recalled recently: not "old" any more
    report = memory.cleanup()
    assert report.to_dict() == {"expired": 1, "over_limit": 0, "users": 1,
                                "episodes_expired": 0, "episodes_over_limit": 0}
    assert {m.text for m in memory.memories("u")} == {
        "Allergic to peanuts", "Watched a film yesterday", "Likes the blue mug"}
    assert all(r.memory.id != old_low.id for r in memory.recall("u", "sandwich lunch"))
    assert memory.history("u")[-1]["reason"] == "cleanup: expired"
    assert new_low.id in {m.id for m in memory.memories("u")}


def test_max_memories_keeps_the_most_important(store: Store, embedder: Embedder) -> None:
    service = MemoryService(store, embedder, policy=CleanupPolicy(max_memories=3))
    for i, importance in enumerate((0.9, 0.4, 0.8, 0.5, 0.95)):
        service.add("u", f"fact number {i}", importance=importance)
    service.add("other", "fact of another user", importance=0.1)
    report = service.cleanup("u")
    assert (report.expired, report.over_limit) == (0, 2)
    assert sorted(m.importance for m in service.memories("u")) == [0.8, 0.9, 0.95]
    assert len(service.memories("other")) == 1
    service.close()


def test_cleanup_runs_on_a_schedule(store: Store, embedder: Embedder) -> None:
    service = MemoryService(store, embedder, policy=CleanupPolicy(max_memories=1))
    service.add("u", "first fact", importance=0.9)
    service.add("u", "second fact", importance=0.5)
    service.start_schedule(0.05)
    deadline = time.time() + 5
    while len(service.memories("u")) > 1 and time.time() < deadline:
        time.sleep(0.05)
    service.close()
    assert [m.text for m in service.memories("u")] == ["first fact"]
