"""How much each report step measures: quick (at most 3 minutes on a shared 2-core machine)
and full."""

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
    http_streams: int  # concurrent streams against llama-server, when there is one (0: skip)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


THRESHOLDS = (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98)

# --quick must end within 3 minutes on a shared 2-core machine: what costs is generation (a
# loaded machine decodes the tiny model at a few tokens/s), so replies are short and few; the
# sweep keeps one point in each of the spec's user ranges (1-5, 5-15, 15-30, 30+).
# The llama-server peer starts two servers (a minute on a busy machine): not in the quick run.
QUICK = Budget("quick", 1, 8, 4, (1, 4, 8, 16, 32), 1, 50, 24, 200, THRESHOLDS,
               (100, 250, 500), 0)  # fmt: skip
FULL = Budget("full", 5, 128, 20, (1, 2, 4, 8, 16, 24, 32), 10, 1000, 1000, 1725, THRESHOLDS,
              (100, 1000, 3000, 10000), 16)  # fmt: skip
# Only for the test suite on a shared machine: the same steps, the real model, less of each.
TEST = Budget("test", 1, 12, 4, (1, 2, 4, 8), 2, 40, 30, 80, (0.7, 0.8, 0.9), (50, 150), 4)
BUDGETS = {b.name: b for b in (QUICK, FULL, TEST)}
