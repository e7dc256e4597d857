"""The semantic layer: the nearest cached messages in the same partition, verified before use.

A partition is everything in the key but the message (model, persona, options, scope, context),
so a neighbour can only come from the same scope, persona and model. Each partition is searched
exactly with numpy while small; past ANN_MIN_ENTRIES a usearch HNSW index takes over (built in
the background; exact search serves until it is ready).

The decision (docs/cache.md): of the nearest CANDIDATES neighbours with cosine >= the prefilter,
those the detail rules (cache/verify.py) accept go, in one batch, to the pair classifier
(companion/cache/classifier.py); the one it scores highest is served when its logit reaches
SAME_MEANING_LOGIT.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from companion.cache.base import CacheEntry, CacheHit, Probe
from companion.cache.classifier import PairClassifier, shared_classifier
from companion.cache.table import CacheTable
from companion.cache.verify import rule_check
from companion.embed.base import Vector
from companion.errors import ModelLoadError

log = logging.getLogger("companion.cache")

# Measured on this machine (docs/cache.md): exact search of 384-d vectors costs 0.13 ms at
# 10k and 0.5 ms at 20k entries, HNSW 0.2 and 0.4 ms; past 20k exact search grows fast.
ANN_MIN_ENTRIES = 20_000
# Calibrated by `bench cache` on the dev halves of the dev sets (companion.bench.devsets,
# docs/cache.md): the cosine prefilter (it caps the hits: only pairs above it reach the
# classifier) and the classifier's logit that keeps false hits <= 1% on every set.
SIMILARITY_THRESHOLD = 0.90
SAME_MEANING_LOGIT = 3.0
CANDIDATES = 3


@dataclass(frozen=True)
class Neighbour:
    """A cached message near the query."""

    key: str
    message: str
    similarity: float


class PartitionIndex:
    """The vectors of one partition: a growing matrix, and an HNSW index once it is large."""

    def __init__(self, dim: int, ann_min: int = ANN_MIN_ENTRIES) -> None:
        """An empty index of `dim`-wide unit vectors."""
        self.dim = dim
        self.ann_min = ann_min
        self.keys: list[str] = []
        self.messages: list[str] = []
        self.slot: dict[str, int] = {}
        self._matrix = np.zeros((16, dim), dtype=np.float32)
        self._live = np.zeros(16, dtype=bool)
        self._ann: object | None = None
        self._building = False
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.slot)

    def add(self, key: str, message: str, vector: Vector) -> None:
        """Add (or replace) one entry's vector."""
        with self._lock:
            self._drop(key)
            row = len(self.keys)
            if row == len(self._matrix):
                self._matrix = np.concatenate([self._matrix, np.zeros_like(self._matrix)])
                self._live = np.concatenate([self._live, np.zeros_like(self._live)])
            self._matrix[row], self._live[row] = vector, True
            self.keys.append(key)
            self.messages.append(message)
            self.slot[key] = row
            ann = self._ann
        if ann is not None:
            ann.add(row, vector)  # type: ignore[attr-defined]
        elif len(self.slot) >= self.ann_min and not self._building:
            self._start_ann()

    def remove(self, key: str) -> None:
        """Forget one entry."""
        with self._lock:
            self._drop(key)

    def search(self, vector: Vector, k: int, threshold: float) -> list[Neighbour]:
        """Up to k live entries with cosine >= threshold, nearest first."""
        with self._lock:
            ann, n = self._ann, len(self.keys)
            if ann is None:
                sims = self._matrix[:n] @ vector
                sims[~self._live[:n]] = -1.0
                top = np.argsort(-sims)[:k] if n <= k else np.argpartition(-sims, k)[:k]
                rows = [(int(r), float(sims[r])) for r in top]
        if ann is not None:
            found = ann.search(vector, k * 2)  # type: ignore[attr-defined]
            rows = [
                (int(r), 1.0 - float(d)) for r, d in zip(found.keys, found.distances, strict=True)
            ]
        with self._lock:
            hits = [
                Neighbour(self.keys[r], self.messages[r], s)
                for r, s in rows
                if s >= threshold and r < len(self.keys) and self._live[r]
            ]
        return sorted(hits, key=lambda h: -h.similarity)[:k]

    def _drop(self, key: str) -> None:
        """Mark a key's row dead (caller holds the lock)."""
        row = self.slot.pop(key, None)
        if row is not None:
            self._live[row] = False
            if self._ann is not None:
                self._ann.remove(row)  # type: ignore[attr-defined]

    def _start_ann(self) -> None:
        """Build the HNSW index in a thread from the rows so far, then switch to it."""
        self._building = True
        threading.Thread(target=self._build_ann, name="cache-ann-build", daemon=True).start()

    def _build_ann(self) -> None:
        """Index a snapshot, add rows that came meanwhile, then serve searches from it."""
        from usearch.index import Index

        index = Index(ndim=self.dim, metric="cos", dtype="f32")
        with self._lock:
            n = len(self.keys)
            live = np.flatnonzero(self._live[:n])
            snapshot = self._matrix[live].copy()
        index.add(live, snapshot)
        with self._lock:
            extra = [r for r in range(n, len(self.keys)) if self._live[r]]
            if extra:
                index.add(np.array(extra), self._matrix[extra])
            dead = [r for r in live if not self._live[r]]
            for r in dead:
                index.remove(int(r))
            self._ann = index
        log.info("cache partition switched to HNSW search at %d entries", len(live))


