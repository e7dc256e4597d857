"""The spec's cleanup policy: expire old unimportant memories, cap each user's count.

A memory expires when its last activity (last recalled, else last changed) is older than
`days_old` and its importance is under `min_importance`. Past `max_memories` per user, the
lowest by retention (importance, then recency) go. Both run on a schedule and on demand.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from companion.memory.base import Item
from companion.memory.recall import recency

log = logging.getLogger("companion.memory")


@dataclass(frozen=True)
class CleanupPolicy:
    """The spec's 'Memory Cleanup Strategy' values."""

    days_old: float = 90
    min_importance: float = 0.3
    max_memories: int = 1000
    max_episodes: int = 10000  # turns kept per user (episodes.py); recall stays fast to here

    def for_episodes(self) -> CleanupPolicy:
        """The same expiry, capped at max_episodes (the assistant's unrecalled replies,
        importance 0.25, expire; the user's own turns, 0.5, go only past the cap)."""
        return replace(self, max_memories=self.max_episodes)


def retention(memory: Item, now: datetime) -> float:
    """How much a memory is worth keeping: importance first, recency second."""
    return memory.importance + 0.25 * recency(memory, now, 30.0)


def doomed(memories: Sequence[Item], policy: CleanupPolicy, now: datetime
           ) -> tuple[list[int], list[int]]:
    """(expired ids, over-the-limit ids) for one user's memories."""
    cutoff = now - timedelta(days=policy.days_old)
    expired = [m.id for m in memories if (m.last_used_at or m.updated_at) < cutoff
               and m.importance < policy.min_importance]
    gone = set(expired)
    left = sorted((m for m in memories if m.id not in gone),
                  key=lambda m: (retention(m, now), m.id), reverse=True)
    over = [m.id for m in left[policy.max_memories:]]
    return expired, over


class Schedule:
    """Runs `job` every `interval_s` seconds on a daemon thread until stopped."""

    def __init__(self, job: Callable[[], object], interval_s: float, name: str) -> None:
        self._job = job
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> Schedule:
        """Begin; the first run is one interval from now."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop and wait for a run in progress."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        """Worker loop: a failed run is logged, the next one still happens."""
        while not self._stop.wait(self._interval):
            try:
                self._job()
            except Exception:  # worker loop: keep the schedule alive, report the failure
                log.exception("scheduled %s failed", self._thread.name)
