"""Sessions (rename, delete, search) and chat actions (regenerate, edit, continue) through the
HTTP API, on the real tiny model and a real SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from companion.auth import KeyStore
from companion.runtime import open_runtime
from companion.server.app import create_app
from tests.conftest import make_settings, sse_events

SHORT = {"max_tokens": 4, "cache": False}


def say(client: TestClient, text: str, **more: Any) -> dict[str, Any]:
    resp = client.post("/api/v1/chat", json={"message": text, **SHORT, **more})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def shown(client: TestClient, session: str) -> list[dict[str, Any]]:
    """The messages a person sees: the active ones."""
    msgs = client.get(f"/api/v1/sessions/{session}/messages").json()["messages"]
    return [m for m in msgs if m["active"]]


def test_rename_search_and_delete_a_session(client: TestClient) -> None:
    first = say(client, "I keep bees in Lisbon", user_id="ana")
    say(client, "What is a good name for a cat?", user_id="ana")
    say(client, "Bees are my favourite animal", user_id="bob")
    session = first["session_id"]
    renamed = client.patch(f"/api/v1/sessions/{session}", json={"title": "  Bee  notes "})
    assert renamed.status_code == 200 and renamed.json()["title"] == "Bee notes"
    listed = client.get("/api/v1/sessions", params={"user_id": "ana"}).json()
    assert "Bee notes" in [s["title"] for s in listed]

    hits = client.get("/api/v1/users/ana/search", params={"q": "bee"}).json()["hits"]
    assert [h["session_id"] for h in hits] == [session]  # bob's bees are not ana's
    assert hits[0]["session_title"] == "Bee notes"
    assert "\x02bees\x03" in hits[0]["snippet"]
    assert client.get("/api/v1/users/ana/search", params={"q": "lisbon bees"}).json()["hits"]
    assert not client.get("/api/v1/users/ana/search", params={"q": "zebra"}).json()["hits"]

    assert client.delete(f"/api/v1/sessions/{session}").status_code == 204
    assert client.get(f"/api/v1/sessions/{session}/messages").status_code == 404
    assert not client.get("/api/v1/users/ana/search", params={"q": "bees"}).json()["hits"]
    assert len(client.get("/api/v1/sessions", params={"user_id": "ana"}).json()) == 1


def test_session_routes_reject_bad_input_with_a_reason(client: TestClient) -> None:
    assert client.delete("/api/v1/sessions/nope").status_code == 404
    assert client.patch("/api/v1/sessions/nope", json={"title": "x"}).status_code == 404
    session = say(client, "hello")["session_id"]
    blank = client.patch(f"/api/v1/sessions/{session}", json={"title": "   "})
    assert blank.status_code == 422 and blank.json()["error"]["field"] == "title"
    bad = client.get("/api/v1/users/default/search", params={"q": "?!"})
    assert bad.status_code == 422 and "letter" in bad.json()["error"]["message"]
    assert client.get("/api/v1/users/default/search").status_code == 422
    assert client.post("/api/v1/messages/999999/regenerate").status_code == 404


def test_regenerate_keeps_the_old_reply_as_an_alternative(client: TestClient) -> None:
    first = say(client, "Tell me about the sea.", temperature=1.0, seed=1)
    again = client.post(
        f"/api/v1/messages/{first['message_id']}/regenerate",
        json={"max_tokens": 4, "temperature": 1.0, "seed": 2},
    )
    assert again.status_code == 200, again.text
    new = again.json()
    msgs = client.get(f"/api/v1/sessions/{first['session_id']}/messages").json()["messages"]
    replies = [m for m in msgs if m["role"] == "assistant"]
    assert [m["id"] for m in replies] == [first["message_id"], new["message_id"]]
    assert {m["alt_group"] for m in replies} == {first["message_id"]}
    assert [m["active"] for m in replies] == [False, True]
    assert [m["role"] for m in shown(client, first["session_id"])] == ["user", "assistant"]
    # an older reply cannot be regenerated any more
    old = client.post(f"/api/v1/messages/{first['message_id']}/regenerate")
    assert old.status_code == 422 and "last reply" in old.json()["error"]["message"]


def test_edit_and_resend_replaces_the_message_and_what_followed(client: TestClient) -> None:
    first = say(client, "My dog is called Rex.")
    session = first["session_id"]
    say(client, "He likes parks.", session_id=session)
    ask = shown(client, session)[0]
    edited = client.post(
        f"/api/v1/messages/{ask['id']}/edit",
        json={"text": "My cat is called Tom.", "max_tokens": 4},
    )
    assert edited.status_code == 200, edited.text
    now = shown(client, session)
    assert [m["text"] for m in now][0] == "My cat is called Tom."
    assert len(now) == 2 and now[1]["id"] == edited.json()["message_id"]
    everything = client.get(f"/api/v1/sessions/{session}/messages").json()["messages"]
    assert len(everything) == 6  # the old exchange is kept, out of the conversation
    reply = [m for m in now if m["role"] == "assistant"][0]
    refused = client.post(f"/api/v1/messages/{reply['id']}/edit", json={"text": "x"})
    assert refused.status_code == 422


def test_continue_a_reply_cut_at_max_tokens(client: TestClient) -> None:
    cut = say(client, "Write a long story about a lighthouse keeper.", max_tokens=3)
    assert cut["finish_reason"] == "length"
    msgs = shown(client, cut["session_id"])
    assert msgs[-1]["finish_reason"] == "length"
    resp = client.post(
        f"/api/v1/messages/{cut['message_id']}/continue", json={"max_tokens": 3, "stream": True}
    )
    assert resp.status_code == 200
    events = sse_events(resp.text)
    done = [data for name, data in events if name == "done"][0]
    more = "".join(data["text"] for name, data in events if name == "token")
    assert done["response"] == cut["response"] + more and more
    stored = shown(client, cut["session_id"])[-1]
    assert stored["id"] == cut["message_id"] and stored["text"] == done["response"]
    whole = say(client, "hi", max_tokens=64, session_id=cut["session_id"])
    if whole["finish_reason"] == "stop":
        refused = client.post(f"/api/v1/messages/{whole['message_id']}/continue")
        assert refused.status_code == 422 and "complete" in refused.json()["error"]["message"]


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    settings = make_settings(tmp_path / "d", auth=True, max_tokens=3)
    rt = open_runtime(settings)
    keys = KeyStore(rt.store)
    made = {name: {"Authorization": f"Bearer {keys.create(name)[0]}"} for name in ("al", "bo")}
    with TestClient(create_app(settings, rt)) as c:
        yield c, made
    rt.close()


def test_another_users_key_can_touch_nothing(keyed: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = keyed
    mine = client.post("/api/v1/chat", json={"message": "secret plans"}, headers=keys["al"])
    session, reply = mine.json()["session_id"], mine.json()["message_id"]
    bo = keys["bo"]
    assert (
        client.patch(f"/api/v1/sessions/{session}", json={"title": "x"}, headers=bo).status_code
        == 403
    )
    assert client.delete(f"/api/v1/sessions/{session}", headers=bo).status_code == 403
    assert (
        client.get("/api/v1/users/al/search", params={"q": "secret"}, headers=bo).status_code == 403
    )
    for action in ("regenerate", "continue"):
        assert client.post(f"/api/v1/messages/{reply}/{action}", headers=bo).status_code == 403
    assert (
        client.get("/api/v1/users/bo/search", params={"q": "secret"}, headers=bo).json()["hits"]
        == []
    )
    assert client.get("/api/v1/users/al/search", params={"q": "secret"}, headers=keys["al"]).json()[
        "hits"
    ]
    assert client.delete(f"/api/v1/sessions/{session}", headers=keys["al"]).status_code == 204