class SemanticCache:
    """Per-partition vector search with the pair classifier in front of every hit."""

    def __init__(
        self,
        table: CacheTable,
        *,
        dim: int,
        threshold: float = SIMILARITY_THRESHOLD,
        logit: float = SAME_MEANING_LOGIT,
        clock: Callable[[], float],
        classifier: Callable[[], PairClassifier] = shared_classifier,
    ) -> None:
        """Partitions load lazily from the table on their first lookup; the classifier on the
        first lookup that has candidates."""
        self.table = table
        self.dim = dim
        self.threshold = threshold
        self.logit = logit
        self.clock = clock
        self._classifier = classifier
        self._broken = False
        self._partitions: dict[str, PartitionIndex] = {}
        self._lock = threading.Lock()
        self.rejected = 0

    def lookup(self, probe: Probe, fetch: Callable[[str], CacheEntry | None]) -> CacheHit | None:
        """The nearest verified neighbour's entry, or None; `fetch` reads an entry by key."""
        if probe.vector is None:
            return None
        index = self._partition(probe.key.partition)
        near = []
        for n in index.search(probe.vector, CANDIDATES, self.threshold):
            verdict = rule_check(probe.message, n.message)
            if verdict.ok:
                near.append(n)
            else:
                self.rejected += 1
                log.debug("semantic candidate rejected (%s): %r vs %r", verdict.reason,
                          probe.message, n.message)  # fmt: skip
        if not near or self._broken:
            return None
        try:
            classifier = self._classifier()
        except ModelLoadError:
            log.exception("pair classifier unavailable: the semantic layer serves nothing")
            self._broken = True
            return None
        logits = classifier.logits([(n.message, probe.message) for n in near])
        for i in np.argsort(-logits, kind="stable"):
            if logits[i] < self.logit:
                self.rejected += 1
                log.debug(
                    "semantic candidate rejected (logit %.2f): %r vs %r",
                    logits[i],
                    probe.message,
                    near[i].message,
                )
                continue
            entry = fetch(near[i].key)
            if entry is None:  # expired or evicted meanwhile
                index.remove(near[i].key)
                continue
            return CacheHit(entry, "semantic", near[i].similarity)
        return None

    def add(self, entry: CacheEntry) -> None:
        """Index a stored entry's vector."""
        if entry.vector is not None:
            self._partition(entry.partition).add(entry.key, entry.message, entry.vector)

    def remove(self, gone: list[tuple[str, str]]) -> None:
        """Forget deleted entries."""
        with self._lock:
            for key, partition in gone:
                index = self._partitions.get(partition)
                if index is not None:
                    index.remove(key)

    def clear(self) -> None:
        """Forget every partition (they reload from the table when next used)."""
        with self._lock:
            self._partitions.clear()

    def vectors(self) -> int:
        """Vectors held in process."""
        with self._lock:
            return sum(len(p) for p in self._partitions.values())

    def _partition(self, partition: str) -> PartitionIndex:
        """The partition's index, loaded from the table the first time."""
        with self._lock:
            index = self._partitions.get(partition)
            if index is not None:
                return index
            index = self._partitions[partition] = PartitionIndex(self.dim)
        for key, message, vector in self.table.partition(partition, self.clock()):
            index.add(key, message, vector)
        return index
