"""Concurrent single-text embeddings coalesced into one batched model call.

Requests embed their message from worker threads at the same time; each ONNX call has a fixed
cost, so while one call runs, the texts that arrive wait and then go together in the next one
(up to MAX_BATCH). The first caller to find no call running does the work for everyone
waiting; the others sleep until their vector is ready. Nothing waits on a timer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from companion.embed.base import Vector

MAX_BATCH = 32


@dataclass
class _Slot:
    text: str
    vector: Vector | None = None
    error: BaseException | None = None
    done: bool = False


class Coalescer:
    """embed_one() from many threads; `embed_many` sees the texts of concurrent callers together."""

    def __init__(self, embed_many: Callable[[list[str]], Vector]) -> None:
        self._embed_many = embed_many
        self._cond = threading.Condition()
        self._pending: list[_Slot] = []
        self._running = False
        self.calls = 0
        self.texts = 0

    def embed_one(self, text: str) -> Vector:
        slot = _Slot(text)
        with self._cond:
            self._pending.append(slot)
            if self._running:  # a call is in flight: ours goes in the next batch
                while not slot.done and self._running:
                    self._cond.wait()
                if slot.done:
                    return _result(slot)
            self._running = True
        try:
            self._drain()
        finally:
            with self._cond:
                self._running = False
                self._cond.notify_all()
        return _result(slot)

    def _drain(self) -> None:
        """Embed what is pending, batch after batch, until nobody waits."""
        while True:
            with self._cond:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            if not batch:
                return
            try:
                vectors = self._embed_many([s.text for s in batch])
                for slot, vector in zip(batch, vectors, strict=True):
                    slot.vector = vector
            except BaseException as exc:  # every caller of this batch gets the error
                for slot in batch:
                    slot.error = exc
            with self._cond:
                for slot in batch:
                    slot.done = True
                self.calls += 1
                self.texts += len(batch)
                self._cond.notify_all()


def _result(slot: _Slot) -> Vector:
    if slot.error is not None:
        raise slot.error
    assert slot.vector is not None
    return slot.vector
