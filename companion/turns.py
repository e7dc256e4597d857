"""One turn at a time per session: a second message to a session that is generating waits.

Without this, five messages sent at once to one session were stored as five user turns, then
five replies in another order, and the next turn's history was scrambled. Now each turn reads
the history, generates and stores its reply while holding its session's turn; the next waits
(in arrival order) up to `wait_s` and then gets 409 `session_busy`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from companion.errors import CompanionError


class SessionBusy(CompanionError):
    """Another turn of this session kept it longer than the wait allows."""

    status_code = 409
    code = "session_busy"


class SessionTurns:
    """A lock per session that has a turn running or waiting (dropped when none is)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, session_id: str, wait_s: float) -> AsyncIterator[None]:
        """Hold the session's turn; SessionBusy when it is not free within `wait_s`."""
        lock, users = self._locks.get(session_id, (asyncio.Lock(), 0))
        self._locks[session_id] = (lock, users + 1)
        try:
            try:
                async with asyncio.timeout(wait_s):
                    await lock.acquire()
            except TimeoutError:
                raise SessionBusy(
                    f"session {session_id!r} is still answering an earlier message "
                    f"(waited {wait_s:g} s); send this one again when it is done",
                    field="session_id",
                ) from None
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
        """Sessions with a turn running or waiting."""
        return len(self._locks)
