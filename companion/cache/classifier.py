"""The pair classifier: does a cached message mean the same as the new one?

A small cross-encoder (all-MiniLM-L6-v2's embeddings and 6 layers reading
"[CLS] cached [SEP] new [SEP]", one same-meaning logit), fine-tuned on the `train` halves of the
dev sets by scripts/train_pair_classifier.py and shipped as int8 ONNX beside this module. It runs
with onnxruntime and tokenizers (no torch), only on the few neighbours above the cosine prefilter:
one batch of at most CANDIDATES pairs per lookup. docs/cache.md has the training command and
what it gains at equal false-hit rate.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from companion.embed.onnx_minilm import bert_tokenizer, cpu_session
from companion.errors import ModelLoadError

MODEL = Path(__file__).resolve().parent / "data" / "pair_classifier.onnx"


class PairClassifier:
    """Same-meaning logits for (cached, new) message pairs."""

    def __init__(self, path: Path = MODEL, threads: int = 1) -> None:
        """Load the graph and the tokenizer; ModelLoadError when the file is missing or bad."""
        if not path.is_file():
            raise ModelLoadError(f"pair classifier {path} not found")
        self._session = cpu_session(path, threads, "pair classifier")
        self._tokenizer = bert_tokenizer()
        self._lock = threading.Lock()  # the tokenizer's padding state is shared

    def logits(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """One logit per (cached, new) pair: > 0 leans same meaning."""
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        with self._lock:
            encoded = self._tokenizer.encode_batch(pairs)
        feed = {
            "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encoded], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
        }
        (out,) = self._session.run(["logit"], feed)
        return np.asarray(out, dtype=np.float32).reshape(len(pairs))


_shared: PairClassifier | None = None
_shared_lock = threading.Lock()


def shared_classifier() -> PairClassifier:
    """The process's one classifier (loaded on first use: 0.2 s, ~60 MB)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = PairClassifier()
        return _shared
