"""The cache inside the chat service and the HTTP API: real runtime, tiny model, SQLite."""

from __future__ import annotations

from fastapi.testclient import TestClient

from companion.runtime import Runtime, open_runtime
from tests.conftest import make_settings

SECRET = "4812"
QUESTION = "What is my locker code?"
PARAPHRASES = [
    "what is my locker code",
    "What's my locker code?",
    "Tell me my locker code.",
    "Do you know my locker code?",
    "what is  MY locker code?",
]


async def test_repeat_is_an_exact_hit_stored_as_cached(runtime: Runtime) -> None:
    first = await runtime.companion.chat("u1", "Name three fruits.", max_tokens=16, temperature=0.0)
    again = await runtime.companion.chat(
        "u2", "name three  fruits.", max_tokens=16, temperature=0.0
    )
    assert not first.cached and again.cached
    assert again.response == first.response and again.extra["cache_layer"] == "exact"
    assert again.extra["cache_scope"] == "shared"
    messages = runtime.store.list_messages(again.session_id)
    assert [(m.role, m.status, m.cached) for m in messages] == [
        ("user", "complete", False),
        ("assistant", "complete", True),
    ]
    other_opts = await runtime.companion.chat(
        "u2", "Name three fruits.", max_tokens=12, temperature=0.0
    )
    assert not other_opts.cached  # output-changing options are part of the key


async def test_bypass_neither_reads_nor_writes(runtime: Runtime) -> None:
    companion = runtime.companion
    first = await companion.chat("u", "Say hello to the moon.", max_tokens=12, use_cache=False)
    second = await companion.chat("u", "Say hello to the moon.", max_tokens=12)
    assert not first.cached and not second.cached
    stats = companion.get_performance_stats()["cache"]
    assert stats["bypassed"] == 1 and stats["stores"] == 1


async def test_secret_in_a_history_and_memories_never_reaches_another_user(
    runtime: Runtime,
) -> None:
    companion = runtime.companion
    memory = companion.personal.memory if companion.personal else None
    if memory is not None:
        memory.add("alice", f"Alice's locker code is {SECRET}.")
    planted = await companion.chat(
        "alice", f"My locker code is {SECRET}. Please remember it.", max_tokens=24, temperature=0.0
    )
    in_session = await companion.chat(
        "alice", QUESTION, planted.session_id, max_tokens=24, temperature=0.0
    )
    fresh = await companion.chat("alice", QUESTION, max_tokens=24, temperature=0.0)
    assert companion.cache is not None
    personal_rows = companion.cache.stats()["entries"] - companion.cache.stats()["shared_entries"]
    assert personal_rows >= 2, "alice's replies are cached in her own scope"
    alice_replies = {in_session.response, fresh.response}
    for text in [QUESTION, *PARAPHRASES]:
        for user in ("bob", "carol"):
            reply = await companion.chat(user, text, max_tokens=24, temperature=0.0)
            assert SECRET not in reply.response, (user, text, reply.response)
            if reply.cached:
                assert reply.extra["cache_scope"] == "shared", reply.extra
                assert reply.response not in alice_replies or not any(
                    SECRET in r for r in alice_replies
                )
    # the shared path works: a new user gets the reply first given to bob, shared
    zed = await companion.chat("zed", QUESTION, max_tokens=24, temperature=0.0)
    assert zed.cached and zed.extra["cache_scope"] == "shared"
    assert SECRET not in zed.response


async def test_history_keys_replies_to_the_user_and_context(runtime: Runtime) -> None:
    companion = runtime.companion
    a = await companion.chat("dave", "I like green tea.", max_tokens=12, temperature=0.0)
    follow = await companion.chat(
        "dave", "What should I cook tonight?", a.session_id, max_tokens=12, temperature=0.0
    )
    stranger = await companion.chat(
        "erin", "What should I cook tonight?", max_tokens=12, temperature=0.0
    )
    assert not follow.cached and not stranger.cached


def test_http_bypass_stats_and_clear(client: TestClient) -> None:
    # new users each time: the memory system may remember a user's own words, which makes
    # their later requests personal (then only their own scope serves them)
    body = {"message": "Give me a word that rhymes with cat.", "max_tokens": 8, "temperature": 0}
    assert client.post("/api/v1/chat", json={**body, "user_id": "h1"}).json()["cached"] is False
    assert client.post("/api/v1/chat", json={**body, "user_id": "h2"}).json()["cached"] is True
    bypass = {**body, "user_id": "h3", "cache": False}
    assert client.post("/api/v1/chat", json=bypass).json()["cached"] is False
    cache = client.get("/api/v1/stats").json()["cache"]
    assert cache["exact_hits"] == 1 and cache["bypassed"] == 1 and cache["entries"] == 1
    assert cache["lookup_p50_ms"] > 0 and cache["size_mb"] >= 0
    assert client.post("/api/v1/cache/cleanup").json() == {"removed": 0}
    assert client.delete("/api/v1/cache", params={"scope": "shared"}).json() == {"removed": 1}
    assert client.post("/api/v1/chat", json={**body, "user_id": "h4"}).json()["cached"] is False


async def test_caching_off(tmp_path: object) -> None:
    from pathlib import Path

    settings = make_settings(Path(str(tmp_path)) / "off", enable_caching=False)
    rt = open_runtime(settings)
    try:
        assert rt.companion.cache is None
        for _ in range(2):
            reply = await rt.companion.chat("u", "Name a colour.", max_tokens=6)
            assert not reply.cached
        assert rt.companion.get_performance_stats()["cache"] == {"enabled": False}
    finally:
        rt.close()
