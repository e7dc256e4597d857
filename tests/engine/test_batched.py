"""The batched engine with the real tiny model: separate streams, same greedy text under load,
chunked prompts, cancellation, admission control and KV reuse across turns.

Greedy text under load equals the text alone here (one thread, 63-token physical batches).
Measured with two threads and 512+ KV cells: 5 of 16 64-token replies identical (mean common
prefix 52%), because llama.cpp decodes a lone sequence with a split-KV kernel (docs/engine.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from companion.errors import Overloaded
from companion.llm.base import GenerationDone
from companion.llm.batched import BatchedEngine
from companion.llm.sampling import Detokenizer, StopText
from tests.engine.conftest import chat_prompt, collect, greedy, make_engine, most_active

ASKS = ["Name three fruits.", "How do I bake bread?", "Tell me about the moon.",
        "What is a good hobby for winter?", "Why is the sky blue?"]  # fmt: skip
LONG_ASK = "Write a long story about a dragon who learns to fly over the sea."


@pytest.fixture(scope="module")
def alone() -> Iterator[BatchedEngine]:
    """A second engine that only ever runs one request (the reference for greedy text)."""
    eng = make_engine(parallel=1, max_queue=8)
    yield eng
    eng.close()


async def wait_for(engine: BatchedEngine, key: str, value: float, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while engine.stats()[key] != value:
        assert time.monotonic() < deadline, f"{key} never became {value}: {engine.stats()}"
        await asyncio.sleep(0.01)


async def test_concurrent_streams_are_complete_separate_and_equal_to_alone(
    engine: BatchedEngine, alone: BatchedEngine
) -> None:
    prompts = [chat_prompt(engine, ask) for ask in ASKS]
    reference = [(await collect(alone, greedy(p)))[1].text for p in prompts]
    results = await asyncio.gather(*(collect(engine, greedy(p)) for p in prompts))
    for (pieces, done), expected in zip(results, reference, strict=True):
        assert "".join(pieces) == done.text == expected
        assert done.finish_reason in ("stop", "length") and 0 < done.completion_tokens <= 24
        assert done.prompt_tokens > 20
    assert len({done.text for _, done in results}) == len(ASKS)


async def test_long_prompt_is_chunked_between_decode_steps(
    engine: BatchedEngine, alone: BatchedEngine
) -> None:
    """A long prompt joins while a stream decodes: the stream keeps going, both texts as alone."""
    story = chat_prompt(engine, LONG_ASK)
    long_prompt = chat_prompt(engine, "Please remember this list. " + "apple pear plum fig. " * 60)
    assert len(long_prompt) > 5 * 64  # the step budget of the test engine
    expected_story = (await collect(alone, greedy(story, max_tokens=60)))[1].text
    expected_long = (await collect(alone, greedy(long_prompt, max_tokens=4)))[1].text
    running = engine.generate(greedy(story, max_tokens=60))
    pieces: list[str] = [await anext(running), await anext(running)]  # type: ignore[list-item]
    times: list[float] = []
    newcomer = asyncio.create_task(collect(engine, greedy(long_prompt, max_tokens=4)))
    joined = time.perf_counter()
    async for event in running:
        if isinstance(event, GenerationDone):
            break
        pieces.append(event)
        times.append(time.perf_counter())
    _, done = await newcomer
    first = joined + done.timings["time_to_first_token_ms"] / 1000
    assert sum(1 for t in times if joined < t < first) >= 3  # the stream kept going meanwhile
    assert "".join(pieces) == expected_story and done.text == expected_long
    await wait_for(engine, "active_sequences", 0)


async def test_closing_a_stream_frees_its_sequence_at_once(engine: BatchedEngine) -> None:
    await wait_for(engine, "active_sequences", 0)
    before = engine.stats()["cancelled"]
    stream = engine.generate(greedy(chat_prompt(engine, LONG_ASK), max_tokens=300))
    await anext(stream)
    await wait_for(engine, "active_sequences", 1)
    await stream.aclose()
    await wait_for(engine, "active_sequences", 0, timeout=2)
    assert engine.stats()["cancelled"] == before + 1
    _, done = await collect(engine, greedy(chat_prompt(engine, "Hi!"), max_tokens=4))
    assert done.completion_tokens > 0


async def test_a_full_queue_is_refused_with_overloaded(engine: BatchedEngine) -> None:
    prompt = chat_prompt(engine, LONG_ASK)
    hogs = [asyncio.create_task(collect(engine, greedy(prompt, max_tokens=400))) for _ in range(6)]
    await wait_for(engine, "queue_depth", 2)
    assert engine.stats()["active_sequences"] == 4
    with pytest.raises(Overloaded) as refused:
        await anext(engine.generate(greedy(prompt)))
    assert refused.value.retry_after_s >= 1
    for task in hogs:
        task.cancel()
    await asyncio.gather(*hogs, return_exceptions=True)
    await wait_for(engine, "active_sequences", 0, timeout=2)
    await wait_for(engine, "queue_depth", 0, timeout=2)


async def test_resumed_session_reuses_its_cache_and_matches_a_cold_start(
    engine: BatchedEngine, alone: BatchedEngine
) -> None:
    first_ask = "I have a dog called Rex."
    turn1 = chat_prompt(engine, first_ask)
    _, one = await collect(engine, greedy(turn1, key="resume"))
    turn2 = chat_prompt(engine, first_ask, one.text, "What is my dog called?")
    hits = engine.stats()["kv_hits"]
    _, warm = await collect(engine, greedy(turn2, key="resume"))
    assert warm.timings["reused_tokens"] >= len(turn1)
    assert engine.stats()["kv_hits"] == hits + 1
    _, cold = await collect(alone, greedy(turn2, key="cold"))
    assert cold.timings["reused_tokens"] < len(turn1)
    assert warm.text == cold.text


async def test_prefill_caches_a_prefix_for_the_first_reply(engine: BatchedEngine) -> None:
    prefix = engine.tokenize(
        engine.render_chat(
            [{"role": "system", "content": "You are Kit, a patient tutor of chess."}],
            add_generation_prompt=False,
        )
    )
    done = await engine.prefill(prefix, "tutor")
    assert done.finish_reason == "prefilled" and done.completion_tokens == 0
    prompt = engine.tokenize(
        engine.render_chat(
            [
                {"role": "system", "content": "You are Kit, a patient tutor of chess."},
                {"role": "user", "content": "How does the knight move?"},
            ]
        )
    )
    _, reply = await collect(engine, greedy(prompt, max_tokens=4, key="tutor"))
    assert reply.timings["reused_tokens"] == len(prefix)


async def test_stats_report_the_engine_figures(engine: BatchedEngine) -> None:
    await collect(engine, greedy(chat_prompt(engine, "Hello there!"), max_tokens=8))
    stats = engine.stats()
    for key in ("active_sequences", "queue_depth", "batch_size", "kv_used_ratio",
                "prompt_tokens_per_s", "generated_tokens_per_s", "ttft_p50_ms", "ttft_p95_ms",
                "kv_hits", "kv_misses", "kv_evictions", "kv_reused_tokens"):  # fmt: skip
        assert key in stats, key
    assert 0 < stats["kv_used_ratio"] < 1 and stats["generated_tokens_per_s"] > 0
    assert stats["ttft_p95_ms"] >= stats["ttft_p50_ms"] > 0


async def test_stop_string_ends_the_reply_and_is_never_sent(engine: BatchedEngine) -> None:
    prompt = chat_prompt(engine, "Count from 1 to 10, separated by commas.")
    _, free = await collect(engine, greedy(prompt, max_tokens=30))
    stop = free.text[len(free.text) // 2 :][:3]
    pieces, cut = await collect(engine, greedy(prompt, max_tokens=30, stop=(stop,)))
    assert cut.finish_reason == "stop" and stop not in "".join(pieces)
    assert cut.text == free.text[: free.text.index(stop)]


def test_stop_text_holds_back_a_possible_stop_start() -> None:
    text = StopText(("END",))
    assert text.add("Hello E") == "Hello "
    assert text.add("N") == ""
    assert text.add("D and more") == "" and text.stopped and text.text == "Hello "
    other = StopText(("END",))
    assert other.add("Hello E") == "Hello " and other.add("gg") == "Egg"
    assert other.finish() == ""


def test_detokenizer_joins_characters_split_across_tokens(engine: BatchedEngine) -> None:
    sample = "Café ☕ and 日本語 with 😀!"
    tokens = engine.tokenize(sample)
    detok = Detokenizer(engine.vocab)
    pieces = [detok.piece(t) for t in tokens]
    assert "".join(pieces) == sample
    assert "" in pieces  # some token ended mid-character and waited for the next one
    assert all("\ufffd" not in p for p in pieces)


def test_done_event_type() -> None:
    assert GenerationDone("", 1, 0, "stop").timings == {}


async def test_a_reply_cut_inside_a_character_streams_what_it_stores(engine: BatchedEngine) -> None:
    """max_tokens reached in the middle of a multi-byte character: the unfinished character is
    dropped from both the stream and the GenerationDone (stored), never sent as U+FFFD."""
    prompt = chat_prompt(engine, "Send me some smileys.")
    assert len(engine.tokenize("😀")) > 1  # one character, several tokens
    cut_inside = 0
    for max_tokens in range(1, 6):
        request = greedy(prompt, max_tokens=max_tokens)
        request.grammar = 'root ::= "😀😀😀😀😀😀"'
        pieces, done = await collect(engine, request)
        assert done.finish_reason == "length" and done.completion_tokens == max_tokens
        assert "".join(pieces) == done.text and "\ufffd" not in done.text
        assert set(done.text) <= {"😀"}
        cut_inside += len(engine.tokenize(done.text)) < max_tokens
    assert cut_inside  # some runs did end inside a character


async def test_the_stream_floor_holds_sequences_back_while_steps_are_slow() -> None:
    """engine_stream_floor_tps: with a floor no step can meet, a burst of 12 requests decodes
    BASE_STREAMS at a time (the rest wait their turn); without it, all 12 together."""
    from companion.llm.batched import BASE_STREAMS

    eng = make_engine(parallel=12, max_queue=16)
    try:
        prompts = [chat_prompt(eng, f"{ask} ({i})") for i, ask in enumerate(ASKS * 3)][:12]
        for floor, most in ((1000.0, BASE_STREAMS), (0.0, 12)):
            eng.floor_tps = floor
            await collect(eng, greedy(prompts[0], max_tokens=4))  # a step measured first
            async with most_active(eng) as seen:
                results = await asyncio.gather(
                    *(collect(eng, greedy(p, max_tokens=12)) for p in prompts)
                )
            assert all(done.finish_reason in ("stop", "length") for _, done in results)
            assert seen[0] == most, (floor, seen)
            assert eng.stats()["streams"] == most
    finally:
        eng.close()
