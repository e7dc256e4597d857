"""The Embedder protocol: text in, unit-length float32 vectors out."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]


class Embedder(Protocol):
    """A sentence-embedding model; vectors are L2-normalised so a dot product is the cosine."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def identity(self) -> str:
        """A content identity of the weights (changes when the model file changes)."""
        ...

    def embed(self, texts: list[str]) -> Vector:
        """One row per text, shape (len(texts), dim)."""
        ...

    def embed_one(self, text: str) -> Vector:
        """One vector, shape (dim,)."""
        ...


@runtime_checkable
class TokenEncoder(Protocol):
    """An embedder that can also give the unit vectors of each text's tokens."""

    def token_states(self, texts: list[str]) -> list[Vector]:
        """Per text, an array (tokens, dim) of unit vectors."""
        ...
