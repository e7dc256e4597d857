"""Honest admission on a real llama-server: one `companion serve` whose `model_servers` is one
llama-server with one slot and a short request_timeout_s. A flood of first messages is answered
200 or, at once, 429 `overloaded` with Retry-After (never 504 after waiting out the deadline),
and a refused first message leaves no session behind."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from companion.bench.topology import Proc, app_instance, llama_server_path, model_server
from companion.llm.registry import tiny_package_path

pytestmark = pytest.mark.timeout(300)
TIMEOUT_S = 6  # request_timeout_s
FLOOD = 12


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if llama_server_path() is None:
        pytest.fail("no llama-server: run scripts/build-llama-server.sh (make test does)")
    model = tiny_package_path()
    assert model is not None
    folder = tmp_path_factory.mktemp("remote-admission")
    server = model_server(model, folder, slots=1)
    env = {"COMPANION_MODEL_PATH": str(model), "COMPANION_MEMORY_ENABLED": "false",
           "COMPANION_ENABLE_CACHING": "false", "COMPANION_RATE_LIMIT_PER_MINUTE": "1000",
           "COMPANION_MAX_TOKENS": "24", "COMPANION_REQUEST_TIMEOUT_S": str(TIMEOUT_S),
           "COMPANION_MODEL_SERVERS": json.dumps([server.url])}  # fmt: skip
    app = app_instance(folder, env)
    procs: list[Proc] = []
    try:
        for proc in (server, app):
            proc.start()
            procs.append(proc)
        yield app.url
    finally:
        for proc in reversed(procs):
            proc.stop()


def chat(url: str, user: str) -> httpx.Response:
    body = {"user_id": user, "message": "Tell me a story about a lighthouse keeper."}
    return httpx.post(f"{url}/api/v1/chat", json=body, timeout=60)


def test_a_flood_is_refused_at_once_with_429_not_left_to_time_out(front: str) -> None:
    taught = chat(front, "adm-teach")  # one reply: the server's hold time is known
    assert taught.status_code == 200, taught.text
    users = [f"adm-{i}" for i in range(FLOOD)]
    started = time.monotonic()
    with ThreadPoolExecutor(FLOOD) as pool:
        answers = list(pool.map(lambda u: (chat(front, u), time.monotonic() - started), users))
    codes = [resp.status_code for resp, _ in answers]
    assert set(codes) <= {200, 429}, [r.text for r, _ in answers if r.status_code not in (200, 429)]
    assert 200 in codes and 429 in codes, codes
    for user, (resp, took) in zip(users, answers, strict=True):
        sessions = httpx.get(f"{front}/api/v1/sessions", params={"user_id": user}).json()
        if resp.status_code == 429:
            assert resp.json()["error"]["code"] == "overloaded"
            assert int(resp.headers["Retry-After"]) >= 1
            assert took < TIMEOUT_S / 2  # refused at once, not after waiting
            assert sessions == []  # nothing half-written
        else:
            assert took < TIMEOUT_S + 2  # admitted ones end in time
            assert len(sessions) == 1
    health = httpx.get(f"{front}/api/v1/health").json()
    assert "busy" in json.dumps(health)  # the server's load and hold time are shown


# Greedy, no repeat penalty: the tiny model runs this to max_tokens, many times the short
# replies' time in the slot.
LONG = {"message": "la " * 40, "max_tokens": 48, "temperature": 0.0, "repeat_penalty": 1.0,
        "seed": 1, "stream": True}  # fmt: skip


def stream(url: str, body: dict[str, object]) -> tuple[int, dict[str, str], str]:
    """A streamed turn: its status, headers and body (to its end; a reply that started and ran
    out of time may end in an error event or a cut stream: what comes is kept)."""
    with httpx.stream("POST", f"{url}/api/v1/chat", json=body, timeout=60) as resp:
        text = ""
        with contextlib.suppress(httpx.HTTPError):
            text = resp.read().decode()
        return resp.status_code, dict(resp.headers), text


def test_queued_requests_that_fall_behind_are_refused_with_429_not_left_to_time_out(
    front: str,
) -> None:
    for i in range(20):  # short replies: the hold time the flood is admitted on is short
        short = {"user_id": f"q-teach-{i}", "message": "Hi.", "max_tokens": 1}
        assert httpx.post(f"{front}/api/v1/chat", json=short, timeout=60).status_code == 200
    users = [f"q-{i}" for i in range(16)]
    with ThreadPoolExecutor(len(users)) as pool:
        answers = list(pool.map(lambda u: stream(front, {**LONG, "user_id": u}), users))
    codes = [code for code, _, _ in answers]
    # admitted on the short hold time, most of the flood cannot be answered in time once the
    # long replies show their real hold: refused while still queued (429), never left to wait
    # out the deadline before its first token (that would be a 504 status)
    assert set(codes) <= {200, 429}, [t for c, _, t in answers if c not in (200, 429)]
    assert 200 in codes and 429 in codes, codes
    stats = httpx.get(f"{front}/api/v1/stats").json()
    assert stats["engine"]["refused_queued"] >= 1
    for user, (code, headers, text) in zip(users, answers, strict=True):
        if code == 200:
            continue
        assert json.loads(text)["error"]["code"] == "overloaded"
        assert int(headers["retry-after"]) >= 1
        sessions = httpx.get(f"{front}/api/v1/sessions", params={"user_id": user}).json()
        for session in sessions:  # refused in the queue: the exchange is failed, not pending
            url = f"{front}/api/v1/sessions/{session['id']}/messages"
            statuses = {m["status"] for m in httpx.get(url).json()["messages"]}
            assert statuses == {"failed"}, statuses
