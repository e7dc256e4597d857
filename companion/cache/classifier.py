"""The pair classifier: does a cached message mean the same as the new one?

A small cross-encoder (all-MiniLM-L6-v2's embeddings and 6 layers reading
"[CLS] cached [SEP] new [SEP]", one same-meaning logit), fine-tuned on the `train` halves of the
dev sets by scripts/train_pair_classifier.py and shipped as int8 ONNX beside this module. It runs
with onnxruntime and tokenizers (no torch), only on the few neighbours above the cosine prefilter:
one batch of at most CANDIDATES pairs per lookup. docs/cache.md has the training command and
what it gains at equal false-hit rate.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import numpy as np

from companion.errors import ModelLoadError

MODEL = Path(__file__).resolve().parent / "data" / "pair_classifier.onnx"
VOCAB = Path(__file__).resolve().parents[1] / "embed" / "data" / "bert-base-uncased-vocab.txt"
MAX_TOKENS = 128  # the pair, [CLS] and both [SEP] included (as in training)


class PairClassifier:
    """Same-meaning logits for (cached, new) message pairs."""

    def __init__(self, path: Path = MODEL, threads: int = 1) -> None:
        """Load the graph and the tokenizer; ModelLoadError when the file is missing or bad."""
        import onnxruntime as ort  # type: ignore[import-untyped]
        from tokenizers import BertWordPieceTokenizer

        if not path.is_file():
            raise ModelLoadError(f"pair classifier {path} not found")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(path), opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelLoadError(f"cannot load pair classifier {path.name}: {exc}") from exc
        tok: Any = BertWordPieceTokenizer(str(VOCAB), lowercase=True)
        tok.enable_truncation(MAX_TOKENS)
        tok.enable_padding(pad_id=0, pad_token="[PAD]")
        self._tokenizer = tok
        self._lock = threading.Lock()  # the tokenizer's padding state is shared
        self.identity = hashlib.sha256(path.read_bytes()).hexdigest()[:16]

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
