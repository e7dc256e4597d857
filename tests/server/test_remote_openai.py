"""A companion `/v1` as a model server: one `companion serve` on the tiny model, and a second one
with `model_servers` pointing at the first's `/v1` (the OpenAI protocol: token-id prompts to
/v1/completions, the session as `prompt_cache_key`). Chat through the front, plain and streamed;
a session's second turn reuses the first's KV cache on the model server; the model server killed,
the front answers 503 model_unavailable."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from companion.bench.topology import Proc, app_instance
from companion.llm.registry import tiny_package_path
from tests.servers import stream_cut

pytestmark = pytest.mark.timeout(300)
COMMON = {"COMPANION_MEMORY_ENABLED": "false", "COMPANION_ENABLE_CACHING": "false",
          "COMPANION_RATE_LIMIT_PER_MINUTE": "1000", "COMPANION_TEMPERATURE": "0",
          "COMPANION_MAX_TOKENS": "12", "COMPANION_REQUEST_TIMEOUT_S": "120"}  # fmt: skip


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc]]:
    """(model server, front): both real `companion serve` processes."""
    model = tiny_package_path()
    assert model is not None
    folder = tmp_path_factory.mktemp("remote-openai")
    env = {**COMMON, "COMPANION_MODEL_PATH": str(model)}
    server = app_instance(folder, env)
    front = app_instance(
        folder, {**env, "COMPANION_MODEL_SERVERS": json.dumps([f"{server.url}/v1"])}
    )
    procs = [server, front]
    try:
        for proc in procs:
            proc.start(wait=False)
        for proc in procs:
            proc.wait()
        yield server, front
    finally:
        for proc in procs:
            proc.stop()


def completion(url: str, **body: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/completions", json={"model": "companion", **body}, timeout=120)


def test_v1_completions_takes_token_ids_and_reuses_a_prompt_cache_key(
    pair: tuple[Proc, Proc],
) -> None:
    server, _ = pair
    prompt = list(range(300, 360))
    first = completion(server.url, prompt=prompt, max_tokens=4, temperature=0,
                       prompt_cache_key="conv-1", user="tok-1")  # fmt: skip
    assert first.status_code == 200, first.text
    out = first.json()
    assert out["usage"]["prompt_tokens"] == 60 and out["usage"]["completion_tokens"] <= 4
    assert out["choices"][0]["finish_reason"] in ("stop", "length")
    second = completion(server.url, prompt=prompt + [400, 401], max_tokens=4, temperature=0,
                        prompt_cache_key="conv-1", user="tok-1")  # fmt: skip
    assert second.status_code == 200, second.text
    assert second.json()["usage"]["prompt_tokens_details"]["cached_tokens"] >= 59
    for bad, wrong in (([1, 10**7], 10**7), ([-1, 2], -1)):
        refused = completion(server.url, prompt=bad, max_tokens=2)
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["param"] == "prompt" and error["type"] == "invalid_request_error", error
        assert f"{wrong} is not a token id" in error["message"]
    echo = completion(server.url, prompt=[300, 301], max_tokens=2, echo=True)
    assert echo.status_code == 400 and echo.json()["error"]["param"] == "echo"


def chat(url: str, message: str, session: str | None = None, **extra: object) -> httpx.Response:
    body: dict[str, object] = {"user_id": "rem-1", "message": message, **extra}
    if session is not None:
        body["session_id"] = session
    return httpx.post(f"{url}/api/v1/chat", json=body, timeout=120)


def test_chat_through_a_companion_v1_model_server(pair: tuple[Proc, Proc]) -> None:
    server, front = pair
    first = chat(front.url, "Hi! I like sailing and old maps.")
    assert first.status_code == 200, first.text
    assert first.json()["route"]["server"] == f"{server.url}/v1"
    assert first.json()["response"]
    session = first.json()["session_id"]
    # opening the session prefills it on the model server (a 1-token completion there)
    opened = httpx.post(
        f"{front.url}/api/v1/sessions/{session}/open", json={"user_id": "rem-1"}, timeout=60
    )
    assert opened.status_code == 200 and opened.json()["prefilled"], opened.text
    # the second turn's prompt starts with the first's: the model server reuses its KV cache
    second = chat(front.url, "Tell me more.", session)
    assert second.status_code == 200, second.text
    reused = second.json()["timings"]["reused_tokens"]
    assert reused > 0.8 * first.json()["usage"]["prompt_tokens"], second.json()
    # streamed, token by token
    events, pieces = [], []
    body = {"user_id": "rem-1", "session_id": session, "message": "And then?", "stream": True}
    with httpx.stream("POST", f"{front.url}/api/v1/chat", json=body, timeout=120) as resp:
        assert resp.status_code == 200
        event = ""
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
                events.append(event)
            elif line.startswith("data:") and event == "token":
                pieces.append(line)
    assert events[-1] == "done" and len(pieces) >= 2, events
    health = httpx.get(f"{front.url}/api/v1/health", timeout=30).json()
    servers = health["checks"]["model"]["servers"]
    assert [(s["url"], s["api"], s["status"]) for s in servers] == [
        (f"{server.url}/v1", "openai", "ok")
    ]


LONG = {"user_id": "rem-2", "stream": True, "max_tokens": 400, "temperature": 0,
        "message": "Write a very long story about the sea, with many chapters."}  # fmt: skip


def cancelled(server: Proc) -> float:
    stats = httpx.get(f"{server.url}/api/v1/stats", timeout=30).json()
    return float(stats["engine"]["cancelled"])


def test_the_client_leaving_stops_the_model_servers_generation(pair: tuple[Proc, Proc]) -> None:
    server, front = pair
    before = cancelled(server)
    stream_cut(front.url, LONG, lambda: False)
    deadline = time.monotonic() + 10
    while cancelled(server) == before:
        assert time.monotonic() < deadline, "the model server is still generating"
        time.sleep(0.2)


def test_the_model_server_killed_is_503_model_unavailable(pair: tuple[Proc, Proc]) -> None:
    server, front = pair
    # the reply running when it dies ends with an error event
    out = stream_cut(front.url, LONG, server.kill)
    assert out["events"][-1] == "error" and out["error"]["code"] == "model_unavailable", out
    assert out["ended_at"] - out["cut_at"] < 3
    deadline = time.monotonic() + 5
    while (r := chat(front.url, "Anyone there?")).status_code != 503:
        assert time.monotonic() < deadline, r.text
        time.sleep(0.5)
    assert r.json()["error"]["code"] == "model_unavailable", r.text
    assert int(r.headers["retry-after"]) >= 1
