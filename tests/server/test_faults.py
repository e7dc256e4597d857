"""Faults, with the real tiny model and the real SQLite file: the engine's decode thread dying
(503 at once, health 503, nothing acknowledged lost, a reload recovers), a full disk (507, the
database intact, chat working again once there is room) and a locked database (503 in the API,
one line in the CLI)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import llama_cpp
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from companion.runtime import Runtime
from tests.conftest import sse_events

REPLY = {"max_tokens": 24, "temperature": 0.0, "cache": False}


def messages_of(client: TestClient, session_id: str) -> list[dict[str, Any]]:
    resp = client.get(f"/api/v1/sessions/{session_id}/messages")
    assert resp.status_code == 200
    return list(resp.json()["messages"])


def test_a_dead_engine_fails_fast_with_503_and_a_reload_recovers(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = client.post("/api/v1/chat", json={"message": "Hi, I'm Dana", **REPLY})
    assert first.status_code == 200
    session = first.json()["session_id"]
    assert client.get("/api/v1/health").json()["status"] == "ok"

    real_decode = llama_cpp.llama_decode
    steps = {"single": 0}

    def failing_decode(ctx: Any, batch: Any) -> int:  # runs on the engine's decode thread
        if batch.n_tokens == 1:  # a generation step (one stream): fail the fourth
            steps["single"] += 1
            if steps["single"] >= 4:
                raise RuntimeError("simulated accelerator fault")
        return int(real_decode(ctx, batch))

    monkeypatch.setattr(llama_cpp, "llama_decode", failing_decode)
    body = {"message": "Tell me about the sea", "session_id": session, "stream": True, **REPLY}
    with client.stream("POST", "/api/v1/chat", json=body) as resp:
        assert resp.status_code == 200  # the thread died mid-reply: the stream ends in an error
        events = sse_events(resp.read().decode())
    kinds = [k for k, _ in events]
    assert kinds[-1] == "error" and "done" not in kinds and kinds.count("token") >= 1
    error = events[-1][1]["error"]
    assert error["code"] == "model_unavailable"
    assert "simulated accelerator fault" in error["message"] and "reload" in error["message"]

    started = time.perf_counter()
    refused = client.post("/api/v1/chat", json={"message": "Are you there?", **REPLY})
    refused_s = time.perf_counter() - started
    assert refused.status_code == 503 and refused_s < 5, refused_s
    err = refused.json()["error"]
    assert err["code"] == "model_unavailable"
    assert "the model stopped" in err["message"] and "POST /api/v1/models/reload" in err["message"]
    streamed = client.post("/api/v1/chat", json={"message": "Still?", "stream": True, **REPLY})
    assert streamed.status_code == 503 and streamed.json()["error"]["code"] == "model_unavailable"
    openai = client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
    )
    assert openai.status_code == 503

    health = client.get("/api/v1/health")
    assert health.status_code == 503
    report = health.json()
    assert report["status"] == "down" and report["checks"]["model"]["status"] == "down"
    assert "simulated accelerator fault" in report["checks"]["model"]["reason"]
    assert report["checks"]["database"]["status"] == "ok"
    liveness = client.get("/healthz")
    assert liveness.status_code == 503 and liveness.json()["status"] == "down"
    assert "simulated accelerator fault" in liveness.json()["reason"]
    # a refused message is not stored (it could not be answered): no new session holds it
    sessions = client.get("/api/v1/sessions").json()
    listed = sessions["sessions"] if isinstance(sessions, dict) else sessions
    assert all(s.get("title") not in ("Are you there?", "Still?") for s in listed)

    # nothing acknowledged is lost; the interrupted turn is marked failed, never left pending
    msgs = messages_of(client, session)
    assert [m["status"] for m in msgs[:2]] == ["complete", "complete"]
    assert msgs[0]["text"] == "Hi, I'm Dana" and msgs[1]["text"] == first.json()["response"]
    assert msgs[2]["text"] == "Tell me about the sea"
    assert {m["status"] for m in msgs[2:]} == {"failed"}

    monkeypatch.undo()  # the fault is gone; a reload brings the model back
    assert client.post("/api/v1/models/reload", json={}).status_code == 200
    assert client.get("/api/v1/health").status_code == 200
    assert client.get("/healthz").json()["status"] == "ok"
    again = client.post("/api/v1/chat", json={"message": "Back?", "session_id": session, **REPLY})
    assert again.status_code == 200 and again.json()["response"].strip()


def test_a_full_disk_is_507_and_the_stored_data_stays_intact(
    client: TestClient, runtime: Runtime
) -> None:
    engine = runtime.store.engine
    db_path = engine.url.database
    assert db_path
    first = client.post("/api/v1/chat", json={"message": "Remember: my cat is Miso", **REPLY})
    assert first.status_code == 200
    session = first.json()["session_id"]
    acked = [first.json()]
    with sqlite3.connect(db_path) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    cap = {"pages": pages}

    def limit_pages(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        dbapi_conn.execute(f"PRAGMA max_page_count={cap['pages']}")

    sa.event.listen(engine, "checkout", limit_pages)  # the file may not grow: the disk is full
    try:
        note = "hello " * 300
        for _ in range(30):
            body = {"message": note, "session_id": session, **REPLY}
            resp = client.post("/api/v1/chat", json=body)
            if resp.status_code != 200:
                break
            acked.append(resp.json())
        else:
            pytest.fail("the database never filled up")
        assert resp.status_code == 507
        err = resp.json()["error"]
        assert err["code"] == "storage_full"
        assert "database is full" in err["message"] and "not saved" in err["message"]

        cap["pages"] = 1_000_000  # room again
        with sqlite3.connect(db_path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {m["id"]: m for m in messages_of(client, session)}
        for result in acked:
            reply = stored[result["message_id"]]
            assert reply["status"] == "complete" and reply["text"] == result["response"]
        again = client.post(
            "/api/v1/chat", json={"message": "Still here?", "session_id": session, **REPLY}
        )
        assert again.status_code == 200
        assert again.json()["message_id"] in {m["id"] for m in messages_of(client, session)}
    finally:
        sa.event.remove(engine, "checkout", limit_pages)


def test_a_locked_database_is_503_reads_go_on_and_writes_resume(
    client: TestClient, runtime: Runtime
) -> None:
    engine = runtime.store.engine
    first = client.post("/api/v1/chat", json={"message": "Hello again", **REPLY, "cache": True})
    assert first.status_code == 200  # and its reply is in the response cache
    session = first.json()["session_id"]

    def short_wait(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        dbapi_conn.execute("PRAGMA busy_timeout=100")  # the test's patience, not the 5 s default

    sa.event.listen(engine, "checkout", short_wait)
    holder = sqlite3.connect(engine.url.database or "", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # another process writing and not letting go
        refused = client.post(
            "/api/v1/chat", json={"message": "Hi?", "session_id": session, **REPLY}
        )
        assert refused.status_code == 503
        err = refused.json()["error"]
        assert err["code"] == "storage_unavailable" and "locked" in err["message"]
        cleared = client.delete("/api/v1/cache")  # the cache's own SQL, outside the Store
        assert cleared.status_code == 503
        assert cleared.json()["error"]["code"] == "storage_unavailable"
        assert [m["status"] for m in messages_of(client, session)] == ["complete", "complete"]
        holder.execute("ROLLBACK")
        again = client.post("/api/v1/chat", json={"message": "Hi?", "session_id": session, **REPLY})
        assert again.status_code == 200
    finally:
        holder.close()
        sa.event.remove(engine, "checkout", short_wait)


def test_cli_reports_a_locked_database_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "COMPANION_DATA_DIR": str(data)}
    exe = str(Path(sys.executable).with_name("companion"))
    made = subprocess.run(
        [exe, "keys", "create", "alice"], env=env, capture_output=True, text=True, timeout=120
    )
    assert made.returncode == 0, made.stderr
    holder = sqlite3.connect(data / "companion.db", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # another process writing and not letting go
        proc = subprocess.run(
            [exe, "keys", "create", "bob"], env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: the database stayed locked") and "retry" in lines[0]
