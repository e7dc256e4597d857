"""Memory fixtures: a real SQLite store in tmp_path or a real PostgreSQL database (every test
that uses `store` or `memory` runs on both: the memory index's contract), and the real
embedding model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from companion.embed import Embedder, load_embedder
from companion.memory import CleanupPolicy, MemoryService
from companion.storage import Store, open_store


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return load_embedder()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    sqlite = f"sqlite:///{tmp_path / 'memory.db'}"
    s = open_store(sqlite if request.param == "sqlite" else request.getfixturevalue("pg_url"))
    yield s
    s.close()


@pytest.fixture
def memory(store: Store, embedder: Embedder) -> Iterator[MemoryService]:
    service = MemoryService(store, embedder, top_k=5, policy=CleanupPolicy(90, 0.3, 1000))
    yield service
    service.close()
