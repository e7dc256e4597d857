"""Two real `companion serve` processes sharing one PostgreSQL (pgvector) and one Redis: what one
instance learns or changes, the other serves at once; a user's rate limit holds across both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import Postgres, Redis, free_port

RATE = 8  # requests a minute per user, for both instances together
MAX_TOKENS = 24  # the setting; a persona's verbosity scales it (1.0: 36; 0.0: the floor, 16)
pytestmark = pytest.mark.timeout(900)  # two model servers on one busy machine


def _start(port: int, data_dir: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    binary = str(Path(sys.executable).parent / "companion")
    return subprocess.Popen(
        [binary, "--data-dir", str(data_dir), "serve", "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited: {proc.communicate()[0]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    pytest.fail(f"server did not start: {proc.communicate()[0]}")


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory, pg_server: Postgres, redis_server: Redis
) -> Iterator[tuple[str, str]]:
    """Two instances (A, B) on one fresh database and one Redis prefix."""
    env = {
        "COMPANION_DATABASE_URL": pg_server.fresh(),
        "COMPANION_REDIS_URL": redis_server.url,
        "COMPANION_REDIS_PREFIX": f"pair{free_port()}:",
        "COMPANION_MODEL_SIZE": "tiny",
        "COMPANION_RATE_LIMIT_PER_MINUTE": str(RATE),
        "COMPANION_ENGINE_PARALLEL": "2",
        "COMPANION_MAX_TOKENS": str(MAX_TOKENS),
    }
    procs, urls = [], []
    for name in ("a", "b"):
        port = free_port()
        procs.append(_start(port, tmp_path_factory.mktemp(name), env))
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url, proc in zip(urls, procs, strict=True):
            _wait(url, proc)
        yield urls[0], urls[1]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def chat(url: str, user: str, message: str, **extra: object) -> httpx.Response:
    body = {"user_id": user, "message": message, **extra}
    return httpx.post(f"{url}/api/v1/chat", json=body, timeout=300)


def test_a_reply_cached_through_one_is_a_hit_through_the_other(pair: tuple[str, str]) -> None:
    a, b = pair
    first = chat(a, "cache-1", "What is the capital of France?")
    assert first.status_code == 200 and not first.json()["cached"]
    second = chat(b, "cache-2", "What is the capital of France?")
    assert second.status_code == 200
    assert second.json()["cached"] and second.json()["response"] == first.json()["response"]


def test_a_memory_added_through_one_is_recalled_through_the_other(pair: tuple[str, str]) -> None:
    a, b = pair
    added = httpx.post(
        f"{a}/api/v1/users/mem-1/memories",
        json={"text": "My sister Alice lives in Lisbon"},
        timeout=60,
    )
    assert added.status_code == 201
    found = httpx.get(
        f"{b}/api/v1/users/mem-1/memories/search",
        params={"q": "Where does my sister live?"},
        timeout=60,
    ).json()
    assert any("Lisbon" in m["text"] for m in found["memories"])
    reply = chat(b, "mem-1", "Where does my sister live?").json()
    assert any("Lisbon" in m["text"] for m in reply["memories_used"])
    httpx.delete(f"{a}/api/v1/users/mem-1/memories/{added.json()['id']}", timeout=60)
    again = chat(b, "mem-1", "Where does my sister live now?").json()
    # the fact is gone on B at once (the earlier turns, recalled as episodes, still say it)
    assert not any("Lisbon" in m["text"] for m in again["memories_used"] if m["type"] == "fact")


def test_a_persona_edit_through_one_shapes_the_next_reply_through_the_other(
    pair: tuple[str, str],
) -> None:
    a, b = pair
    persona = {"name": "Verbose Vera", "traits": {"verbosity": 1.0}}
    made = httpx.post(f"{a}/api/v1/personas", json=persona, timeout=60).json()
    httpx.put(f"{a}/api/v1/users/persona-1/persona", json={"persona_id": made["id"]}, timeout=60)
    story = "Tell me a very long story about the sea and the ships on it."
    long = chat(b, "persona-1", story, temperature=0).json()  # greedy: no early end by chance
    assert long["usage"]["completion_tokens"] > 16  # verbosity 1.0: up to 36
    httpx.patch(
        f"{a}/api/v1/personas/{made['id']}", json={"traits": {"verbosity": 0.0}}, timeout=60
    )
    short = chat(b, "persona-1", story + " Please.").json()
    assert short["usage"]["completion_tokens"] <= 16  # verbosity 0.0: at most 16


def test_a_users_rate_limit_holds_across_both(pair: tuple[str, str]) -> None:
    a, b = pair
    chat(a, "rate-0", "Hello there!")  # another user fills the shared cache: the rest are quick
    codes = [chat(url, "rate-1", "Hello there!").status_code for url in (a, b) * RATE]
    assert codes.count(200) == RATE and codes.count(429) == RATE  # RATE in all, not 2 x RATE
    assert set(codes[:RATE]) == {200}
