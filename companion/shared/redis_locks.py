"""Per-session turn locks in Redis: SET NX with an expiry, renewed while held.

A lock held by an instance that died expires after `ttl_s` (10 s); a live holder renews it every
third of that. Redis down: the instance's own LocalLocks take over. 10 s, not more: the session
of a turn that died with its instance (kill -9) takes its next message within 10 s of the kill
(with 30 s its user waited up to 30 s, past a request_timeout_s of 20-30 s a 409); a live
holder loses it only if its event loop stalls for two renewals (6.7 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from companion.shared.link import RedisLink
from companion.shared.locks import LocalLocks, busy

# Only the holder (same token) may renew or release.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
POLL_S = 0.02
DOWN = "down"


class RedisLocks:
    """Session locks shared by every instance using the same Redis and prefix."""

    def __init__(self, link: RedisLink, wait_s: float = 300.0, ttl_s: float = 10.0) -> None:
        """Wait at most `wait_s` for the lock; it expires `ttl_s` after its last renewal."""
        self.link = link
        self.wait_s = wait_s
        self.ttl_ms = int(ttl_s * 1000)
        self.local = LocalLocks(wait_s)
        self._renew = link.client.register_script(RENEW)
        self._release = link.client.register_script(RELEASE)

    @asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[None]:
        """Hold the session's lock in Redis (locally while Redis is down) inside the block."""
        key, token = self.link.key("session", session_id), uuid.uuid4().hex
        deadline = time.monotonic() + self.wait_s
        while True:
            got = self.link.call(lambda c: c.set(key, token, nx=True, px=self.ttl_ms), DOWN)
            if got == DOWN:
                async with self.local.hold(session_id):
                    yield
                return
            if got:
                break
            if time.monotonic() >= deadline:
                raise busy(session_id, self.wait_s)
            await asyncio.sleep(POLL_S)
        renewer = asyncio.create_task(self._keep(key, token))
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            self.link.call(lambda _c: self._release(keys=[key], args=[token]), None)

    async def _keep(self, key: str, token: str) -> None:
        """Renew the lock every third of its expiry while the turn runs."""
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            self.link.call(lambda _c: self._renew(keys=[key], args=[token, self.ttl_ms]), None)
