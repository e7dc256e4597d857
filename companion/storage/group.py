"""Group commit: many requests' writes in one transaction, committed before any of them returns.

A request hands its item to `GroupWriter.submit` and awaits the returned future. One writer
thread takes every item waiting, runs the handler on all of them in one transaction (under the
store's writer lock) and commits; only then are the futures resolved. So a caller that answers
after awaiting its future answers about rows already committed: an acknowledged write is never
lost to a crash, and under load one commit (and one statement per table) serves many requests.

If the handler fails on a batch, the batch is rolled back and each item is run again in its own
transaction, so one bad item fails alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Connection

log = logging.getLogger("companion.storage")

T = TypeVar("T")
R = TypeVar("R")
MAX_BATCH = 512


class GroupWriter(Generic[T, R]):
    """Runs `handler(conn, items) -> results` (one result per item, in order) in batches."""

    def __init__(
        self,
        begin: Callable[[], Any],
        handler: Callable[[Connection, Sequence[T]], list[R]],
        name: str = "group-writer",
    ) -> None:
        """`begin()` opens one write transaction (a context manager yielding a connection)."""
        self._begin = begin
        self._handler = handler
        self._name = name
        self._items: list[tuple[T, Future[R]]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.items = 0

    def submit(self, item: T) -> Future[R]:
        """Queue one item; the future resolves once its rows are committed (or fails)."""
        future: Future[R] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self._name} is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._items.append((item, future))
            self._cond.notify()
        return future

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued, then stop the thread (later submits fail)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closed:
                    self._cond.wait()
                if not self._items:
                    return
                batch, self._items = self._items[:MAX_BATCH], self._items[MAX_BATCH:]
            # an item whose caller gave up before it ran is dropped (nothing was acknowledged);
            # once running, a future can no longer be cancelled, so it always gets its result
            batch = [(i, f) for i, f in batch if f.set_running_or_notify_cancel()]
            if batch:
                self._run(batch)

    def _run(self, batch: list[tuple[T, Future[R]]]) -> None:
        items = [item for item, _ in batch]
        try:
            with self._begin() as conn:
                results = self._handler(conn, items)
            if len(results) != len(items):
                raise RuntimeError(f"{self._name}: {len(results)} results for {len(items)} items")
        except BaseException as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            log.debug("%s: batch of %d failed (%r); one by one", self._name, len(batch), exc)
            for one in batch:
                self._run([one])
            return
        self.batches += 1
        self.items += len(items)
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)
