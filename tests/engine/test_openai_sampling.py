"""The sampler-chain additions OpenAI's parameters need, with the real tiny model:
presence/frequency penalties, logit bias and per-token log-probabilities."""

from __future__ import annotations

import json
import math

from companion.llm.batched import BatchedEngine
from tests.engine.conftest import chat_prompt, collect, greedy

ASK = "List the days of the week, then list them again."


async def test_logprobs_are_reported_per_token_with_alternatives(engine: BatchedEngine) -> None:
    request = greedy(chat_prompt(engine, ASK), max_tokens=8)
    request.logprobs = 3
    pieces, done = await collect(engine, request)
    assert done.logprobs is not None and len(done.logprobs) == done.completion_tokens
    for entry in done.logprobs:
        assert entry.logprob <= 0 and len(entry.top) == 3
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token
        best = entry.top[0]
        # greedy: the chosen token is the most likely one, and the alternatives are sorted
        assert math.isclose(best[2], entry.logprob, abs_tol=1e-6)
        assert [t[2] for t in entry.top] == sorted((t[2] for t in entry.top), reverse=True)
    assert "".join(e.token for e in done.logprobs).startswith("".join(pieces)[:4])
    plain = await collect(engine, greedy(chat_prompt(engine, ASK), max_tokens=8))
    assert plain[1].logprobs is None and plain[1].text == done.text


async def test_penalties_and_logit_bias_change_the_greedy_text(engine: BatchedEngine) -> None:
    prompt = chat_prompt(engine, ASK)
    base = (await collect(engine, greedy(prompt, max_tokens=40, repeat_penalty=1.0)))[1]
    freq = await collect(
        engine, greedy(prompt, max_tokens=40, repeat_penalty=1.0, frequency_penalty=2.0)
    )
    pres = await collect(
        engine, greedy(prompt, max_tokens=40, repeat_penalty=1.0, presence_penalty=2.0)
    )
    assert freq[1].text != base.text and pres[1].text != base.text
    first = engine.tokenize(base.text)[0]
    banned = await collect(
        engine, greedy(prompt, max_tokens=4, repeat_penalty=1.0, logit_bias=((first, -100.0),))
    )
    assert engine.tokenize(banned[1].text)[0] != first


async def test_a_grammar_holds_the_reply_with_logprobs(engine: BatchedEngine) -> None:
    """A grammar-held reply parses; logprobs are reported for it like any other."""
    prompt = chat_prompt(engine, "Describe a cat as JSON with a name and an age.")
    grammar = (
        'root ::= "{" space "\\"name\\": \\"" [a-zA-Z ]{1,12} "\\", \\"age\\": " [0-9]{1,2} "}"\n'
        'space ::= " "?'
    )
    request = greedy(prompt, max_tokens=40, repeat_penalty=1.0)
    request.grammar = grammar
    _, done = await collect(engine, request)
    doc = json.loads(done.text)
    assert set(doc) == {"name", "age"} and done.finish_reason == "stop"
    # the first token is the only one the grammar allows: "{"
    request = greedy(prompt, max_tokens=40, repeat_penalty=1.0)
    request.grammar, request.logprobs = grammar, 0
    again = await collect(engine, request)
    assert again[1].text == done.text and again[1].logprobs[0].token == "{"
