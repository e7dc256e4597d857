"""Memory, persona and user-data routes over HTTP (ASGI client, real runtime)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from companion.persona.card import read_png_card


def test_memory_routes(client: TestClient) -> None:
    base = "/api/v1/users/alice/memories"
    made = client.post(base, json={"text": "Allergic to peanuts", "importance": 1.0})
    assert made.status_code == 201
    mid = made.json()["id"]
    assert client.post(base, json={"text": ""}).status_code == 422
    found = client.get(base + "/search", params={"q": "peanut allergy"}).json()["memories"]
    assert found[0]["id"] == mid and "similarity" in found[0]["reasons"]
    edited = client.patch(f"{base}/{mid}", json={"importance": 0.5})
    assert edited.json()["importance"] == 0.5
    assert client.patch(f"/api/v1/users/bob/memories/{mid}", json={"text": "x"}).status_code == 404
    assert [m["id"] for m in client.get(base).json()["memories"]] == [mid]
    assert client.get(base, params={"topic": "health"}).json()["memories"][0]["id"] == mid
    history = client.get(base + "/history").json()["history"]
    assert [h["event"] for h in history] == ["ADD", "UPDATE"]
    assert client.delete(f"{base}/{mid}").status_code == 204
    assert client.get(base).json()["memories"] == []
    assert client.post("/api/v1/memories/cleanup").json()["expired"] == 0


def test_export_and_delete_all_of_a_users_data(client: TestClient) -> None:
    chat = client.post("/api/v1/chat", json={"message": "My name is Zoe.", "user_id": "zoe",
                                             "max_tokens": 4}).json()
    data = client.get("/api/v1/users/zoe/export").json()
    assert data["user"]["id"] == "zoe"
    assert data["sessions"][0]["id"] == chat["session_id"]
    assert [m["text"] for m in data["memories"]] == ["Name is Zoe"]
    assert data["memory_history"][0]["event"] == "ADD"
    turns = client.get("/api/v1/users/zoe/episodes").json()["episodes"]
    assert turns[-1]["text"] == "My name is Zoe." and turns[-1]["role"] == "user"
    assert turns[-1]["session_id"] == chat["session_id"] and data["episodes"] == turns
    if chat["response"].strip():  # the reply is kept too, as the companion's
        assert turns[0]["role"] == "assistant" and turns[0]["text"] == chat["response"].strip()
    found = client.get("/api/v1/users/zoe/memories/search",
                       params={"q": "What is my name?", "as_of": "2000-01-01T00:00:00"})
    assert found.status_code == 200 and found.json()["memories"] == []
    gone = client.delete("/api/v1/users/zoe").json()
    assert gone["deleted"] is True and gone["sessions"] == 1
    assert client.get("/api/v1/users/zoe/export").status_code == 404
    assert client.get("/api/v1/users/zoe/memories").json()["memories"] == []
    assert client.get("/api/v1/users/zoe/episodes").json()["episodes"] == []
    assert client.get(f"/api/v1/sessions/{chat['session_id']}/messages").status_code == 404


def test_persona_routes_and_cards(client: TestClient) -> None:
    body = {"name": "Max", "traits": {"humor": 0.9}, "example_lines": ["Ahoy!"]}
    assert client.post("/api/v1/personas", json=body).status_code == 201
    assert client.post("/api/v1/personas", json=body).status_code == 422
    assert client.post("/api/v1/personas", json={"name": "X", "traits": {"warmth": 2}}
                       ).status_code == 422
    shown = client.get("/api/v1/personas/max").json()
    assert "You have a good sense of humor." in shown["rendered_prompt"]
    client.patch("/api/v1/personas/max", json={"traits": {"warmth": 0.9}})
    assert client.get("/api/v1/personas/max").json()["traits"] == {"humor": 0.9, "warmth": 0.9}
    png = client.get("/api/v1/personas/max/card", params={"format": "png"})
    assert png.headers["content-type"] == "image/png"
    assert read_png_card(png.content)["data"]["name"] == "Max"
    imported = client.post("/api/v1/personas/import", params={"id": "max2"}, content=png.content)
    assert imported.status_code == 201 and imported.json()["traits"]["warmth"] == 0.9
    card = client.get("/api/v1/personas/max2/card").json()
    assert card["spec"] == "chara_card_v2"
    assert client.post("/api/v1/personas/import", content=b"junk").status_code == 422
    assert client.put("/api/v1/users/amy/persona", json={"persona_id": "max2"}).status_code == 200
    assert client.get("/api/v1/users/amy/persona").json()["persona"]["id"] == "max2"
    assert client.put("/api/v1/users/amy/persona", json={"persona_id": "nope"}).status_code == 404
    ids = [p["id"] for p in client.get("/api/v1/personas").json()["personas"]]
    assert ids == ["default", "max", "max2"]
    assert client.delete("/api/v1/personas/max2").status_code == 204
    assert client.get("/api/v1/users/amy/persona").json()["persona"]["id"] == "default"
