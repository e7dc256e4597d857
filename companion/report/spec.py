"""The spec's figures (llm-performance-analysis.md), as the report's reference column.

Each reference keeps the spec's own words (`text`) and the numbers a ratio is taken against,
in the unit the report measures in. `point` is the spec's benchmark figure where it gives one
(its "Benchmarking Results"), else the middle of its range, else its one bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Better = Literal["lower", "higher"]


@dataclass(frozen=True)
class Ref:
    """One figure of the spec."""

    text: str
    low: float | None
    high: float | None
    better: Better
    point: float | None = None

    @property
    def value(self) -> float:
        """What a ratio is taken against."""
        if self.point is not None:
            return self.point
        if self.low is not None and self.high is not None:
            return (self.low + self.high) / 2
        bound = self.low if self.low is not None else self.high
        assert bound is not None
        return bound

    def verdict(self, measured: float) -> str:
        """Whether `measured` is within the spec's range, better or worse than it."""
        if (self.low is None or measured >= self.low) and (
            self.high is None or measured <= self.high
        ):
            return "within"
        below = self.low is not None and measured < self.low
        return "better" if below == (self.better == "lower") else "worse"


# Cold Start: load time (s) and RAM (GB) per installed size; Model Performance Comparison.
COLD_START = {
    "tiny": (Ref("3-5 s", 3, 5, "lower"), Ref("~1 GB", None, 1, "lower")),
    "base": (Ref("5-8 s", 5, 8, "lower"), Ref("~2 GB", None, 2, "lower")),
    "small": (Ref("8-15 s", 8, 15, "lower"), Ref("~4 GB", None, 4, "lower")),
    "medium": (Ref("15-30 s", 15, 30, "lower"), Ref("~8 GB", None, 8, "lower")),
    "large": (Ref("30-60 s", 30, 60, "lower"), Ref("~16 GB", None, 16, "lower")),
}
MODEL_COMPARISON = {  # load s, tokens/s, memory GB (the spec's i7-9700K + RTX 3080)
    "tiny": (3.2, 12.4, 1.1),
    "base": (5.8, 8.7, 1.4),
    "small": (11.3, 4.2, 2.9),
    "medium": (24.1, 2.8, 7.6),
    "large": (45.7, 1.9, 14.1),
}
# Token Generation (ms per token) by device.
TOKEN_GENERATION = {
    "CPU only": Ref("50-200 ms/token", 50, 200, "lower"),
    "CPU + GPU (4GB)": Ref("20-80 ms/token", 20, 80, "lower"),
    "CPU + GPU (8GB)": Ref("10-40 ms/token", 10, 40, "lower"),
    "High-end GPU (full offload)": Ref("5-20 ms/token", 5, 20, "lower"),
}
CACHE_METRICS = {  # hit rate %, lookup ms, storage ms, size MB per 1,000 replies
    "Cache hit rate": Ref("70-85% (78.3% at 1000 req)", 70, 85, "higher", 78.3),
    "Cache lookup": Ref("1-5 ms (2.1 ms)", 1, 5, "lower", 2.1),
    "Cache storage": Ref("5-15 ms (8.7 ms)", 5, 15, "lower", 8.7),
    "Cache size per 1000 replies": Ref("<5 MB (4.2 MB)", None, 5, "lower", 4.2),
}
MEMORY_USAGE = {  # MB
    "Python process": Ref("200-500 MB", 200, 500, "lower"),
    "SQLite database": Ref("10-50 MB", 10, 50, "lower"),
    "LLM model": Ref("1-16 GB (tiny ~1 GB)", 1024, 16384, "lower", 1024),
    "Context buffer": Ref("10-100 MB", 10, 100, "lower"),
}
PER_USER_MEMORY = {  # MB
    "Conversation context": Ref("1-5 MB", 1, 5, "lower"),
    "Memory system": Ref("1-10 MB", 1, 10, "lower"),
    "Personality data": Ref("<1 MB", None, 1, "lower"),
    "Cache data": Ref("0.1-1 MB", 0.1, 1, "lower"),
}
SINGLE_USER = {  # requests/min
    "Cached responses": Ref("200+ req/min", 200, None, "higher"),
    "Simple queries": Ref("10-30 req/min", 10, 30, "higher"),
    "Complex queries": Ref("5-15 req/min", 5, 15, "higher"),
    "Long conversations": Ref("3-8 req/min", 3, 8, "higher"),
}
MULTI_USER = {  # share of single-user speed, %; users in the bucket
    "1-5 users": (Ref("full speed", 100, None, "higher", 100), (1, 5)),
    "5-15 users": (Ref("80% speed", 80, None, "higher", 80), (6, 15)),
    "15-30 users": (Ref("60% speed", 60, None, "higher", 60), (16, 30)),
    "30+ users": (Ref("40% speed", 40, None, "higher", 40), (31, 10_000)),
}
CACHE_BY_TYPE = {  # hit rate %
    "identical": ("Identical queries", Ref("95%", 95, None, "higher", 95)),
    "similar": ("Similar queries", Ref("15%", 15, None, "higher", 15)),
    "context": ("Context-dependent", Ref("5%", 5, None, "higher", 5)),
    "creative": ("Creative requests", Ref("1%", 1, None, "higher", 1)),
}
MEMORY_QUERY = {  # ms per request
    "Topic search": Ref("5-15 ms", 5, 15, "lower"),
    "Importance ranking": Ref("10-25 ms", 10, 25, "lower"),
    "Context building": Ref("15-40 ms", 15, 40, "lower"),
    "Total memory time": Ref("30-80 ms", 30, 80, "lower"),
}


@dataclass(frozen=True)
class Requirement:
    """One of the spec's hardware tiers."""

    name: str
    cores: int
    ghz: float
    ram_gb: int
    vram_gb: int
    model: str
    context: int
    req_per_min: Ref


REQUIREMENTS = (
    Requirement("Minimum", 4, 2.0, 4, 0, "tiny", 1024, Ref("10-20 req/min", 10, 20, "higher")),
    Requirement("Recommended", 8, 3.0, 8, 0, "small", 2048, Ref("15-30 req/min", 15, 30, "higher")),
    Requirement("Optimal", 16, 3.5, 16, 8, "medium", 4096, Ref("25-50 req/min", 25, 50, "higher")),
)
TEST_SYSTEM = {
    "CPU": "Intel i7-9700K (8 cores, 3.6GHz)",
    "RAM": "32GB DDR4",
    "GPU": "NVIDIA RTX 3080 (10GB VRAM)",
    "Storage": "NVMe SSD",
    "OS": "Ubuntu 22.04 LTS",
}
