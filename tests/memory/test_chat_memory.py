"""Memory and persona in real chats: the tiny model, real SQLite, the real embedder."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from companion.context import build_context
from companion.domain import Message
from companion.persona import persona_from
from companion.runtime import Runtime, open_runtime
from tests.conftest import make_settings


def prompt_text(result_extra: dict[str, object]) -> str:
    context = result_extra["context"]
    assert isinstance(context, list)
    return "\n".join(m["content"] for m in context)


async def test_a_recalled_fact_reaches_the_prompt_before_the_new_message(runtime: Runtime) -> None:
    chat = runtime.companion
    first = await chat.chat("alice", "Hi! My name is Alice and I live in Paris.", max_tokens=8)
    second = await chat.chat("alice", "Where do I live?", max_tokens=8)  # a new session
    assert second.session_id != first.session_id
    context = second.extra["context"]
    assert context[0]["role"] == "system" and "Paris" not in context[0]["content"]
    notes, newest = context[-2], context[-1]
    assert newest == {"role": "user", "content": "Where do I live?"}
    assert notes["role"] == "system" and "- Lives in Paris" in notes["content"]
    assert second.extra["memory_ids"]
    assert second.timings["memory_total_ms"] >= 0
    stored = runtime.companion.personal.memory.memories("alice")  # type: ignore[union-attr]
    assert {m.text for m in stored} == {"Name is Alice", "Lives in Paris"}
    assert all(m.source_ids == (first.message_id - 1,) for m in stored)  # the user's message


async def test_a_move_in_chat_updates_and_the_new_home_is_recalled(runtime: Runtime) -> None:
    chat = runtime.companion
    await chat.chat("alice", "I live in Paris.", max_tokens=4)
    await chat.chat("alice", "I moved to Lyon last week.", max_tokens=4)
    reply = await chat.chat("alice", "Which city do I live in?", max_tokens=4)
    text = prompt_text(reply.extra)
    assert "Lives in Lyon" in text and "Lives in Paris" not in text


async def test_no_cross_user_recall_in_chat(runtime: Runtime) -> None:
    chat = runtime.companion
    await chat.chat("alice", "My dog is called Rex and I live in Paris.", max_tokens=4)
    bob = await chat.chat("bob", "Where do I live and what is my dog called?", max_tokens=4)
    assert bob.extra["memory_ids"] == []
    assert "Rex" not in prompt_text(bob.extra) and "Paris" not in prompt_text(bob.extra)


async def test_persona_shapes_prompt_sampling_and_relationship(runtime: Runtime) -> None:
    personal = runtime.companion.personal
    assert personal is not None
    personal.personas.create(persona_from({
        "name": "Max", "traits": {"verbosity": 0.0, "humor": 1.0, "playfulness": 1.0},
        "example_lines": ["Ahoy!"]}))
    personal.personas.select("carol", "max")
    result = await runtime.companion.chat("carol", "Thanks, you're great!", temperature=0.0)
    assert result.extra["context"][0]["content"].startswith("You are Max.")
    assert result.usage.completion_tokens <= runtime.settings.max_tokens // 2  # verbosity 0
    _, rel = personal.personas.active("carol")
    assert rel.interactions == 1 and rel.affinity > 0
    default = await runtime.companion.chat("dave", "Hello", max_tokens=4)
    assert default.extra["context"][0]["content"] == runtime.settings.system_prompt


async def test_session_summary_once_the_window_is_outgrown(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "data", history_messages=2, history_step=0, enable_caching=False
    )
    rt = open_runtime(settings)
    try:
        chat = rt.companion
        first = await chat.chat("erin", "I work as a nurse.", max_tokens=4)
        sid = first.session_id
        await chat.chat("erin", "I'm planning a trip to Japan in spring.", sid, max_tokens=4)
        third = await chat.chat("erin", "What should I pack?", sid, max_tokens=4)
        summary = rt.companion.personal.summaries.get(sid)  # type: ignore[union-attr]
        assert summary is not None and "Works as a nurse" in summary
        assert third.extra["context"][-2]["content"].count("Earlier in this conversation") == 1
    finally:
        rt.close()


def test_context_order_and_drop_priority(runtime: Runtime) -> None:
    engine = runtime.companion.engine
    history = [Message(i, "s", "user" if i % 2 == 0 else "assistant",
                       f"turn {i} " + "words " * 30, "complete", None, False, None, {},
                       datetime.now(UTC)) for i in range(6)]
    memories = [f"memory {i} " + "fact " * 20 for i in range(3)]

    def build(budget: int) -> tuple[int, int, bool]:
        built = build_context(engine, system_prompt="You are Nova.", history=history,
                              message="hello", budget_tokens=budget, memories=memories,
                              summary="earlier " * 20)
        return built.history_used, built.memories_used, built.summary_used

    full = build_context(engine, system_prompt="You are Nova.", history=history,
                         message="hello", budget_tokens=4000, memories=memories, summary="s")
    roles = [m["role"] for m in full.messages]
    assert roles == ["system"] + ["user", "assistant"] * 3 + ["system", "user"]
    assert full.personal and full.memories_used == 3
    sizes = {budget: build(budget) for budget in range(60, 800, 10)}
    # as the budget shrinks: old history goes first, then the summary, then memories, then
    # the last exchange
    seen = sorted(sizes.items(), reverse=True)
    assert seen[0][1] == (6, 3, True)
    assert (2, 3, True) in sizes.values() and (2, 3, False) in sizes.values()
    assert (2, 1, False) in sizes.values() and (0, 0, False) in sizes.values()
    order = [v for _, v in seen]
    assert order.index((2, 3, True)) < order.index((2, 3, False)) < order.index((2, 0, False))


async def test_memories_or_a_persona_make_the_context_personal_for_the_cache(
    runtime: Runtime,
) -> None:
    chat = runtime.companion
    ask = "What is a good museum in Paris?"
    await chat.chat("alice", "I live in Paris.", max_tokens=4, temperature=0.0)
    mine = await chat.chat("alice", ask, max_tokens=6, temperature=0.0)
    assert mine.extra["memory_ids"] and not mine.cached
    first = await chat.chat("bob", ask, max_tokens=6, temperature=0.0)
    assert not first.cached  # alice's reply came from her memories: never shared
    shared = await chat.chat("carol", ask, max_tokens=6, temperature=0.0)
    assert shared.cached  # bob's came from a context with nothing personal in it
    personal = chat.personal
    assert personal is not None
    personal.personas.create(persona_from({"name": "Max", "traits": {"humor": 0.9}}))
    personal.personas.select("dave", "max")
    personal.personas.select("erin", "max")
    as_max = await chat.chat("dave", "Name a colour.", max_tokens=6, temperature=0.0)
    also_max = await chat.chat("erin", "Name a colour.", max_tokens=6, temperature=0.0)
    assert not as_max.cached and not also_max.cached  # a chosen persona is the user's own
