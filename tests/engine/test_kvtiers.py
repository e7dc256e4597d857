"""Tiered KV with the real tiny model: an evicted session's state goes to host RAM or disk and
its next turn restores it; the greedy reply then equals the reply after a fresh prefill."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import pytest

from companion.llm.base import GenerationDone
from companion.llm.batched import BatchedEngine
from companion.llm.kvtiers import KvTiers
from companion.llm.llama_cpp import ContextPlan, load_model
from companion.llm.registry import tiny_package_path
from companion.memory.llm_extract import SESSION_KEY as EXTRACTION_KEY
from tests.engine.conftest import chat_prompt, collect, greedy, make_engine

FIRST = "I have a dog called Rex and a cat called Tom."
SECOND = "What are my pets called?"
FILLER = "Please remember this list. " + "apple pear plum fig. " * 30


def small_engine(tiers: KvTiers, kv_tokens: int = 512, split: bool = False) -> BatchedEngine:
    """Few KV cells, so a couple of long prompts evict an idle session (one thread: exact);
    `split`: 4 streams of 512 cells (2 decoding and 2 spare ids, as the product on CPU)."""
    path = tiny_package_path()
    assert path is not None
    plan = ContextPlan(kv_tokens=kv_tokens, n_seq_max=16, n_batch=64, n_threads=1)
    if split:
        plan = ContextPlan(kv_tokens=4 * 512, n_seq_max=4, n_batch=64, n_threads=1, split=True)
    model = load_model(path, size="tiny", context_length=512, plan=plan)
    return BatchedEngine(model, parallel=2, max_queue=8, tiers=tiers)


@pytest.fixture(scope="module")
def alone() -> Iterator[BatchedEngine]:
    eng = make_engine(parallel=1, max_queue=8)
    yield eng
    eng.close()


async def evict_with_fillers(engine: BatchedEngine, n: int = 4) -> None:
    """Long prompts from other sessions that need the idle sessions' cells."""
    for i in range(n):
        await collect(engine, greedy(chat_prompt(engine, f"{i}. {FILLER}"), 4, key=f"fill-{i}"))


async def first_turn(engine: BatchedEngine) -> list[int]:
    """Turn 1 of session "pets"; the prompt of its turn 2."""
    _, one = await collect(engine, greedy(chat_prompt(engine, FIRST), key="pets"))
    return chat_prompt(engine, FIRST, one.text, SECOND)


async def assert_replies_as_fresh_prefill(
    alone: BatchedEngine, turn2: list[int], warm: GenerationDone, key: str
) -> None:
    """The warm (restored) turn reused its history and replied as a fresh prefill does."""
    _, cold = await collect(alone, greedy(turn2, key=key))
    assert warm.timings["reused_tokens"] >= len(turn2) - 40  # the history was not recomputed
    assert warm.text == cold.text and warm.completion_tokens > 0


@pytest.mark.parametrize("split", [False, True], ids=["unified", "split"])
async def test_restored_session_replies_as_after_a_fresh_prefill(
    alone: BatchedEngine, split: bool
) -> None:
    tiers = KvTiers(host_bytes=256 * 2**20)
    engine = small_engine(tiers, split=split)
    try:
        turn2 = await first_turn(engine)
        await evict_with_fillers(engine)
        left = engine.stats()["kv_evictions"] + engine.stats()["kv_sheds"]
        assert left >= 1 and tiers.tokens("pets") is not None
        _, warm = await collect(engine, greedy(turn2, key="pets"))
        stats = engine.stats()
    finally:
        engine.close()
    assert stats["kv_restores"] == 1 and stats["kv_restore_failures"] == 0
    assert stats["kv_restored_tokens"] == warm.timings["reused_tokens"]
    await assert_replies_as_fresh_prefill(alone, turn2, warm, f"cold-pets-{split}")


