"""Per-user admission: a token-bucket rate limit and a cap on requests in flight.

`Limits` is the interface; UserLimits here is the in-process backend, RedisLimits
(companion/shared/redis_limits.py) the one that holds across instances.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from companion.errors import Overloaded


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    in_flight: int = 0


class Limits(Protocol):
    """Per-user rate and concurrency limits."""

    def acquire(self, user_id: str) -> str:
        """Take a slot and a rate token, or raise Overloaded; returns the slot's ticket."""
        ...

    def release(self, user_id: str, ticket: str = "local") -> None:
        """Give back the slot of that ticket."""
        ...


class UserLimits:
    """`per_minute` requests per user (bursts up to that many) and `concurrent` at once."""

    def __init__(self, per_minute: int, concurrent: int) -> None:
        self.per_minute = per_minute
        self.concurrent = concurrent
        self._now = time.monotonic
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}

    @contextmanager
    def admit(self, user_id: str) -> Iterator[None]:
        """Hold one of the user's slots for the duration of a request, or raise Overloaded."""
        ticket = self.acquire(user_id)
        try:
            yield
        finally:
            self.release(user_id, ticket)

    def release(self, user_id: str, ticket: str = "local") -> None:
        """Give back a slot taken by acquire()."""
        with self._lock:
            self._buckets[user_id].in_flight -= 1

    def acquire(self, user_id: str) -> str:
        """Take one slot (and one rate token) for `user_id`, or raise Overloaded."""
        now = self._now()
        with self._lock:
            b = self._buckets.setdefault(user_id, _Bucket(float(self.per_minute), now))
            b.tokens = min(
                float(self.per_minute), b.tokens + (now - b.stamp) * self.per_minute / 60
            )
            b.stamp = now
            if b.in_flight >= self.concurrent:
                raise Overloaded(
                    f"too many requests in flight for user {user_id!r} (limit {self.concurrent})",
                    retry_after_s=1,
                )
            if b.tokens < 1:
                wait = math.ceil((1 - b.tokens) * 60 / self.per_minute)
                raise Overloaded(
                    f"rate limit of {self.per_minute} requests per minute reached "
                    f"for user {user_id!r}",
                    retry_after_s=max(1, wait),
                )
            b.tokens -= 1
            b.in_flight += 1
        return "local"
