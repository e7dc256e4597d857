"""How much each report step measures: quick (about 3 minutes on 2 idle cores) and full."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Budget:
    """Workload sizes of one report run."""

    name: str
    prompts: int  # bench models: prompts per installed size
    max_tokens: int  # generated tokens per reply (models, engine, user)
    turns: int  # session turns for TTFT against turn number
    sweep: tuple[int, ...]  # concurrent users, one engine batch each
    user_requests: int  # bench user: timed requests per query type
    user_memories: int  # bench user: memories of the "complex" user
    cache_requests: int  # the companion cache workload (the spec's table says 1,000)
    mrpc_pairs: int  # paraphrase pairs for the threshold plot (MRPC test has 1,725)
    thresholds: tuple[float, ...]  # similarity thresholds of that plot
    memory_scales: tuple[int, ...]  # memories per user for the recall plot
    http_streams: int  # concurrent streams against llama-server, when on PATH

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


THRESHOLDS = (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98)

QUICK = Budget("quick", 2, 32, 8, (1, 2, 4, 8, 16, 32), 3, 200, 120, 300, THRESHOLDS,
               (100, 300, 1000), 8)  # fmt: skip
FULL = Budget("full", 5, 128, 20, (1, 2, 4, 8, 16, 24, 32), 10, 1000, 1000, 1725, THRESHOLDS,
              (100, 1000, 3000, 10000), 16)  # fmt: skip
# Only for the test suite on a shared machine: the same steps, the real model, less of each.
TEST = Budget("test", 1, 12, 4, (1, 2, 4, 8), 2, 40, 30, 80, (0.7, 0.8, 0.9), (50, 150), 4)
BUDGETS = {b.name: b for b in (QUICK, FULL, TEST)}
