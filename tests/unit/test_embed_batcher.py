"""Concurrent embeddings coalesced into batched calls of the real ONNX model."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from companion.embed import OnnxMiniLM
from companion.embed.batcher import Coalescer

TEXTS = [f"My favourite hobby number {i} is painting small birds." for i in range(24)]


def test_concurrent_texts_share_model_calls_and_get_their_own_vectors() -> None:
    model = OnnxMiniLM()
    batcher = Coalescer(model.embed)
    start = threading.Barrier(len(TEXTS))

    def one(text: str) -> np.ndarray:
        start.wait()
        return batcher.embed_one(text)

    with ThreadPoolExecutor(len(TEXTS)) as pool:
        vectors = list(pool.map(one, TEXTS))
    alone = model.embed(TEXTS)
    for vector, expected in zip(vectors, alone, strict=True):
        assert np.allclose(vector, expected, atol=1e-5)
    assert batcher.texts == len(TEXTS) and batcher.calls < len(TEXTS)


def test_an_error_reaches_every_caller_of_its_batch() -> None:
    def broken(texts: list[str]) -> np.ndarray:
        raise RuntimeError("model failed")

    batcher = Coalescer(broken)
    with pytest.raises(RuntimeError, match="model failed"):
        batcher.embed_one("hello")
    assert batcher.calls == 1
