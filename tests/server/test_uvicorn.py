"""A real `companion serve` process on a free loopback port."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import ENDLESS, serving


def test_curl_example_against_a_real_server(server: str) -> None:
    resp = httpx.post(f"{server}/api/v1/chat", json={"message": "test"}, timeout=120)
    assert resp.status_code == 200
    body = resp.json()
    assert body["response"].strip() and body["model"].startswith("SmolLM2")


def test_client_disconnect_stops_generation_and_marks_interrupted(server: str) -> None:
    payload = {
        "message": "Tell me a very long story about the sea.",
        "stream": True,
        "max_tokens": 400,
        "temperature": 0,  # greedy: runs to the limit (sampled, it may end at ~70)
        "user_id": "eve",
    }
    with (
        httpx.Client(timeout=60) as client,
        client.stream("POST", f"{server}/api/v1/chat", json=payload) as resp,
    ):
        assert resp.status_code == 200
        for n, _line in enumerate(resp.iter_lines()):
            if n > 6:
                break  # leave after a few tokens: the connection closes here
    session = httpx.get(f"{server}/api/v1/sessions", params={"user_id": "eve"}).json()[0]["id"]
    deadline = time.time() + 20
    statuses: list[str] = []
    while time.time() < deadline:
        messages = httpx.get(f"{server}/api/v1/sessions/{session}/messages").json()["messages"]
        statuses = [m["status"] for m in messages]
        if statuses and statuses[0] != "pending":
            break
        time.sleep(0.2)
    assert statuses[0] == "interrupted"
    reply = [m for m in messages if m["role"] == "assistant"]
    assert not reply or reply[0]["token_count"] is None or reply[0]["token_count"] < 400
    stats = httpx.get(f"{server}/api/v1/stats").json()
    assert stats["interrupted"] == 1


def test_openai_client_leaving_a_stream_marks_the_exchange_interrupted(server: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{server}/v1", api_key="unused", timeout=60)
    stream = client.chat.completions.create(
        model="companion",
        messages=[{"role": "user", "content": "Tell me a very long story about the sea."}],
        max_tokens=400,
        stream=True,
        user="finn",
    )
    for n, _chunk in enumerate(stream):
        if n > 6:
            break
    stream.close()  # the client leaves after a few tokens
    session = httpx.get(f"{server}/api/v1/sessions", params={"user_id": "finn"}).json()[0]["id"]
    deadline = time.time() + 20
    messages: list[dict[str, object]] = []
    while time.time() < deadline:
        messages = httpx.get(f"{server}/api/v1/sessions/{session}/messages").json()["messages"]
        if messages and messages[0]["status"] != "pending":
            break
        time.sleep(0.2)
    assert [m["status"] for m in messages] == ["interrupted", "interrupted"]
    assert str(messages[1]["text"]).strip()  # the words sent before it left are kept
    assert httpx.get(f"{server}/api/v1/stats").json()["interrupted"] == 1


def test_a_stream_past_the_deadline_ends_with_an_error_event_on_both_apis(tmp_path: Path) -> None:
    """The deadline falls mid-stream: the client gets the words so far and then an error that
    names it (the stream was cut without one while the deadline was timed in the wrong task),
    and the exchange is kept as interrupted."""
    from openai import APIError, OpenAI

    with serving(tmp_path / "data", COMPANION_REQUEST_TIMEOUT_S="6") as url:
        body = {**ENDLESS, "user_id": "late", "stream": True}
        events: list[tuple[str, str]] = []
        with httpx.stream("POST", f"{url}/api/v1/chat", json=body, timeout=60) as resp:
            assert resp.status_code == 200
            name = ""
            for line in resp.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    events.append((name, line[6:]))
        assert [n for n, _ in events[:-1]] == ["token"] * (len(events) - 1)
        assert events[-1][0] == "error"
        assert json.loads(events[-1][1])["error"]["code"] == "deadline_exceeded"
        said = "".join(json.loads(d)["text"] for _, d in events[:-1])
        session = httpx.get(f"{url}/api/v1/sessions", params={"user_id": "late"}).json()[0]
        stored = httpx.get(f"{url}/api/v1/sessions/{session['id']}/messages").json()["messages"]
        assert [m["status"] for m in stored] == ["interrupted", "interrupted"]
        assert stored[1]["text"].strip() and said.strip().startswith(stored[1]["text"].strip())

        client = OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=60)
        stream = client.chat.completions.create(
            model="companion", messages=[{"role": "user", "content": ENDLESS["message"]}],
            stream=True, max_tokens=1500, temperature=0.0, seed=1,
            logit_bias={"0": -100, "2": -100},  # no <|endoftext|> nor <|im_end|>: no early end
        )  # fmt: skip
        pieces: list[str] = []
        with pytest.raises(APIError, match="request_timeout_s"):
            for chunk in stream:
                pieces.append(chunk.choices[0].delta.content or "")
        assert "".join(pieces).strip()  # the words before the deadline reached the client
