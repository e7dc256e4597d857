"""On a shared database, a turn left pending by an instance that died is marked interrupted.

A live instance ends every turn within request_timeout_s (complete, failed or interrupted), so a
message still pending well after that belongs to an instance that was killed (kill -9, OOM, a
lost node). One instance's start-up must not touch the others' running turns, so on PostgreSQL
only messages older than request_timeout_s + STALE_MARGIN_S are marked, at start-up and then
every `every_s` by each instance (the instances' clocks must agree within the margin: NTP).
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

from companion.errors import StorageError
from companion.storage import Store

log = logging.getLogger("companion.reaper")
STALE_MARGIN_S = 10.0


class PendingReaper:
    """Marks stale pending messages interrupted, now and then every `every_s`."""

    def __init__(self, store: Store, timeout_s: float, every_s: float | None = None) -> None:
        self.store = store
        self.stale_after = timedelta(seconds=timeout_s + STALE_MARGIN_S)
        self.every_s = every_s or min(30.0, max(1.0, timeout_s / 2))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self) -> int:
        """Mark the stale ones; how many (0 while the database is unreachable)."""
        try:
            count = self.store.mark_unfinished_interrupted(datetime.now(UTC) - self.stale_after)
        except StorageError as exc:
            log.debug("pending sweep skipped: %s", exc.message)
            return 0
        if count:
            log.warning("%d turns left pending by a stopped instance marked interrupted", count)
        return count

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="companion-reaper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.sweep()
            except Exception:  # never let the sweeper die
                log.exception("pending sweep failed")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
