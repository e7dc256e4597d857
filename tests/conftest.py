"""Shared fixtures: real settings in a temporary data dir, and a real runtime (tiny model)."""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from companion.config import Settings, load_settings
from companion.runtime import Runtime, open_runtime
from companion.server.app import create_app
from tests.servers import Postgres, Redis

# get_performance_stats()'s fields as the spec names them
SPEC_STATS_FIELDS = (
    "avg_response_time", "cache_hit_rate", "memory_usage_mb", "tokens_per_second",
    "model_load_time", "requests", "errors",
)  # fmt: skip


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's own settings or data."""
    for var in ("COMPANION_CONFIG", "COMPANION_DATA_DIR", "COMPANION_MODEL_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COMPANION_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Postgres]:
    """The bundled PostgreSQL 18 + pgvector, started once per test session (in a folder of its
    own: pytest's numbered temp folders are pruned by other pytest runs on the machine)."""
    folder = Path(tempfile.mkdtemp(prefix="companion-pg-"))
    try:
        server = Postgres(folder / "data")
        yield server
        server.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: Postgres) -> str:
    """A fresh migrated PostgreSQL database for one test."""
    return pg_server.fresh()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Redis]:
    """A private redis-server for the test session."""
    server = Redis()
    yield server
    server.close()


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of one test's own (tests share the session's Redis)."""
    return f"t{uuid.uuid4().hex[:10]}:"


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    return load_settings(data_dir=data_dir, model_size="tiny", **overrides)


def stop_report_run(app: Any) -> None:
    """End a report run a test started through POST /api/v1/report/run (it runs benchmarks)."""
    job = getattr(app.state, "report_job", None)
    if job is not None:
        job.stop()


def keyed_settings(data_dir: Path, **overrides: object) -> Settings:
    """Keys on, short replies, limits no test reaches: for tests that call many routes."""
    given: dict[str, object] = {
        "auth": True,
        "max_tokens": 2,
        "rate_limit_per_minute": 1_000_000,
        "max_concurrent_per_user": 64,
        "memory_llm_extraction": "off",
    }
    return make_settings(data_dir, **{**given, **overrides})


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = open_runtime(settings)
    yield rt
    rt.close()


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime.settings, runtime)) as c:
        yield c


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a Server-Sent Events body."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events
