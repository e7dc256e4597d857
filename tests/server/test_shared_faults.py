"""Faults of the shared servers, with real servers stopped and started again: PostgreSQL down is
503 database_unavailable with Retry-After, then serving resumes without a restart; Redis down
for 20 s under load fails no reply, health says `redis: degraded`, and it recovers by itself."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from companion.runtime import open_runtime
from companion.server.app import create_app
from tests.conftest import make_settings
from tests.servers import Postgres, Redis

REDIS_DOWN_S = 20
pytestmark = pytest.mark.timeout(600)  # a generation can take a minute on a busy machine


def _client(tmp_path: Path, **overrides: object) -> Iterator[TestClient]:
    runtime = open_runtime(make_settings(tmp_path / "data", max_tokens=8, **overrides))
    try:
        with TestClient(create_app(runtime.settings, runtime)) as client:
            yield client
    finally:
        runtime.close()


@pytest.fixture
def pg_client(
    tmp_path: Path, pg_url: str, redis_server: Redis, redis_prefix: str
) -> Iterator[TestClient]:
    yield from _client(
        tmp_path, database_url=pg_url, redis_url=redis_server.url, redis_prefix=redis_prefix
    )


def test_postgres_down_is_503_with_retry_after_then_resumes(
    pg_client: TestClient, pg_server: Postgres
) -> None:
    ok = pg_client.post("/api/v1/chat", json={"user_id": "pat", "message": "Hello!"})
    assert ok.status_code == 200
    session = ok.json()["session_id"]
    pg_server.stop()
    try:
        down = pg_client.post(
            "/api/v1/chat",
            json={"user_id": "pat", "message": "Still there?", "session_id": session},
        )
        assert down.status_code == 503
        assert down.json()["error"]["code"] == "database_unavailable"
        assert int(down.headers["Retry-After"]) >= 1
        health = pg_client.get("/api/v1/health")
        assert health.status_code == 503 and health.json()["checks"]["database"]["status"] == "down"
    finally:
        pg_server.start()
    codes = []
    for _ in range(3):  # the pool drops its dead connections on first use, then reconnects
        codes.append(pg_client.get("/api/v1/sessions", params={"user_id": "pat"}).status_code)
        if codes[-1] == 200:
            break
    assert codes[-1] == 200
    again = pg_client.post(
        "/api/v1/chat", json={"user_id": "pat", "message": "Back again?", "session_id": session}
    )
    assert again.status_code == 200
    messages = pg_client.get(f"/api/v1/sessions/{session}/messages").json()["messages"]
    assert [m["text"] for m in messages if m["role"] == "user"] == ["Hello!", "Back again?"]


@pytest.fixture
def redis_client(tmp_path: Path, redis_server: Redis, redis_prefix: str) -> Iterator[TestClient]:
    yield from _client(
        tmp_path,
        redis_url=redis_server.url,
        redis_prefix=redis_prefix,
        rate_limit_per_minute=100000,
    )


def test_redis_stopped_for_20_s_under_load_fails_no_reply(
    redis_client: TestClient, redis_server: Redis
) -> None:
    codes: list[int] = []
    stop = threading.Event()

    def user(n: int) -> None:
        sent = 0
        while not stop.is_set():  # user 0 has the model generate; the others get cached replies
            message = f"Count to {sent}." if n == 0 else "What is the capital of France?"
            body = {"user_id": f"load-{n}", "message": message}
            codes.append(redis_client.post("/api/v1/chat", json=body).status_code)
            sent += 1

    warm = {"user_id": "load-0", "message": "What is the capital of France?"}
    assert redis_client.post("/api/v1/chat", json=warm).status_code == 200
    workers = [threading.Thread(target=user, args=(n,)) for n in range(4)]
    for w in workers:
        w.start()
    try:
        time.sleep(2)
        redis_server.stop()
        before = len(codes)
        time.sleep(1)
        health = redis_client.get("/api/v1/health").json()
        assert health["redis"] == "degraded" and health["status"] == "degraded"
        time.sleep(REDIS_DOWN_S - 1)
        during = len(codes) - before
    finally:
        redis_server.start()
    time.sleep(4)  # the breaker's cool-down, then the next call closes it
    stop.set()
    for w in workers:
        w.join(timeout=120)
    assert during > 0  # replies went on while Redis was down
    assert codes and set(codes) == {200}, f"failed replies: {[c for c in codes if c != 200]}"
    assert redis_client.get("/api/v1/health").json()["redis"] == "ok"
