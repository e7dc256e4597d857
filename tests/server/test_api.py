"""The HTTP API through an ASGI client (FastAPI's TestClient), real model and SQLite."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from companion.runtime import Runtime
from tests.conftest import SPEC_STATS_FIELDS, sse_events


def test_the_spec_curl_example_works_as_written(client: TestClient) -> None:
    resp = client.post(
        "/api/v1/chat", content='{"message":"test"}', headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) >= {"response", "session_id", "cached", "model", "usage", "timings"}
    assert body["response"].strip() and body["cached"] is False
    assert (
        body["usage"]["total_tokens"]
        == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )


def test_streamed_reply_is_sse_tokens_then_done(client: TestClient) -> None:
    with client.stream(
        "POST", "/api/v1/chat", json={"message": "Tell me a joke", "stream": True, "max_tokens": 16}
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = sse_events(resp.read().decode())
    kinds = [k for k, _ in events]
    assert kinds[-1] == "done" and kinds.count("token") >= 2
    done = events[-1][1]
    assert "".join(str(d["text"]) for k, d in events if k == "token") == done["response"]
    messages = client.get(f"/api/v1/sessions/{done['session_id']}/messages").json()["messages"]
    assert [m["status"] for m in messages] == ["complete", "complete"]


def test_session_continues_and_lists(client: TestClient) -> None:
    first = client.post(
        "/api/v1/chat", json={"message": "Hi, I'm Dana", "user_id": "dana", "max_tokens": 8}
    ).json()
    client.post(
        "/api/v1/chat",
        json={
            "message": "Again",
            "user_id": "dana",
            "session_id": first["session_id"],
            "max_tokens": 8,
        },
    )
    msgs = client.get(f"/api/v1/sessions/{first['session_id']}/messages").json()
    assert msgs["user_id"] == "dana" and len(msgs["messages"]) == 4
    sessions = client.get("/api/v1/sessions", params={"user_id": "dana"}).json()
    assert [s["id"] for s in sessions] == [first["session_id"]]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"message": ""}, 422, "message"),
        ({"message": "   "}, 422, "message"),
        ({}, 422, "message"),
        ({"message": 5}, 422, "message"),
        ({"message": "hi", "max_tokens": -1}, 422, "max_tokens"),
        ({"message": "hi", "temperature": "hot"}, 422, "temperature"),
        ({"message": "hi", "session_id": "../etc"}, 422, "session_id"),
        ({"message": "hi", "bogus": 1}, 422, "bogus"),
    ],
)
def test_bad_requests_get_a_json_error_naming_the_field(
    client: TestClient, body: dict[str, object], status: int, field: str
) -> None:
    resp = client.post("/api/v1/chat", json=body)
    assert resp.status_code == status
    assert resp.json()["error"]["field"] == field


def test_over_long_message_is_413_and_malformed_json_422(
    client: TestClient, runtime: Runtime
) -> None:
    resp = client.post(
        "/api/v1/chat", json={"message": "a" * (runtime.settings.max_message_chars + 1)}
    )
    assert resp.status_code == 413 and resp.json()["error"]["field"] == "message"
    resp = client.post(
        "/api/v1/chat", content="{not json", headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 422 and "not valid JSON" in resp.json()["error"]["message"]
    assert runtime.store.counts()["messages"] == 0


def test_unknown_session_is_404(client: TestClient) -> None:
    resp = client.get("/api/v1/sessions/nope/messages")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"


def test_session_of_another_user_is_refused(client: TestClient) -> None:
    mine = client.post(
        "/api/v1/chat", json={"message": "hi", "user_id": "a", "max_tokens": 4}
    ).json()
    resp = client.post(
        "/api/v1/chat", json={"message": "hi", "user_id": "b", "session_id": mine["session_id"]}
    )
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "session_id"


def test_stats_health_models_and_docs(client: TestClient) -> None:
    client.post("/api/v1/chat", json={"message": "hi", "max_tokens": 4})
    stats = client.get("/api/v1/stats").json()
    assert set(SPEC_STATS_FIELDS) <= set(stats)
    assert stats["requests"] == 1
    assert client.get("/healthz").json()["status"] == "ok"
    models = client.get("/api/v1/models").json()
    assert models["loaded"]["size"] == "tiny" and models["tier"] in ("low", "medium", "high")
    assert {r["size"] for r in models["models"]} == {"tiny", "base", "small", "medium", "large"}
    assert client.get("/openapi.json").status_code == 200


def test_forced_reload_swaps_the_model_and_unknown_size_is_refused(client: TestClient) -> None:
    before = client.get("/api/v1/models").json()["loaded"]
    resp = client.post("/api/v1/models/reload", json={"size": "tiny"})
    assert resp.status_code == 200
    after = resp.json()["loaded"]
    assert after["name"] == before["name"] and after["load_time_s"] > 0
    assert (
        client.post("/api/v1/chat", json={"message": "still there?", "max_tokens": 4}).status_code
        == 200
    )
    bad = client.post("/api/v1/models/reload", json={"size": "gigantic"})
    assert (
        bad.status_code == 422
        and "tiny, base, small, medium, large" in bad.json()["error"]["message"]
    )
    absent = client.post("/api/v1/models/reload", json={"size": "large"})
    assert absent.status_code == 503 and absent.json()["error"]["code"] == "model_not_installed"


def test_metrics_parse_and_count_what_happened(client: TestClient) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    client.post("/api/v1/chat", json={"message": "hi", "max_tokens": 4})
    client.post("/api/v1/chat", json={"message": ""})
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(resp.text)}
    requests = {
        (s.labels["route"], s.labels["status"]): s.value
        for s in families["companion_http_requests"].samples
        if s.name.endswith("_total")
    }
    assert requests[("/api/v1/chat", "200")] == 1 and requests[("/api/v1/chat", "422")] == 1
    generated = families["companion_generated_tokens"].samples[0].value
    assert 0 < generated <= 4
    ttft = {s.name: s.value for s in families["companion_time_to_first_token_seconds"].samples}
    assert ttft["companion_time_to_first_token_seconds_count"] == 1
    for name in (
        "companion_queue_depth",
        "companion_active_sequences",
        "companion_kv_cache_usage_ratio",
        "companion_model_load_seconds",
        "process_resident_memory_bytes",
    ):
        assert name in families
    assert families["companion_model_load_seconds"].samples[0].value > 0
