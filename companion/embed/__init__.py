"""Sentence embeddings: one vector per message, shared by the cache and the memory."""

from __future__ import annotations

from companion.embed.base import Embedder, TokenEncoder, Vector
from companion.embed.memo import MemoEmbedder
from companion.embed.onnx_minilm import OnnxMiniLM


def load_embedder(threads: int = 1) -> MemoEmbedder:
    """The shipped model (paraphrase-MiniLM-L3-v2 on onnxruntime), memoised per text."""
    return MemoEmbedder(OnnxMiniLM(threads=threads))


__all__ = ["Embedder", "MemoEmbedder", "OnnxMiniLM", "TokenEncoder", "Vector", "load_embedder"]
