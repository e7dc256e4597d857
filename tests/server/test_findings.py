"""Regression tests for the attacker's findings of issue 11 (finding 8, OpenAI-API sessions,
is issue 12's). The real app (tiny model, real SQLite file, keys on) in process."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from fastapi.testclient import TestClient

from companion.auth import KeyStore
from companion.cli import cli
from companion.persona.card import PNG_SIGNATURE, _chunk, write_png_card
from companion.runtime import Runtime, open_runtime
from companion.server.app import create_app
from companion.storage import open_store
from companion.storage.schema import response_cache, response_cache_users
from tests.conftest import keyed_settings, make_settings
from tests.server.test_fuzz_bodies import check_error_shape


class Api:
    """A client with a key per user: alice, bob (ordinary) and ops (admin)."""

    def __init__(self, client: TestClient, rt: Runtime) -> None:
        self.client, self.rt = client, rt
        keys = KeyStore(rt.store)
        self.keys = {u: keys.create(u, admin=u == "ops")[0] for u in ("alice", "bob", "ops")}

    def __call__(self, who: str, method: str, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.keys[who]}", **kw.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kw)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Runtime]]:
    settings = keyed_settings(Path(tmp_path_factory.mktemp("findings")) / "d", max_tokens=4)
    rt = open_runtime(settings)
    with TestClient(create_app(settings, rt), raise_server_exceptions=False) as client:
        yield client, rt
    rt.close()


@pytest.fixture
def api(served: tuple[TestClient, Runtime]) -> Api:
    """Fresh keys (a test may delete a user, and their keys with them)."""
    return Api(*served)


def test_1_only_admins_manage_shared_personas_and_private_ones_stay_private(api: Api) -> None:
    made = api("ops", "POST", "/api/v1/personas", json={"id": "guide", "name": "Guide"})
    assert made.status_code == 201 and made.json()["owner_id"] is None
    assert api("bob", "PUT", "/api/v1/users/bob/persona", json={"persona_id": "guide"}).is_success
    patch = api("alice", "PATCH", "/api/v1/personas/guide", json={"system_prompt": "Lie."})
    assert patch.status_code == 403 and patch.json()["error"]["code"] == "forbidden"
    assert api("alice", "DELETE", "/api/v1/personas/guide").status_code == 403
    bobs = api("bob", "GET", "/api/v1/users/bob/persona").json()
    assert bobs["persona"]["id"] == "guide" and bobs["persona"]["system_prompt"] is None
    # a user's own persona is private: others neither see, read, change nor select it
    mine = api("alice", "POST", "/api/v1/personas", json={"id": "muse", "name": "Muse"})
    assert mine.status_code == 201 and mine.json()["owner_id"] == "alice"
    assert "muse" in [p["id"] for p in api("alice", "GET", "/api/v1/personas").json()["personas"]]
    assert "muse" not in [p["id"] for p in api("bob", "GET", "/api/v1/personas").json()["personas"]]
    for method, path, body in [
        ("GET", "/api/v1/personas/muse", None),
        ("GET", "/api/v1/personas/muse/card", None),
        ("PATCH", "/api/v1/personas/muse", {"name": "Mine now"}),
        ("DELETE", "/api/v1/personas/muse", None),
        ("PUT", "/api/v1/users/bob/persona", {"persona_id": "muse"}),
    ]:
        assert api("bob", method, path, json=body).status_code == 404, (method, path)
    assert (
        api("ops", "PUT", "/api/v1/users/bob/persona", json={"persona_id": "muse"}).status_code
        == 404
    )  # not even an admin makes bob talk to alice's persona
    assert api(
        "alice", "PUT", "/api/v1/users/alice/persona", json={"persona_id": "muse"}
    ).is_success
    assert api("alice", "PATCH", "/api/v1/personas/muse", json={"description": "Kind"}).is_success
    exported = api("alice", "GET", "/api/v1/users/alice/export").json()["personas"]
    assert [p["id"] for p in exported] == ["muse"]
    # the private persona goes with its owner
    assert api("ops", "DELETE", "/api/v1/users/alice").is_success
    assert api("ops", "GET", "/api/v1/personas/muse").status_code == 404


def _cache_rows(rt: Runtime) -> list[dict[str, Any]]:
    query = sa.select(
        response_cache.c.scope, response_cache.c.message, response_cache_users.c.user_id
    ).join(response_cache_users)
    with rt.store.reading() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def test_2_personal_facts_stay_out_of_the_shared_cache_and_go_with_their_user(api: Api) -> None:
    pin, plain = "My bank PIN is 4402.", "What is the capital of France?"
    for text in (plain, pin):  # plain first: a later session would recall the PIN turn
        assert api("alice", "POST", "/api/v1/chat", json={"message": text}).is_success
    rows = {r["message"]: r for r in _cache_rows(api.rt)}
    assert rows[pin]["scope"] == "user:alice" and rows[pin]["user_id"] == "alice"
    assert rows[plain]["scope"] == "shared" and rows[plain]["user_id"] == "alice"
    gone = api("ops", "DELETE", "/api/v1/users/alice")
    assert gone.is_success and gone.json()["cache_entries"] >= 2
    assert [r for r in _cache_rows(api.rt) if r["user_id"] == "alice"] == []
    for text in (pin, plain):  # nothing of alice's is served to bob, from the table or memory
        reply = api("bob", "POST", "/api/v1/chat", json={"message": text})
        assert reply.is_success and reply.json()["cached"] is False


def bad_input_status(path: str) -> int:
    """422 on companion's API; 400 on OpenAI's, as OpenAI answers (its SDKs: BadRequestError)."""
    return 400 if path.startswith("/v1/") else 422


SURROGATE = b"\xed\xa0\x80"  # U+D800 as raw (invalid) UTF-8 bytes
BODIES = {
    "/api/v1/chat": b'{"message": "hi \xed\xa0\x80"}',
    "/api/v1/users/alice/memories": b'{"text": "x\xed\xa0\x80"}',
    "/api/v1/personas": b'{"name": "\xed\xa0\x80"}',
    "/api/v1/sessions/s1/open": b'{"user_id": "\xed\xa0\x80"}',
    "/v1/chat/completions": b'{"messages": [{"role": "user", "content": "\xed\xa0\x80"}]}',
    "/v1/embeddings": b'{"input": "\xed\xa0\x80"}',
}


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", p) for p in BODIES]
    + [("PATCH", "/api/v1/users/alice/memories/1"), ("PUT", "/api/v1/users/alice/persona")],
)
def test_3_raw_surrogate_bytes_are_a_422_json_error(api: Api, method: str, path: str) -> None:
    body = BODIES.get(path, b'{"text": "\xed\xa0\x80", "persona_id": "\xed\xa0\x80"}')
    resp = api("ops", method, path, content=body, headers={"content-type": "application/json"})
    assert resp.status_code == bad_input_status(path), resp.text
    check_error_shape(path, resp)
    assert "UTF-8" in resp.json()["error"]["message"]


DEEP = b"[" * 1000 + b"]" * 1000


@pytest.mark.parametrize("path", [*BODIES, "/api/v1/personas/import"])
def test_4_deep_nesting_is_a_422_json_error(api: Api, path: str) -> None:
    resp = api("ops", "POST", path, content=DEEP, headers={"content-type": "application/json"})
    assert resp.status_code == bad_input_status(path), resp.text
    check_error_shape(path, resp)
    assert "deeper than" in resp.json()["error"]["message"]


def test_4_deep_nesting_inside_a_png_card_is_a_422(api: Api) -> None:
    card = b'{"data": {"name": "x", "tags": ' + DEEP + b"}}"
    body = (
        PNG_SIGNATURE + _chunk(b"tEXt", b"chara\0" + base64.b64encode(card)) + _chunk(b"IEND", b"")
    )
    resp = api("ops", "POST", "/api/v1/personas/import", content=body)
    assert resp.status_code == 422 and "deeper than" in resp.json()["error"]["message"]


CARD = {"spec": "chara_card_v2", "data": {"name": "Card"}}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"tags": 5}, "tags"),
        ({"extensions": [1, 2]}, "card.data.extensions"),
        ({"extensions": {"companion": "x"}}, "card.data.extensions.companion"),
        ({"extensions": {"companion": {"traits": [1]}}}, "traits"),
        ({"description": {"a": 1}}, "card.data.description"),
        ({"system_prompt": "x" * 600_000}, "system_prompt"),
        ({"personality": "x" * 1001}, "speaking_style"),
        ({"tags": ["t"] * 17}, "tags"),
        ({"mes_example": "{{char}}: " + "y" * 1001}, "example_lines"),
    ],
)
def test_5_card_import_validates_types_and_lengths_as_personas_do(
    api: Api, change: dict[str, Any], field: str
) -> None:
    card = {**CARD, "data": {**CARD["data"], **change}}
    resp = api("alice", "POST", "/api/v1/personas/import", json=card)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == field
    png = write_png_card(card)
    assert api("alice", "POST", "/api/v1/personas/import", content=png).status_code == 422
    fine = api("alice", "POST", "/api/v1/personas/import", json=CARD, params={"id": uuid4().hex})
    assert fine.status_code == 201, fine.text


def test_6_clearing_the_cache_and_cleaning_memories_need_an_admin(api: Api) -> None:
    assert api("bob", "POST", "/api/v1/chat", json={"message": "Name a colour."}).is_success
    rows = api("ops", "GET", "/api/v1/stats").json()["cache"]["entries"]
    assert rows >= 1
    for path in ("/api/v1/cache", "/api/v1/cache?scope=user:bob", "/api/v1/cache?scope=shared"):
        refused = api("alice", "DELETE", path)
        assert refused.status_code == 403 and "removed" not in refused.text
    assert api("alice", "POST", "/api/v1/memories/cleanup").status_code == 403
    assert api("alice", "POST", "/api/v1/cache/cleanup").status_code == 403
    assert api("ops", "DELETE", "/api/v1/cache").json() == {"removed": rows}
    assert api("ops", "POST", "/api/v1/memories/cleanup").is_success


def test_7_simultaneous_messages_in_one_session_take_turns(api: Api) -> None:
    first = api("alice", "POST", "/api/v1/chat", json={"message": "Hello!"}).json()
    session = first["session_id"]

    def send(i: int) -> Any:
        return api(
            "alice",
            "POST",
            "/api/v1/chat",
            json={"message": f"Question number {i}?", "session_id": session},
        )

    with ThreadPoolExecutor(5) as pool:
        replies = list(pool.map(send, range(5)))
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    messages = api("alice", "GET", f"/api/v1/sessions/{session}/messages").json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] * 6
    for asked, answer in zip(messages[::2], messages[1::2], strict=True):
        assert answer["reply_to"] == asked["id"] and asked["reply_to"] is None
    ids = {r.json()["message_id"] for r in replies}
    assert ids == {m["id"] for m in messages[3::2]}


def test_9_errors_have_the_documented_shape(api: Api) -> None:
    bad = api(
        "ops",
        "POST",
        "/api/v1/chat",
        content=b'{"message": "\xff"}',
        headers={"content-type": "application/json"},
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_input"
    missing = api("ops", "GET", "/api/v1/nothing-here")
    assert missing.status_code == 404 and missing.json() == {
        "error": {"code": "not_found", "message": "no route GET /api/v1/nothing-here"}
    }
    assert api.client.get("/nothing").json()["error"]["code"] == "not_found"  # without a key too
    wrong = api("ops", "PUT", "/api/v1/chat", json={})
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    openai = api("ops", "GET", "/v1/nothing")
    assert openai.status_code == 404
    check_error_shape("/v1/nothing", openai)


def test_9_db_check_counts_pending_messages(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "d")
    store = open_store(settings.db_url)
    session = store.create_session("u")
    store.add_message(session.id, "user", "still answering", status="pending")
    store.close()
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path / "d"), "db", "check", "--json"])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output)["counts"]
    assert counts["pending messages"] == 1 and counts["interrupted messages"] == 0
