"""Request figures kept in process; `snapshot()` is the body of get_performance_stats()."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import psutil

from companion.metrics import Metrics

WINDOW = 1000  # recent requests kept for averages and percentiles


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


class PerformanceStats:
    """Thread-safe counters and recent timings of chat requests."""

    def __init__(self) -> None:
        from companion.looplag import LoopLag  # it uses percentile() from here

        self.metrics = Metrics()
        self.loop_lag = LoopLag()  # sampled while a server runs (app lifespan starts it)
        self._lock = threading.Lock()
        self._started = time.time()
        self._response_ms: deque[float] = deque(maxlen=WINDOW)
        self._ttft_ms: deque[float] = deque(maxlen=WINDOW)
        self._tokens_per_s: deque[float] = deque(maxlen=WINDOW)
        self.requests = 0
        self.errors = 0
        self.interrupted = 0
        self.cache_lookups = 0
        self.cache_hits = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def record_request(
        self,
        *,
        response_ms: float,
        ttft_ms: float,
        tokens_per_s: float,
        prompt: int,
        completion: int,
    ) -> None:
        """Count one answered request and its timings."""
        self.metrics.chat_latency.observe(response_ms / 1000)
        self.metrics.ttft.observe(ttft_ms / 1000)
        self.metrics.prompt_tokens.inc(prompt)
        self.metrics.generated_tokens.inc(completion)
        with self._lock:
            self.requests += 1
            self._response_ms.append(response_ms)
            self._ttft_ms.append(ttft_ms)
            if completion > 0:
                self._tokens_per_s.append(tokens_per_s)
            self.prompt_tokens += prompt
            self.completion_tokens += completion

    def record_error(self, *, interrupted: bool = False) -> None:
        """Count a request that failed or was cut off."""
        self.metrics.chat_errors.labels("interrupted" if interrupted else "failed").inc()
        with self._lock:
            self.requests += 1
            if interrupted:
                self.interrupted += 1
            else:
                self.errors += 1

    def record_cache(self, hit: bool, layer: str = "exact") -> None:
        """Count one cache lookup; `layer` is the layer that answered (or was asked last)."""
        self.metrics.cache_requests.labels(layer, "hit" if hit else "miss").inc()
        with self._lock:
            self.cache_lookups += 1
            self.cache_hits += int(hit)

    def snapshot(self) -> dict[str, Any]:
        """All figures, in ms, tokens/s, MB and ratios 0-1."""
        with self._lock:
            resp, ttft, tps = list(self._response_ms), list(self._ttft_ms), list(self._tokens_per_s)
            counts = {
                "requests": self.requests,
                "errors": self.errors,
                "interrupted": self.interrupted,
                "cache_lookups": self.cache_lookups,
                "cache_hits": self.cache_hits,
                "prompt_tokens_total": self.prompt_tokens,
                "completion_tokens_total": self.completion_tokens,
            }
        return {
            "avg_response_time": round(sum(resp) / len(resp), 2) if resp else 0.0,
            "p50_response_time": round(percentile(resp, 50), 2),
            "p95_response_time": round(percentile(resp, 95), 2),
            "avg_time_to_first_token": round(sum(ttft) / len(ttft), 2) if ttft else 0.0,
            "tokens_per_second": round(sum(tps) / len(tps), 2) if tps else 0.0,
            "cache_hit_rate": round(counts["cache_hits"] / counts["cache_lookups"], 4)
            if counts["cache_lookups"]
            else 0.0,
            "memory_usage_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
            "uptime_s": round(time.time() - self._started, 1),
            **self.loop_lag.snapshot(),
            **counts,
        }