async def test_disk_tier_restores_after_a_restart(tmp_path: Path, alone: BatchedEngine) -> None:
    """No host RAM: the state is written to disk; a new engine (a restart) restores it."""
    engine = small_engine(KvTiers(0, tmp_path, 256 * 2**20))
    try:
        turn2 = await first_turn(engine)
        await evict_with_fillers(engine)
    finally:
        engine.close()  # waits for the writes
    written = len(list(tmp_path.glob("*.kv")))
    assert written >= 1, "the evicted session was not written to disk"
    restarted = small_engine(KvTiers(0, tmp_path, 256 * 2**20))
    try:
        _, warm = await collect(restarted, greedy(turn2, key="pets"))
        stats = restarted.stats()
    finally:
        restarted.close()
    _, cold = await collect(alone, greedy(turn2, key="cold-pets-2"))
    assert stats["kv_restores_disk"] == 1 and stats["prompt_tokens"] < len(turn2) / 2
    assert warm.text == cold.text
    assert len(list(tmp_path.glob("*.kv"))) == written - 1  # taken: it lives in the cells again


async def test_a_state_is_restored_only_for_a_matching_prefix() -> None:
    tiers = KvTiers(host_bytes=256 * 2**20)
    engine = small_engine(tiers)
    try:
        await first_turn(engine)
        await evict_with_fillers(engine)
        other = chat_prompt(engine, "A different first message entirely.", "ok", SECOND)
        _, done = await collect(engine, greedy(other, key="pets", max_tokens=4))
        stats = engine.stats()
    finally:
        engine.close()
    assert stats["kv_restores"] == 0  # only the persona matches: a shared prefix, not a restore
    assert done.completion_tokens > 0 and tiers.tokens("pets") is None  # the stale state is gone


def test_host_budget_spills_the_oldest_to_disk_and_the_disk_drops_the_oldest(
    tmp_path: Path,
) -> None:
    tiers = KvTiers(host_bytes=100, disk_dir=tmp_path, disk_bytes=150)
    tokens = list(range(20))
    for key in "abcd":  # 60 bytes each: one fits in RAM, two on disk
        tiers.put(key, tokens, bytearray(key.encode() * 60))
    tiers.close()  # the spilled states are written
    stats = tiers.stats()
    assert (stats["host_sessions"], stats["disk_sessions"], stats["disk_drops"]) == (1, 2, 1)
    assert tiers.tokens("a") is None and len(list(tmp_path.glob("*.kv"))) == 2
    taken = tiers.take("b")
    assert taken is not None and taken[1] == bytearray(b"b" * 60) and taken[2] == "disk"
    assert list(taken[0]) == tokens and tiers.take("b") is None
    reopened = KvTiers(host_bytes=100, disk_dir=tmp_path, disk_bytes=150)
    assert reopened.tokens("c") is not None and reopened.tokens("d") is None  # "d" is in RAM
    reopened.close()


async def test_idle_sessions_leave_the_cells_while_others_decode(alone: BatchedEngine) -> None:
    """A session idle while others decode waits in host RAM, not in the cells (every cell in
    use widens what each token attends over); its next turn restores it and replies as after
    a fresh prefill. Alone, a session keeps its cells; a request without a session key has
    its cells dropped, not saved (it has no next turn)."""
    tiers = KvTiers(host_bytes=256 * 2**20)
    engine = small_engine(tiers, kv_tokens=4096)  # room for all: nothing evicted for room
    try:
        turn2 = await first_turn(engine)
        assert tiers.tokens("pets") is None and engine.stats()["kv_sheds"] == 0  # alone: stays
        eos = llama_cpp.llama_vocab_eos(engine.vocab)
        long = greedy(chat_prompt(engine, "Tell me a long story about a lighthouse."), 32,
                      key="long", logit_bias=((eos, -100.0),))  # fmt: skip
        anon = greedy(chat_prompt(engine, "Hi!"), 2)
        extract = greedy(chat_prompt(engine, "Facts: none."), 2, key=EXTRACTION_KEY)
        (_, story), *_ = await asyncio.gather(
            collect(engine, long), collect(engine, anon), collect(engine, extract)
        )
        assert story.completion_tokens == 32  # it decoded on after the others ended
        assert tiers.tokens("pets") is not None and engine.stats()["kv_sheds"] == 3
        assert tiers.tokens(EXTRACTION_KEY) is not None  # its fixed head is not computed again
        assert tiers.stats()["host_sessions"] == 2  # not the anonymous request's
        _, warm = await collect(engine, greedy(turn2, key="pets"))
        stats = engine.stats()
    finally:
        engine.close()
    assert stats["kv_evictions"] == 0 and stats["kv_restores"] == 1
    await assert_replies_as_fresh_prefill(alone, turn2, warm, "cold-pets-3")


