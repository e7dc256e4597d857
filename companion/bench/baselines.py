"""The baselines of bench memory: plain retrieval over the raw turns, and an embedding cache.

Three rankings of the turns as said (no extraction, no context): dense (cosine with the same
embedder as the memory), BM25 (SQLite FTS5 with the porter stemmer, the query's content words
OR-ed) and their reciprocal rank fusion (k = 60). The embedding cache embeds each distinct
text once per run, in length-sorted batches, for the baselines and the memory alike.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

import numpy as np

from companion.embed.base import Embedder, Vector
from companion.embed.memo import MemoEmbedder
from companion.memory.index import fts_query

BASELINES = ("dense", "bm25", "fusion")
RRF_K = 60
BATCH = 32


class CachedEmbedder(MemoEmbedder):
    """An embedder that embeds each distinct text once (for one bench run: no eviction)."""

    def __init__(self, inner: Embedder) -> None:
        super().__init__(inner)
        self.cache: dict[str, Vector] = {}

    def warm(self, texts: Iterable[str]) -> None:
        """Embed the texts not seen yet, similar lengths batched together."""
        todo = sorted({t for t in texts if t not in self.cache}, key=len)
        for i in range(0, len(todo), BATCH):
            batch = todo[i : i + BATCH]
            self.cache.update(zip(batch, self.inner.embed(batch), strict=True))

    def embed(self, texts: list[str]) -> Vector:
        """One row per text (cached)."""
        self.warm(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.vstack([self.cache[t] for t in texts])

    def embed_one(self, text: str) -> Vector:
        """One vector (cached)."""
        self.warm([text])
        return self.cache[text]


class RawTurns:
    """Dense, BM25 and fusion rankings over a list of raw turn texts."""

    def __init__(self, texts: list[str], vectors: np.ndarray) -> None:
        self.vectors = vectors
        self._conn = sqlite3.connect(":memory:")
        self._conn.execute("CREATE VIRTUAL TABLE t USING fts5(text, tokenize='porter unicode61')")
        self._conn.executemany("INSERT INTO t(rowid, text) VALUES (?, ?)", enumerate(texts))

    def dense(self, vector: Vector, n: int, said: np.ndarray | None = None) -> list[int]:
        """Turn indexes by cosine, best first (only the `said` ones, a mask, when given)."""
        if not len(self.vectors):
            return []
        order = np.argsort(-(self.vectors @ vector), kind="stable")
        if said is not None:
            order = order[said[order]]
        return [int(i) for i in order[:n]]

    def bm25(self, query: str, n: int, said: np.ndarray | None = None) -> list[int]:
        """Turn indexes by BM25, best first (only the `said` ones, a mask, when given)."""
        match = fts_query(query)
        if match is None:
            return []
        if said is None:
            rows = self._conn.execute(
                "SELECT rowid FROM t WHERE t MATCH ? ORDER BY bm25(t) LIMIT ?", (match, n)
            )
            return [int(r[0]) for r in rows]
        rows = self._conn.execute("SELECT rowid FROM t WHERE t MATCH ? ORDER BY bm25(t)", (match,))
        return [i for i in (int(r[0]) for r in rows) if said[i]][:n]

    def rankings(
        self, query: str, vector: Vector, n: int, said: np.ndarray | None = None
    ) -> dict[str, list[int]]:
        """All three rankings (the fusion of the first two by reciprocal rank); `said`: a mask
        of the turns said by the time of asking (the others are never returned)."""
        dense, bm25 = self.dense(vector, n, said), self.bm25(query, n, said)
        fused: dict[int, float] = {}
        for ranking in (dense, bm25):
            for rank, i in enumerate(ranking):
                fused[i] = fused.get(i, 0.0) + 1.0 / (RRF_K + rank + 1)
        fusion = sorted(fused, key=lambda i: -fused[i])[:n]
        return {"dense": dense, "bm25": bm25, "fusion": fusion}

    def close(self) -> None:
        """Free the FTS table."""
        self._conn.close()
