"""LLM extraction: the JSON parser on hand-written answers, and the real tiny model held to the
GBNF grammar (parses every time; a truncated answer is counted and logged, the rules' facts kept;
"off" and "auto" with the tiny model make no call)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from companion.domain import GenerationOptions
from companion.embed import Embedder
from companion.errors import GenerationError
from companion.llm.base import GenerationDone, GenerationRequest
from companion.llm.batched import BatchedEngine
from companion.memory import MemoryService
from companion.memory.base import Candidate
from companion.memory.llm_extract import (
    GRAMMAR,
    MAX_FACTS,
    TOPICS,
    ExtractionFailed,
    LlmFact,
    extraction_prompt,
    generate_facts,
    model_can_extract,
    new_facts,
    parse_facts,
)
from companion.personal import Personal, open_personal
from companion.runtime import open_runtime
from companion.storage import Store
from tests.conftest import make_settings
from tests.engine.conftest import make_engine

# --- the parser, on hand-written answers -----------------------------------------------------


def _answer(*facts: dict[str, object]) -> str:
    return json.dumps({"facts": list(facts)})


def test_a_valid_answer_gives_its_facts_once_each_without_blanks() -> None:
    text = _answer(
        {"text": "Has a dog named Rex.", "topic": "pets", "importance": 0.8},
        {"text": "has a dog  named rex", "topic": "pets", "importance": 0.5},  # the same again
        {"text": "   ", "topic": "hobbies", "importance": 0.2},  # blank: nothing to keep
        {"text": "Works as a nurse", "topic": "work", "importance": 1},
    )
    assert parse_facts(text) == [LlmFact("Has a dog named Rex", "pets", 0.8),
                                 LlmFact("Works as a nurse", "work", 1.0)]
    assert parse_facts('{"facts": []}') == []
    fact = parse_facts(text)[0].candidate()
    assert (fact.kind, fact.topics, fact.slot, fact.importance) == ("profile", ("pets",), None, 0.8)


@pytest.mark.parametrize(
    ("text", "finish", "why"),
    [
        ('{"facts": [{"text": "Has a d', "length", "truncated"),
        ('{"facts": [{"text": "Has a dog"', "stop", "not JSON"),
        ("Sure! Here are the facts:", "stop", "not JSON"),
        ('{"memories": []}', "stop", 'not {"facts"'),
        ('{"facts": [], "extra": 1}', "stop", 'not {"facts"'),
        ('{"facts": ["Has a dog"]}', "stop", "not {text, topic, importance}"),
        (_answer({"text": "Has a dog", "topic": "animals", "importance": 0.5}), "stop",
         "unknown topic 'animals'"),
        (_answer({"text": "Has a dog", "topic": "pets", "importance": 1.5}), "stop",
         "importance 1.5"),
        (_answer({"text": "Has a dog", "topic": "pets", "importance": True}), "stop",
         "importance True"),
        (_answer(*[{"text": f"Fact {i}", "topic": "pets", "importance": 0.1}
                   for i in range(MAX_FACTS + 1)]), "stop", "more than"),
    ],
)
def test_an_unusable_answer_is_a_failure_that_says_why(text: str, finish: str, why: str) -> None:
    with pytest.raises(ExtractionFailed, match=why.replace("{", r"\{").replace("[", r"\[")):
        parse_facts(text, finish)


def test_auto_is_on_only_for_base_and_larger() -> None:
    assert [s for s in ("tiny", "base", "small", "medium", "large", "custom")
            if model_can_extract(s)] == ["base", "small", "medium", "large"]


def test_a_fact_a_rule_already_found_is_not_stored_twice(embedder: Embedder) -> None:
    rules = [Candidate("Lives in Lyon", "profile", slot="home"),
             Candidate("Likes hiking", "preference", slot="likes:hiking")]
    facts = [LlmFact("lives in Lyon", "home", 0.7), LlmFact("Likes hiking", "hobbies", 0.5),
             LlmFact("Has two cats", "pets", 0.6)]
    kept, repeated = new_facts(rules, facts, embedder)
    assert kept == [LlmFact("Has two cats", "pets", 0.6)] and repeated == 2
    assert new_facts([], facts, embedder) == (facts, 0)


# --- the real tiny model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> Iterator[BatchedEngine]:
    eng = make_engine(parallel=2, max_queue=8, n_batch=256)
    yield eng
    eng.close()


def _generations(engine: BatchedEngine) -> float:
    return engine.stats()["generations"]


async def test_the_grammar_holds_the_tiny_model_to_json_of_the_schema(
    engine: BatchedEngine,
) -> None:
    messages = [
        "My name is Ana and I live in Lyon with my two cats.",
        "What's the weather like on Mars?",
        "We went to the beach yesterday and the kids had a blast.",
    ]
    for message in messages:
        facts, done = await generate_facts(engine, message)
        assert done.finish_reason == "stop", done.text
        data = json.loads(done.text)  # the raw output, not only what parse_facts kept
        assert list(data) == ["facts"] and len(data["facts"]) <= MAX_FACTS
        for fact in data["facts"]:
            assert list(fact) == ["text", "topic", "importance"]
            assert isinstance(fact["text"], str) and fact["topic"] in TOPICS
            assert 0 <= fact["importance"] <= 1
        assert all(f.topic in TOPICS for f in facts)


async def test_a_grammar_llama_cpp_cannot_parse_is_refused_alone(engine: BatchedEngine) -> None:
    prompt = engine.tokenize("Hello")
    bad = GenerationRequest(prompt, GenerationOptions(max_tokens=4, temperature=0.0),
                            grammar='root ::= "a" | (')
    with pytest.raises(GenerationError, match="not valid GBNF"):
        async for _ in engine.generate(bad):
            pass
    fine = GenerationRequest(prompt, GenerationOptions(max_tokens=40, temperature=0.0),
                             grammar=GRAMMAR)
    events = [e async for e in engine.generate(fine)]
    assert isinstance(events[-1], GenerationDone) and events[-1].text.startswith("{")


def _personal(tmp_path: Path, store: Store, embedder: Embedder, engine: BatchedEngine,
              mode: str) -> Personal:
    settings = make_settings(tmp_path / "data", memory_llm_extraction=mode)
    personal = open_personal(settings, store, embedder)
    personal.use_engine(lambda: engine)
    return personal


def _turn(personal: Personal, store: Store, text: str) -> int:
    """One user turn through after_turn, as the chat service runs it; its message id."""
    session = store.create_session("ana")
    message = store.add_message(session.id, "user", text)
    notes = personal.prepare("ana", session.id, text)
    personal.after_turn("ana", session.id, text, message.id, notes)
    return message.id


def test_a_truncated_answer_is_counted_and_logged_and_the_rules_facts_are_kept(
    tmp_path: Path, store: Store, embedder: Embedder, engine: BatchedEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    personal = _personal(tmp_path, store, embedder, engine, "on")
    assert personal.extractor is not None
    personal.extractor.max_tokens = 6  # cut off inside the JSON
    with caplog.at_level(logging.WARNING, logger="companion.memory.llm"):
        _turn(personal, store, "My name is Ana and I live in Lyon.")
        assert personal.extractor.wait_idle(300)
    stats = personal.stats()
    assert (stats["llm_extract_calls"], stats["llm_extract_failures"]) == (1, 1)
    assert stats["llm_extract_facts"] == 0 and stats["llm_extract_ms_p50"] > 0
    assert any("truncated at the token cap" in r.getMessage() and "rules' facts are kept"
               in r.getMessage() for r in caplog.records)
    assert personal.memory is not None
    assert {m.text for m in personal.memory.memories("ana")} == {"Name is Ana", "Lives in Lyon"}
    personal.close()


def test_the_models_facts_are_reconciled_each_one_accounted_for(
    tmp_path: Path, store: Store, embedder: Embedder, engine: BatchedEngine,
) -> None:
    personal = _personal(tmp_path, store, embedder, engine, "on")
    assert personal.extractor is not None and personal.memory is not None
    message_id = _turn(personal, store, "I work as a nurse and I love hiking on weekends.")
    rule_rows = len(personal.memory.history("ana"))  # the rules' changes, written at once
    assert personal.extractor.wait_idle(300)
    stats = personal.stats()
    assert (stats["llm_extract_calls"], stats["llm_extract_failures"]) == (1, 0)
    assert stats["llm_extract_facts"] >= 1  # the tiny model always says something here
    history = personal.memory.history("ana")
    model_rows = len(history) - rule_rows
    # every fact the model gave is a history row (ADD / NONE ...) or a counted duplicate
    assert stats["llm_extract_facts"] == model_rows + stats.get("llm_extract_duplicates", 0)
    assert all(row["message_id"] == message_id for row in history)
    personal.close()


@pytest.mark.parametrize("mode", ["off", "auto"])  # auto: the tiny model is too weak
def test_off_and_auto_with_the_tiny_model_make_no_model_call(
    mode: str, tmp_path: Path, store: Store, embedder: Embedder, engine: BatchedEngine,
) -> None:
    personal = _personal(tmp_path, store, embedder, engine, mode)
    assert personal.extractor is not None
    before = _generations(engine)
    _turn(personal, store, "My name is Ana and I live in Lyon.")
    assert personal.extractor.wait_idle(5)
    assert _generations(engine) == before
    assert personal.stats()["llm_extract_calls"] == 0
    assert personal.memory is not None and len(personal.memory.memories("ana")) == 2
    personal.close()


def test_two_facts_of_one_batch_on_the_same_memory_are_reconciled(memory: MemoryService) -> None:
    # a model often says a fact twice in other words: the second is NONE on the memory the
    # first just added (both index updates in one batch must not collide)
    facts = [LlmFact("Likes hiking", "hobbies", 0.5).candidate(),
             LlmFact("likes hiking!", "hobbies", 0.6).candidate()]
    changes = memory.reconcile_candidates("ana", facts, None)
    assert [c.event for c in changes] == ["ADD", "NONE"]
    assert changes[0].memory_id == changes[1].memory_id
    assert [m.text for m in memory.memories("ana")] == ["Likes hiking"]


def test_a_turn_asking_to_forget_is_left_to_the_rules(
    tmp_path: Path, store: Store, embedder: Embedder, engine: BatchedEngine,
) -> None:
    personal = _personal(tmp_path, store, embedder, engine, "on")
    assert personal.extractor is not None and personal.memory is not None
    personal.memory.add("ana", "Likes jazz")
    before = _generations(engine)
    _turn(personal, store, "Forget that I like jazz.")
    assert personal.extractor.wait_idle(5)
    assert _generations(engine) == before and personal.stats()["llm_extract_calls"] == 0
    assert personal.memory.memories("ana") == []
    personal.close()


def test_a_long_message_is_cut_so_prompt_and_answer_fit_the_context(
    engine: BatchedEngine,
) -> None:
    head = len(extraction_prompt(engine, ""))
    long = "I like hiking in the mountains with my dog. " * 60  # 2640 characters
    full = extraction_prompt(engine, long, max_tokens=100)
    cut = extraction_prompt(engine, long, max_tokens=700)
    assert len(cut) + 700 <= engine.info.context_length < len(full) + 700
    assert head + 100 < len(cut) < len(full)


async def test_a_chat_turn_gets_its_model_facts_after_the_reply(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", memory_llm_extraction="on")
    runtime = open_runtime(settings)
    try:
        companion = runtime.companion
        assert companion.personal is not None
        companion.personal.use_engine(lambda: companion.engine)  # the runtime's wiring
        extractor = companion.personal.extractor
        assert extractor is not None
        result = await companion.chat("ana", "I work as a nurse and I love hiking.", max_tokens=8)
        assert result.response  # the reply came first; the extraction was only queued
        assert await asyncio.to_thread(extractor.wait_idle, 300)
        stats = companion.get_performance_stats()["memory"]
        assert (stats["llm_extract_calls"], stats["llm_extract_failures"]) == (1, 0)
        assert stats["llm_extract_ms_p50"] > 0
        texts = {m.text for m in companion.personal.memory.memories("ana")}  # type: ignore[union-attr]
        assert {"Works as a nurse", "Likes hiking"} <= texts
    finally:
        runtime.close()
