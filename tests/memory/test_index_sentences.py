"""The index's sentence rows: a turn's similarity is the best of its own vector and its
sentences', through removals, re-puts and compaction (numpy only, no store)."""

from __future__ import annotations

import numpy as np

from companion.memory.index import Vectors


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_scan_is_the_best_of_a_row_and_its_sentences_through_removal_and_compaction() -> None:
    rng = np.random.default_rng(14)
    dim = 16
    vectors = Vectors(dim)
    held: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
    for step in range(600):
        key = int(rng.integers(0, 150))
        if step % 5 == 4 and key in held:  # remove some
            vectors.remove(key)
            del held[key]
            continue
        if step % 7 == 6 and key in held:  # the same turn again, sentences kept (None)
            vector, parts = held[key]
            vectors.put(key, vector, {"flags": 1})
            continue
        vector = _unit(rng, 1, dim)[0]
        parts = _unit(rng, int(rng.integers(2, 6)), dim) if key % 2 else None
        vectors.put(key, vector, {"flags": 1}, parts)
        held[key] = (vector, parts)
    query = _unit(rng, 1, dim)[0]
    sims = vectors.scan(query)
    assert vectors.used > 0 and vectors.dead < vectors.size
    for key, (vector, parts) in held.items():
        want = float(vector @ query)
        if parts is not None:
            want = max(want, float((parts @ query).max()))
        assert abs(sims[vectors.row_of[key]] - want) < 1e-5
        assert abs(vectors.similarities([key], query)[key] - want) < 1e-5
    alive = {vectors.row_of[k] for k in held}
    assert all(s == -2.0 for row, s in enumerate(sims) if row not in alive)
    assert set(vectors.parts) == {vectors.row_of[k] for k, (_, p) in held.items() if p is not None}
