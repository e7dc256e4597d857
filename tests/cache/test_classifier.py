"""The shipped pair classifier (int8 ONNX, onnxruntime + tokenizers) and its place in lookups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from companion.cache import CacheTable, ResponseCache
from companion.cache.classifier import MODEL, PairClassifier, shared_classifier
from companion.cache.semantic import SAME_MEANING_LOGIT, SemanticCache
from companion.embed import MemoEmbedder
from companion.errors import ModelLoadError
from companion.storage import Store
from tests.cache.conftest import Clock
from tests.cache.test_exact import keep, probe


def test_the_shipped_file_loads_and_tells_a_paraphrase_from_a_near_miss() -> None:
    assert MODEL.is_file() and MODEL.stat().st_size < 25 * 2**20  # fits the repository
    clf = shared_classifier()
    same, dog_cat, love_hate = clf.logits(
        [
            ("How do I bake sourdough bread?", "how can i bake sourdough bread"),
            ("Can dogs eat grapes?", "Can cats eat grapes?"),
            ("I love you.", "I hate you."),
        ]
    )
    assert same >= SAME_MEANING_LOGIT > max(dog_cat, love_hate), (same, dog_cat, love_hate)
    assert clf.logits([]).shape == (0,)
    # one batch or one pair at a time: the same logits (padding changes only int8 rounding)
    one = clf.logits([("Can dogs eat grapes?", "Can cats eat grapes?")])
    assert np.allclose(one, [dog_cat], atol=0.1)


def test_a_missing_file_is_a_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError):
        PairClassifier(tmp_path / "none.onnx")


def _semantic(store: Store, clock: Clock, **kw: object) -> SemanticCache:
    return SemanticCache(CacheTable(store.engine), dim=384, clock=clock, **kw)  # type: ignore[arg-type]


def test_the_classifier_decides_which_neighbour_is_served(
    cache: ResponseCache, store: Store, embedder: MemoEmbedder, clock: Clock
) -> None:
    """The same stored entry and the same paraphrase: served at the shipped logit, refused when
    the logit bar is out of reach, and nothing (no error) when the classifier cannot load."""
    keep(cache, "How do I bake sourdough bread?", "Start with a starter.")
    asked = probe("how can i bake sourdough bread")
    asked = type(asked)(asked.key, asked.message, embedder.embed_one(asked.message))
    hit = _semantic(store, clock).lookup(asked, cache.exact.get)
    assert hit is not None and hit.entry.response == "Start with a starter."
    strict = _semantic(store, clock, logit=100.0)
    assert strict.lookup(asked, cache.exact.get) is None and strict.rejected == 1

    def broken() -> PairClassifier:
        return PairClassifier(Path("/nonexistent/pair_classifier.onnx"))

    gone = _semantic(store, clock, classifier=broken)
    assert gone.lookup(asked, cache.exact.get) is None
