"""Per-session turn locks, so two turns of one session never interleave.

`SessionLocks` is the interface; LocalLocks (here) holds asyncio locks in this process,
RedisLocks (redis_locks.py) holds them in Redis for every instance.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from companion.errors import Overloaded


def busy(session_id: str, wait_s: float) -> Overloaded:
    """The error for a session whose other turn outlasted our wait."""
    return Overloaded(
        f"another turn of session {session_id!r} is still running after "
        f"{wait_s:.0f} s; retry when it has finished",
        retry_after_s=2,
    )


class SessionLocks(Protocol):
    """One turn at a time per session."""

    def hold(self, session_id: str) -> AbstractAsyncContextManager[None]:
        """Wait for the session's lock (Overloaded past the wait), hold it inside the block."""
        ...


class LocalLocks:
    """asyncio locks by session id, dropped when nobody holds or waits for them."""

    def __init__(self, wait_s: float = 300.0) -> None:
        """Wait at most `wait_s` for another turn of the same session."""
        self.wait_s = wait_s
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[None]:
        """Hold the session's lock inside the block."""
        lock, users = self._locks.get(session_id, (asyncio.Lock(), 0))
        self._locks[session_id] = (lock, users + 1)
        try:
            try:
                await asyncio.wait_for(lock.acquire(), self.wait_s)
            except TimeoutError:
                raise busy(session_id, self.wait_s) from None
            try:
                yield
            finally:
                lock.release()
        finally:
            lock, users = self._locks[session_id]
            if users <= 1:
                del self._locks[session_id]
            else:
                self._locks[session_id] = (lock, users - 1)
