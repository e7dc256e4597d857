"""Event-loop lag: how late a short timer fires, sampled all the time the server runs.

A loop that is late by L ms delays every stream's next token and every request's start by L;
anything that blocks the loop (tokenizing, a database call, a big JSON) shows up here.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque

from companion.stats import percentile

INTERVAL_S = 0.05
WINDOW = 2400  # samples kept: the last two minutes at INTERVAL_S


class LoopLag:
    """Samples the running loop's lag; `snapshot()` gives p50/p99/max in ms."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: deque[float] = deque(maxlen=WINDOW)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin sampling on the running loop (once)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            due = time.perf_counter() + INTERVAL_S
            await asyncio.sleep(INTERVAL_S)
            lag_ms = max(0.0, (time.perf_counter() - due) * 1000)
            with self._lock:
                self._samples.append(lag_ms)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            samples = list(self._samples)
        return {
            "loop_lag_p50_ms": round(percentile(samples, 50), 2),
            "loop_lag_p99_ms": round(percentile(samples, 99), 2),
            "loop_lag_max_ms": round(max(samples), 2) if samples else 0.0,
            "loop_lag_samples": float(len(samples)),
        }
