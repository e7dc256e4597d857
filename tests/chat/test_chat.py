"""The chat service with the real tiny model and a real SQLite file."""

from __future__ import annotations

import asyncio

import pytest

from companion.chat import Companion
from companion.chat_actions import ChatActions
from companion.domain import ChatResult
from companion.errors import DeadlineExceeded, InputError, PayloadTooLarge
from companion.runtime import Runtime, open_runtime
from companion.shared.locks import SessionBusy
from tests.conftest import SPEC_STATS_FIELDS, make_settings


async def test_chat_stores_the_exchange_with_usage_and_timings(runtime: Runtime) -> None:
    result = await runtime.companion.chat("alice", "Hi! My name is Alice.", max_tokens=24)
    assert result.response.strip()
    assert result.model == "SmolLM2-135M-Instruct.Q4_1"
    assert 0 < result.usage.completion_tokens <= 24
    assert result.usage.prompt_tokens > 10
    for key in (
        "context_ms",
        "time_to_first_token_ms",
        "generation_ms",
        "tokens_per_second",
        "total_ms",
    ):
        assert result.timings[key] >= 0
    messages = runtime.store.list_messages(result.session_id)
    assert [(m.role, m.status) for m in messages] == [
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert messages[0].text == "Hi! My name is Alice."
    assert messages[1].text == result.response
    assert messages[1].token_count == result.usage.completion_tokens
    assert messages[0].token_count and messages[0].token_count > 0


async def test_history_joins_the_next_turn(runtime: Runtime) -> None:
    first = await runtime.companion.chat("bob", "I have a dog called Rex.", max_tokens=16)
    second = await runtime.companion.chat(
        "bob", "What is my dog called?", first.session_id, max_tokens=16
    )
    assert second.session_id == first.session_id
    # another user: bob's new sessions recall his earlier turns as memories
    alone = await runtime.companion.chat("carol", "What is my dog called?", max_tokens=16)
    assert second.usage.prompt_tokens > alone.usage.prompt_tokens + 10
    assert len(runtime.store.list_messages(first.session_id)) == 4


async def test_greedy_replies_repeat_and_max_tokens_holds(runtime: Runtime) -> None:
    a = await runtime.companion.chat("u", "Name three fruits.", temperature=0.0, max_tokens=20)
    b = await runtime.companion.chat("u", "Name three fruits.", temperature=0.0, max_tokens=20)
    assert a.response == b.response
    long = await runtime.companion.chat(
        "u", "Write a long story about a ship.", max_tokens=7, temperature=0.0
    )
    assert long.usage.completion_tokens == 7
    assert long.finish_reason == "length"


async def test_stop_strings_end_the_reply(runtime: Runtime) -> None:
    ask = "Count from 1 to 10."
    free = await runtime.companion.chat("u", ask, temperature=0.0, max_tokens=30)
    cut = len(free.response) // 2
    stop = free.response[cut : cut + 3]
    assert stop.strip(), free.response
    # another user, so that the first exchange is not recalled into the second one's prompt
    stopped = await runtime.companion.chat("v", ask, temperature=0.0, max_tokens=30, stop=[stop])
    assert stop not in stopped.response
    assert stopped.response.strip() == free.response[: free.response.index(stop)].strip()


async def test_bad_messages_are_refused_before_anything_is_stored(runtime: Runtime) -> None:
    with pytest.raises(InputError) as empty:
        await runtime.companion.chat("u", "   ")
    assert empty.value.field == "message"
    with pytest.raises(PayloadTooLarge):
        await runtime.companion.chat("u", "x" * (runtime.settings.max_message_chars + 1))
    assert runtime.store.counts()["messages"] == 0


async def test_context_is_trimmed_to_the_token_budget(tmp_path) -> None:
    settings = make_settings(tmp_path / "d", context_length=512, max_tokens=64, history_messages=40)
    rt = open_runtime(settings)
    try:
        first = await rt.companion.chat("t", "Tell me a fact about space. " * 5, max_tokens=64)
        session = first.session_id
        for _ in range(5):
            r = await rt.companion.chat(
                "t", "And another one, please. " * 6, session, max_tokens=64
            )
            assert r.usage.prompt_tokens <= 512 - 64
        with pytest.raises(PayloadTooLarge, match="too long for the context"):
            await rt.companion.chat("t", "word " * 600, session)
    finally:
        rt.close()


async def test_closing_the_stream_marks_the_exchange_interrupted(runtime: Runtime) -> None:
    stream = runtime.companion.chat_stream(
        "carol", "Tell me a long story about dragons.", max_tokens=200
    )
    pieces = []
    async for event in stream:
        assert isinstance(event, str)
        pieces.append(event)
        if len(pieces) == 3:
            break
    await stream.aclose()
    session = runtime.store.list_sessions("carol")[0]
    messages = runtime.store.list_messages(session.id)
    assert messages[0].status == "interrupted"
    assert messages[1].role == "assistant" and messages[1].status == "interrupted"
    assert messages[1].text.startswith("".join(pieces).strip()[:5])
    stats = runtime.companion.get_performance_stats()
    assert stats["interrupted"] == 1
    # the engine is free again: the next request completes
    after = await runtime.companion.chat("carol", "Hello again", max_tokens=8)
    assert after.usage.completion_tokens > 0


async def test_deadline_interrupts_and_says_so(tmp_path) -> None:
    rt = open_runtime(make_settings(tmp_path / "d", request_timeout_s=0.05))
    try:
        with pytest.raises(DeadlineExceeded):
            await rt.companion.chat("d", "Write a very long essay about rivers.", max_tokens=400)
        session = rt.store.list_sessions("d")[0]
        assert rt.store.list_messages(session.id)[0].status == "interrupted"
    finally:
        rt.close()


async def test_performance_stats_have_the_spec_fields(runtime: Runtime) -> None:
    await runtime.companion.chat("s", "Hi", max_tokens=8)
    stats = runtime.companion.get_performance_stats()
    assert set(SPEC_STATS_FIELDS) <= set(stats)
    assert stats["requests"] == 1 and stats["errors"] == 0
    assert stats["avg_response_time"] > 0 and stats["tokens_per_second"] > 0
    assert stats["memory_usage_mb"] > 50 and stats["model_load_time"] > 0


async def test_concurrent_chats_all_complete(runtime: Runtime) -> None:
    async def one(i: int) -> ChatResult:
        return await runtime.companion.chat(f"user{i}", f"Say hello to number {i}.", max_tokens=12)

    results = await asyncio.gather(*(one(i) for i in range(4)))
    assert len({r.session_id for r in results}) == 4
    assert all(r.usage.completion_tokens > 0 for r in results)


def test_companion_is_the_spec_handler_shape(runtime: Runtime) -> None:
    assert isinstance(runtime.companion, Companion)
    assert callable(runtime.companion.get_performance_stats)


async def test_every_way_of_answering_a_session_waits_for_its_one_lock(runtime: Runtime) -> None:
    """chat, regenerate, edit and continue all take the session's lock (Companion.in_turn):
    past the wait each is a 409 session_busy that changed nothing; then the session is free."""
    c = runtime.companion
    first = await c.chat("lock", "Tell me about boats.", max_tokens=4)
    actions = ChatActions(c)
    shown = [(m.id, m.text, m.active) for m in runtime.store.list_messages(first.session_id)]
    asked_id = shown[0][0]
    c.locks.wait_s = 0.2  # type: ignore[attr-defined]
    async with c.locks.hold(first.session_id):
        for stream in (
            c.chat_stream("lock", "And trains?", first.session_id, max_tokens=4),
            actions.regenerate(first.message_id, max_tokens=4),
            actions.edit(asked_id, "Tell me about ships.", max_tokens=4),
            actions.continue_reply(first.message_id, max_tokens=4),
        ):
            with pytest.raises(SessionBusy) as busy:
                await anext(stream)
            assert busy.value.status_code == 409 and busy.value.code == "session_busy"
    after = [(m.id, m.text, m.active) for m in runtime.store.list_messages(first.session_id)]
    assert after == shown  # nothing retired, nothing added
    again = await c.chat("lock", "And trains?", first.session_id, max_tokens=4)
    assert again.session_id == first.session_id


async def test_the_next_turn_reuses_the_whole_prompt_notes_included(runtime: Runtime) -> None:
    companion = runtime.companion
    await companion.chat("dana", "My sister Maya lives in Lisbon.", max_tokens=8)
    first = await companion.chat("dana", "Where does my sister live?", max_tokens=8)
    assert any("Lisbon" in m["text"] for m in first.extra["memories_used"])  # notes went in
    before = companion.engine.stats()["kv_reused_tokens"]
    second = await companion.chat(
        "dana", "And what is her name?", first.session_id, max_tokens=8
    )
    reused = companion.engine.stats()["kv_reused_tokens"] - before
    # turn 1's prompt and reply stay in place (its notes too), so only the new turn is computed
    assert reused >= first.usage.prompt_tokens
    assert second.usage.prompt_tokens - reused <= 40
    # nothing the prompt holds already comes again as a note
    assert not any("Lisbon" in m["text"] for m in second.extra["memories_used"])
