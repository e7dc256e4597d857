"""A real `companion serve` process on a free loopback port."""

from __future__ import annotations

import time

import httpx


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
