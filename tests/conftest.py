"""Shared fixtures: real settings in a temporary data dir, and a real runtime (tiny model)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from companion.config import Settings, load_settings
from companion.runtime import Runtime, open_runtime


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's own settings or data."""
    for var in ("COMPANION_CONFIG", "COMPANION_DATA_DIR", "COMPANION_MODEL_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COMPANION_DATA_DIR", str(tmp_path / "data"))


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    return load_settings(data_dir=data_dir, model_size="tiny", **overrides)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = open_runtime(settings)
    yield rt
    rt.close()
