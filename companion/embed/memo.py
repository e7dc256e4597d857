"""A memo in front of an embedder: the same text is embedded once (repeat questions are common)."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from companion.embed.base import Embedder, TokenEncoder, Vector
from companion.embed.batcher import Coalescer

MEMO_ENTRIES = 4096


class MemoEmbedder:
    """Wraps an embedder; remembers the vectors of the last MEMO_ENTRIES texts."""

    def __init__(self, inner: Embedder, entries: int = MEMO_ENTRIES) -> None:
        """Memoise `inner`'s single-text embeddings."""
        self.inner = inner
        self.entries = entries
        self._memo: OrderedDict[str, Vector] = OrderedDict()
        self._lock = threading.Lock()
        self._batch = Coalescer(inner.embed)  # concurrent requests share one model call

    @property
    def name(self) -> str:
        """The inner model's name."""
        return self.inner.name

    @property
    def dim(self) -> int:
        """The inner model's width."""
        return self.inner.dim

    @property
    def identity(self) -> str:
        """The inner model's identity."""
        return self.inner.identity

    def embed(self, texts: list[str]) -> Vector:
        """Batches go straight to the model."""
        return self.inner.embed(texts)

    def embed_one(self, text: str) -> Vector:
        """One vector, from the memo when this exact text was seen lately."""
        with self._lock:
            found = self._memo.get(text)
            if found is not None:
                self._memo.move_to_end(text)
                return found
        vector = self._batch.embed_one(text)
        vector.setflags(write=False)
        with self._lock:
            self._memo[text] = vector
            while len(self._memo) > self.entries:
                self._memo.popitem(last=False)
        return vector

    def token_states(self, texts: list[str]) -> list[Vector]:
        """Token vectors from the inner model (empty arrays when it has none)."""
        if isinstance(self.inner, TokenEncoder):
            return self.inner.token_states(texts)
        return [np.zeros((0, self.dim), dtype=np.float32) for _ in texts]
