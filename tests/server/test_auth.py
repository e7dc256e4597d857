"""API keys, ownership and per-user limits through the HTTP API (real model, real SQLite)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from companion.auth import KeyStore
from companion.runtime import open_runtime
from companion.server.app import create_app
from tests.conftest import make_settings


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    settings = make_settings(
        tmp_path / "d",
        auth=True,
        rate_limit_per_minute=4,
        max_concurrent_per_user=2,
        max_body_bytes=4096,
        max_tokens=4,
    )
    rt = open_runtime(settings)
    keys = KeyStore(rt.store)
    made = {
        "alice": keys.create("alice")[0],
        "bob": keys.create("bob")[0],
        "admin": keys.create("ops", admin=True)[0],
    }
    with TestClient(create_app(settings, rt)) as client:
        yield client, made
    rt.close()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_no_key_or_a_bad_key_is_401(secured: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = secured
    assert client.post("/api/v1/chat", json={"message": "hi"}).status_code == 401
    bad = client.post("/api/v1/chat", json={"message": "hi"}, headers=auth("cmp_nope"))
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "unauthorized"
    assert client.get("/healthz").status_code == 200


def test_a_user_reaches_only_their_own_data(secured: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = secured
    mine = client.post(
        "/api/v1/chat", json={"message": "My secret is 4471."}, headers=auth(keys["alice"])
    )
    assert mine.status_code == 200 and mine.json()["user_id"] == "alice"
    session = mine.json()["session_id"]
    bob = auth(keys["bob"])
    assert client.get(f"/api/v1/sessions/{session}/messages", headers=bob).status_code == 403
    assert (
        client.get("/api/v1/sessions", params={"user_id": "alice"}, headers=bob).status_code == 403
    )
    assert client.get("/api/v1/users/alice/memories", headers=bob).status_code == 403
    assert client.get("/api/v1/users/alice/export", headers=bob).status_code == 403
    as_alice = client.post("/api/v1/chat", json={"message": "hi", "user_id": "alice"}, headers=bob)
    assert as_alice.status_code == 403
    hijack = client.post(
        "/api/v1/chat", json={"message": "What is my secret?", "session_id": session}, headers=bob
    )
    assert hijack.status_code == 422 and hijack.json()["error"]["field"] == "session_id"
    own = client.get("/api/v1/sessions", headers=bob).json()
    assert session not in [s["id"] for s in own]
    assert (
        client.get(f"/api/v1/sessions/{session}/messages", headers=auth(keys["alice"])).status_code
        == 200
    )


def test_stats_and_admin_routes_need_an_admin_key(
    secured: tuple[TestClient, dict[str, str]],
) -> None:
    client, keys = secured
    assert client.get("/api/v1/stats", headers=auth(keys["alice"])).status_code == 403
    assert client.get("/metrics", headers=auth(keys["alice"])).status_code == 403
    assert (
        client.post("/api/v1/models/reload", json={}, headers=auth(keys["bob"])).status_code == 403
    )
    assert client.get("/api/v1/stats", headers=auth(keys["admin"])).status_code == 200
    assert (
        client.get("/api/v1/users/alice/memories", headers=auth(keys["admin"])).status_code == 200
    )


def test_revoked_keys_stop_working(
    secured: tuple[TestClient, dict[str, str]], tmp_path: Path
) -> None:
    client, keys = secured
    store = client.app.state.runtime.store  # type: ignore[attr-defined]
    key_id = keys["bob"].split("_")[1]
    KeyStore(store).revoke(key_id)
    assert client.get("/api/v1/sessions", headers=auth(keys["bob"])).status_code == 401


def test_rate_limit_gives_429_with_retry_after(secured: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = secured
    # the bucket refills one request per 15 s; a frozen clock keeps slow replies from refilling it
    limits = client.app.state.limits
    frozen = limits._now()
    limits._now = lambda: frozen
    codes = [
        client.post("/api/v1/chat", json={"message": f"hi {i}"}, headers=auth(keys["alice"]))
        for i in range(6)
    ]
    assert [c.status_code for c in codes[:4]] == [200] * 4
    limited = codes[4]
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert "rate limit" in limited.json()["error"]["message"]
    limits._now = lambda: frozen + 15  # a quarter minute later: one more request is allowed
    again = client.post("/api/v1/chat", json={"message": "hi again"}, headers=auth(keys["alice"]))
    assert again.status_code == 200
    other = client.post("/api/v1/chat", json={"message": "hello"}, headers=auth(keys["bob"]))
    assert other.status_code == 200


def test_oversized_body_is_413(secured: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = secured
    resp = client.post("/api/v1/chat", json={"message": "x" * 5000}, headers=auth(keys["alice"]))
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "too_large"


def test_serve_refuses_a_public_address_without_keys(tmp_path: Path) -> None:
    env = {**os.environ, "COMPANION_DATA_DIR": str(tmp_path / "d")}
    exe = str(Path(sys.executable).with_name("companion"))
    proc = subprocess.run(
        [exe, "serve", "--host", "0.0.0.0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "refusing to listen on 0.0.0.0 without API keys" in proc.stderr


def test_keys_cli_creates_lists_and_revokes(tmp_path: Path) -> None:
    env = {**os.environ, "COMPANION_DATA_DIR": str(tmp_path / "d")}
    exe = str(Path(sys.executable).with_name("companion"))
    made = subprocess.run(
        [exe, "keys", "create", "carol", "--name", "phone"], env=env, capture_output=True, text=True
    )
    key = made.stdout.strip()
    assert made.returncode == 0 and key.startswith("cmp_")
    listed = subprocess.run([exe, "keys", "list"], env=env, capture_output=True, text=True).stdout
    assert "carol" in listed and "phone" in listed and key not in listed
    key_id = key.split("_")[1]
    assert (
        subprocess.run(
            [exe, "keys", "revoke", key_id], env=env, capture_output=True, text=True
        ).returncode
        == 0
    )
    again = subprocess.run([exe, "keys", "revoke", key_id], env=env, capture_output=True, text=True)
    assert again.returncode != 0 and "no active API key" in again.stderr
