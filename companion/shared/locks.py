"""One turn at a time per session, so two turns of one session never interleave.

Without it, five messages sent at once to one session were stored as five user turns, then
five replies in another order, and the next turn's history was scrambled. Now each turn reads
the history, generates and stores its reply while holding its session's lock; the next waits
up to `wait_s` (request_timeout_s) and then gets 409 `session_busy` with a Retry-After.

`SessionLocks` is the interface, taken in one place (`Companion.in_turn`: chat, regenerate,
edit, continue); LocalLocks (here) holds asyncio locks in this process (in arrival order),
RedisLocks (redis_locks.py) holds them in Redis for every instance (a lock held by an
instance that died expires).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from companion.errors import CompanionError


class SessionBusy(CompanionError):
    """Another turn of this session kept it longer than the wait allows (409, Retry-After)."""

    status_code = 409
    code = "session_busy"
    retry_after_s = 2


def busy(session_id: str, wait_s: float) -> SessionBusy:
    """The error for a session whose other turn outlasted our wait."""
    return SessionBusy(
        f"session {session_id!r} is still answering an earlier message (waited {wait_s:g} s); "
        "send this one again when it is done",
        field="session_id",
    )


class SessionLocks(Protocol):
    """One turn at a time per session."""

    def hold(self, session_id: str) -> AbstractAsyncContextManager[None]:
        """Wait for the session's lock (SessionBusy past the wait), hold it inside the block."""
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
                async with asyncio.timeout(self.wait_s):
                    await lock.acquire()
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

    def busy(self) -> int:
        """Sessions with a turn running or waiting (in this process)."""
        return len(self._locks)
