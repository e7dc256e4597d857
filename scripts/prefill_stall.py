"""`bench engine`'s prefill-stall phase alone, in either KV layout (docs/engine.md).

Eight streams decode (128 tokens, greedy); 2 s after their first tokens a 1,500-token prompt
joins: the streams' inter-token gap p95 just before and during its prefill, pooled over the
rounds, and their ratio (issue 13: at most 2). `bench engine` runs it with a unified KV buffer
(its engine_kv_tokens is set); `split` is the default layout on CPU; here with 9 slots (the 8
streams and the long prompt) + 2 spare ids, one stream of 4,096 cells each. `ratio=R` sets the
step budget's RATIO (llm/stepbudget.py) for the run.

    PYTHONPATH=. python scripts/prefill_stall.py [unified|split] [repeats=2] [ratio=2.0]
"""

from __future__ import annotations

import asyncio
import json
import sys

from companion.bench.engine import bench_settings, engine_stream, stall_rounds
from companion.bench.kv_types import STALL_ROUNDS, prefill_stall
from companion.config import load_settings
from companion.domain import GenerationOptions
from companion.llm import stepbudget
from companion.llm.batched import open_engine
from companion.llm.llama_cpp import route_native_logs
from companion.llm.registry import Registry

LAYOUT = sys.argv[1] if len(sys.argv) > 1 else "unified"
REPEATS = int(sys.argv[2]) if len(sys.argv) > 2 else 2
stepbudget.RATIO = float(sys.argv[3]) if len(sys.argv) > 3 else stepbudget.RATIO

bench = bench_settings(load_settings(), 128)
if LAYOUT == "split":
    bench = bench.model_copy(
        update={"engine_parallel": 9, "engine_kv_tokens": None, "engine_kv_layout": "split"}
    )
model = Registry(bench.resolved_models_dir).path_of("tiny")
assert model is not None, "the tiny model is not installed"
opts = GenerationOptions(max_tokens=128, temperature=0.0, top_p=bench.top_p, top_k=bench.top_k,
                         repeat_penalty=bench.repeat_penalty)  # fmt: skip
route_native_logs()
engine = open_engine(bench, model, "tiny")
try:
    asyncio.run(engine_stream(engine, engine.tokenize("Hello"), opts, "warm-up"))
    rounds = stall_rounds(engine, bench, STALL_ROUNDS * REPEATS)
    for i in range(REPEATS):
        mine = rounds[i * STALL_ROUNDS : (i + 1) * STALL_ROUNDS]
        found = asyncio.run(prefill_stall(engine, mine, opts))
        print(json.dumps({"layout": LAYOUT, "ratio": stepbudget.RATIO, "repeat": i + 1, **found}),
              flush=True)  # fmt: skip
finally:
    engine.close()