async def test_another_sessions_saved_state_is_a_donor(alone: BatchedEngine) -> None:
    """The same conversation under another key (the chat API's session, then the OpenAI API's
    "oa-..." key) restores from the saved state that shares its prefix, as it would copy a
    resident sequence's; that state stays saved for its own session."""
    tiers = KvTiers(host_bytes=256 * 2**20)
    engine = small_engine(tiers, kv_tokens=4096)
    try:
        turn2 = await first_turn(engine)
        await evict_with_fillers(engine, 2)  # "pets" waits in host RAM
        assert tiers.tokens("pets") is not None
        _, warm = await collect(engine, greedy(turn2, key="oa-pets"))
        stats = engine.stats()
    finally:
        engine.close()
    assert stats["kv_restores"] == 1 and stats["kv_restores_shared"] == 1
    assert tiers.tokens("pets") is not None  # copied, not taken
    await assert_replies_as_fresh_prefill(alone, turn2, warm, "cold-pets-4")


def test_best_prefix_prefers_the_longest_then_the_own_state() -> None:
    tiers = KvTiers(host_bytes=2**20)
    base = list(range(100, 140))
    tiers.put("own", base[:20], bytearray(b"o"))
    tiers.put("longer", base[:30] + [7, 7], bytearray(b"l"))
    tiers.put("same", base[:20] + [9], bytearray(b"s"))
    tiers.put("other", [1] * 40, bytearray(b"x"))
    assert tiers.best_prefix(base, "own") == ("longer", 30)
    assert tiers.best_prefix(base[:20], "own") == ("own", 20)  # a tie: its own state
    assert tiers.best_prefix(base[:25], "nobody", floor=25) == ("", 25)
    assert tiers.best_prefix([5] + base, "own") == ("", 0)


async def test_the_next_request_takes_the_id_a_finished_turn_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Split streams: llama.cpp decodes a step in one ubatch per run of consecutive sequence
    ids, so a finished turn leaves its id (its state goes to host RAM) before the next request
    is admitted, which takes it: every step's ids stay one run."""
    steps: list[list[int]] = []
    decode = llama_cpp.llama_decode

    def spy(ctx: object, batch: llama_cpp.llama_batch) -> int:
        steps.append(sorted({batch.seq_id[i][0] for i in range(batch.n_tokens)}))
        return decode(ctx, batch)

    monkeypatch.setattr(llama_cpp, "llama_decode", spy)
    engine = small_engine(KvTiers(host_bytes=256 * 2**20), split=True)
    try:
        eos = llama_cpp.llama_vocab_eos(engine.vocab)
        long = greedy(chat_prompt(engine, "Tell me a long story about a lighthouse."), 96,
                      key="long", logit_bias=((eos, -100.0),))  # fmt: skip
        stream = engine.generate(long)
        await anext(stream)  # decoding on id 0
        short = greedy(chat_prompt(engine, "Hi!"), 2, key="short")  # id 1, then ends
        after = greedy(chat_prompt(engine, "Name a colour."), 4, key="after")  # waits for it
        await asyncio.gather(collect(engine, short), collect(engine, after))
        rest = [event async for event in stream]
    finally:
        engine.close()
    assert isinstance(rest[-1], GenerationDone) and rest[-1].completion_tokens == 96
    assert engine.stats()["kv_sheds"] >= 1
    assert all(ids == list(range(ids[0], ids[0] + len(ids))) for ids in steps), steps
