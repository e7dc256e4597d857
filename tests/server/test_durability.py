"""Durability with real `companion serve` processes, the real model and the real SQLite file:
kill -9 mid-generation loses nothing acknowledged and leaves the exchange marked interrupted;
SIGTERM lets open streams finish or interrupts them cleanly, and the server exits 0."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import ENDLESS, companion_bin, free_port

LONG = {**ENDLESS, "stream": True, "cache": False}  # far longer than the shutdown grace period
GRACE_S = 2.0


class Served:
    """One `companion serve` process on a data dir; its output goes to a file."""

    def __init__(self, data_dir: Path, log: Path, *args: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "COMPANION_DATA_DIR": str(data_dir), "COMPANION_MODEL_SIZE": "tiny"}
        self.log_path = log
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [companion_bin(), "serve", "--port", str(self.port), *args],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, text=True,
        )
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited early: {self.output()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.proc.kill()
        pytest.fail(f"server did not start: {self.output()}")

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self._log.close()
        return code


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def started(data_dir: Path, tmp_path: Path) -> Iterator[list[Served]]:
    servers: list[Served] = []
    yield servers
    for s in servers:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


def events(resp: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of an SSE response, as they arrive."""
    name = ""
    for line in resp.iter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            yield name, json.loads(line[5:])


def rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def integrity(db: Path) -> str:
    return str(rows(db, "PRAGMA integrity_check")[0][0])


def test_kill_9_mid_generation_loses_nothing_acknowledged(
    data_dir: Path, tmp_path: Path, started: list[Served]
) -> None:
    first = Served(data_dir, tmp_path / "first.log")
    started.append(first)
    acked = httpx.post(f"{first.url}/api/v1/chat", timeout=120, json={
        "message": "My dog is called Rex.", "max_tokens": 8, "cache": False}).json()
    session = acked["session_id"]
    pieces: list[str] = []
    with httpx.stream("POST", f"{first.url}/api/v1/chat", json={**LONG, "session_id": session},
                      timeout=120) as resp:
        assert resp.status_code == 200
        for name, data in events(resp):
            assert name == "token", data
            pieces.append(data["text"])
            if len(pieces) >= 5:
                os.kill(first.proc.pid, signal.SIGKILL)  # mid-generation, no chance to clean up
                break
    assert first.proc.wait(timeout=30) == -signal.SIGKILL

    db = data_dir / "companion.db"
    assert integrity(db) == "ok"
    assert rows(db, "SELECT status FROM messages WHERE text = ?", LONG["message"].strip()) == [
        ("pending",)]

    second = Served(data_dir, tmp_path / "second.log")  # the same data dir, after the crash
    started.append(second)
    assert "marked interrupted" in second.output()
    msgs = httpx.get(f"{second.url}/api/v1/sessions/{session}/messages", timeout=30).json()
    by_text = {m["text"]: m for m in msgs["messages"] if m["role"] == "user"}
    assert by_text["My dog is called Rex."]["status"] == "complete"  # acknowledged: kept
    reply = [m for m in msgs["messages"] if m["id"] == acked["message_id"]]
    assert reply and reply[0]["text"] == acked["response"] and reply[0]["status"] == "complete"
    assert by_text[LONG["message"].strip()]["status"] == "interrupted"  # the exchange is marked
    assert not [m for m in msgs["messages"] if m["status"] == "pending"]
    again = httpx.post(f"{second.url}/api/v1/chat", timeout=120, json={
        "message": "What is my dog called?", "session_id": session, "max_tokens": 8})
    assert again.status_code == 200
    assert second.stop() == 0
    assert integrity(db) == "ok"
    assert rows(db, "SELECT count(*) FROM messages WHERE status = 'pending'") == [(0,)]


def test_sigterm_interrupts_open_streams_cleanly_and_exits_0(
    data_dir: Path, tmp_path: Path, started: list[Served]
) -> None:
    server = Served(data_dir, tmp_path / "serve.log", "--shutdown-grace", str(GRACE_S))
    started.append(server)
    short: dict[str, Any] = {}

    def short_stream() -> None:  # a short reply: it finishes in the grace period or is cut
        body = {"message": "Say hello.", "max_tokens": 8, "stream": True, "cache": False}
        with httpx.stream("POST", f"{server.url}/api/v1/chat", json=body, timeout=120) as resp:
            short.update(events=list(events(resp)))

    seen: list[tuple[str, dict[str, Any]]] = []
    waiter = threading.Thread(target=short_stream)
    with httpx.stream("POST", f"{server.url}/api/v1/chat", json=LONG, timeout=120) as resp:
        assert resp.status_code == 200
        sent_at = 0.0
        for name, data in events(resp):
            seen.append((name, data))
            if len(seen) == 5:
                waiter.start()
                time.sleep(0.5)
                server.proc.send_signal(signal.SIGTERM)
                sent_at = time.monotonic()
    ended_after = time.monotonic() - sent_at
    waiter.join(timeout=60)

    name, last = seen[-1]
    assert name == "error" and last["error"]["code"] == "interrupted", seen[-3:]
    assert "shutting down" in last["error"]["message"]
    assert all(n == "token" for n, _ in seen[:-1])
    assert GRACE_S - 0.5 <= ended_after < GRACE_S + 4  # the grace period, not a hard cancel
    assert server.stop() == 0
    out = server.output()
    assert "Application shutdown complete" in out and "stopped by SIGTERM" in out

    db = data_dir / "companion.db"
    assert integrity(db) == "ok"
    statuses = dict(rows(db, "SELECT text, status FROM messages WHERE role = 'user'"))
    assert statuses[LONG["message"].strip()] == "interrupted"
    assert "pending" not in statuses.values()
    partial = "".join(d["text"] for n, d in seen if n == "token")
    stored = rows(
        db, "SELECT text FROM messages WHERE role = 'assistant' AND status = 'interrupted'")
    assert any(text.startswith(partial) for (text,) in stored)
    name, last = short["events"][-1]  # the short one: finished and stored, or cut and marked
    if name == "done":
        assert statuses["Say hello."] == "complete"
        assert rows(db, "SELECT text FROM messages WHERE id = ?", last["message_id"]) == [
            (last["response"],)]
    else:
        assert name == "error" and last["error"]["code"] == "interrupted"
        assert statuses["Say hello."] == "interrupted"
