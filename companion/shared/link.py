"""One Redis connection pool with short timeouts and a breaker, for every Redis backend.

Redis holds nothing that companion cannot do without: when it is down or slow, each call
gives up after `timeout_s` (100 ms), the breaker then skips Redis for `cooldown_s`, and the
callers fall back (a cache miss, per-instance limits and locks). It closes again by itself at
the first call that succeeds after the cool-down; /api/v1/health says `degraded` meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from companion.config import mask_url

log = logging.getLogger("companion.shared")
T = TypeVar("T")
TIMEOUT_S = 0.1
COOLDOWN_S = 3.0


class RedisLink:
    """A Redis client whose failures trip a breaker instead of failing requests."""

    def __init__(
        self,
        url: str,
        prefix: str = "companion:",
        *,
        timeout_s: float = TIMEOUT_S,
        cooldown_s: float = COOLDOWN_S,
    ) -> None:
        """Connect lazily to `url`; every key starts with `prefix`."""
        self.url = mask_url(url) or ""
        self.prefix = prefix
        self.cooldown_s = cooldown_s
        self.client: redis.Redis = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._open_until = 0.0
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self.failures = 0

    def key(self, *parts: str) -> str:
        """A namespaced key: prefix + parts joined by ':'."""
        return self.prefix + ":".join(parts)

    @property
    def available(self) -> bool:
        """False while the breaker is open (Redis failed within the last cool-down)."""
        return time.monotonic() >= self._open_until

    def call(self, action: Callable[[redis.Redis], T], fallback: T) -> T:
        """action(client), or `fallback` when Redis fails or the breaker is open."""
        if not self.available:
            return fallback
        try:
            result = action(self.client)
        except (redis.RedisError, OSError) as exc:
            self.trip(exc)
            return fallback
        if self.last_error is not None:
            self._recovered()
        return result

    def trip(self, exc: BaseException) -> None:
        """Open the breaker for the cool-down after a failure."""
        with self._lock:
            first = self.available
            self._open_until = time.monotonic() + self.cooldown_s
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
        if first:
            log.warning(
                "redis %s failed (%s): serving without it for %.0f s",
                self.url,
                self.last_error,
                self.cooldown_s,
            )

    def _recovered(self) -> None:
        with self._lock:
            self.last_error = None
        log.warning("redis %s answers again", self.url)

    def health(self) -> dict[str, Any]:
        """{'status': 'ok'} or {'status': 'degraded', 'reason': ...} after a ping."""
        self.call(lambda c: c.ping(), None)
        if self.available and self.last_error is None:
            return {"status": "ok", "url": self.url}
        return {
            "status": "degraded",
            "url": self.url,
            "reason": f"{self.last_error}; replies are served without Redis (cache "
            "misses, per-instance limits) until it answers again",
        }

    def close(self) -> None:
        """Release the pool's connections."""
        self.client.close()
