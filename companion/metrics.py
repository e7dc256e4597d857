"""Prometheus metrics (conventional names and base units), one registry per running service."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)

# engine.stats() key -> (metric name, help)
ENGINE_GAUGES = {
    "queue_depth": ("companion_queue_depth", "Requests waiting for a sequence."),
    "active_sequences": ("companion_active_sequences", "Sequences being decoded now."),
    "kv_used_ratio": ("companion_kv_cache_usage_ratio", "Share of KV cache cells in use (0-1)."),
    "batch_size": ("companion_batch_size", "Tokens in the last decode batch."),
}
# with model_servers set only (llm/remote.py)
REMOTE_GAUGES = {
    "model_servers_up": ("companion_model_servers_up", "Model servers answering their probe."),
    "session_moves": ("companion_session_moves", "Sessions moved off a model server that failed."),
}


class Metrics:
    """The counters and histograms the service updates as it works."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        self.http_requests = Counter(
            "companion_http_requests",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "companion_http_request_duration_seconds",
            "HTTP time to response start, by route.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.chat_latency = Histogram(
            "companion_chat_duration_seconds",
            "Whole chat turns, message to stored reply.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "companion_time_to_first_token_seconds",
            "Time from request to first generated token.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "companion_prompt_tokens", "Prompt tokens processed.", registry=r
        )
        self.generated_tokens = Counter(
            "companion_generated_tokens", "Tokens generated.", registry=r
        )
        self.chat_errors = Counter(
            "companion_chat_errors",
            "Chat turns that failed or were interrupted.",
            ["kind"],
            registry=r,
        )
        self.cache_requests = Counter(
            "companion_cache_requests",
            "Cache lookups by layer and result.",
            ["layer", "result"],
            registry=r,
        )
        self.memory_recall = Histogram(
            "companion_memory_recall_seconds",
            "Memory recall per request.",
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.model_load = Gauge(
            "companion_model_load_seconds", "Load time of the model in use.", registry=r
        )
        self.model_rss = Gauge(
            "companion_model_resident_bytes", "Resident memory the model load added.", registry=r
        )

    def watch_engine(self, stats: Callable[[], dict[str, float]]) -> None:
        """Export the engine's live gauges, read at scrape time."""
        self.registry.register(_EngineCollector(stats))

    def watch_routing(self, stats: Callable[[], dict[str, Any]]) -> None:
        """Export model switching's requests per model, read at scrape time (`stats()` is
        Companion.performance_stats()["routing"]; nothing is exported while switching is off)."""
        self.registry.register(_RoutingCollector(stats))


class _RoutingCollector(Collector):
    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        routing = self._stats()
        family = CounterMetricFamily(
            "companion_routed_requests",
            "Messages sent to each model by model switching.",
            labels=["model", "role"],
        )
        if routing.get("enabled"):
            for role in ("small", "large"):
                family.add_metric([routing[role]["model"], role], routing[f"requests_{role}"])
        yield family


class _EngineCollector(Collector):
    def __init__(self, stats: Callable[[], dict[str, float]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        values: dict[str, Any] = self._stats()
        for key, (name, doc) in ENGINE_GAUGES.items():
            yield GaugeMetricFamily(name, doc, value=float(values.get(key, 0.0)))
        for key, (name, doc) in REMOTE_GAUGES.items():
            if key in values:
                yield GaugeMetricFamily(name, doc, value=float(values[key]))
