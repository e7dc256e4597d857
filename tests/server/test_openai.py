"""The official OpenAI Python client against a real running server with the real model.

Each test is a separate companion user, so one server serves the module. Replies are short
(max_tokens) and greedy where a test reads them.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

OFF = {"companion": {"memory": False, "persona": False}}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather now in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}


def client_for(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=900)


def ask(client: openai.OpenAI, messages: list[dict[str, Any]], **params: Any) -> Any:
    params.setdefault("max_tokens", 8)
    params.setdefault("temperature", 0)
    return client.chat.completions.create(model="companion", messages=messages, **params)


def test_chat_completion_models_and_stream(module_server: str) -> None:
    client = client_for(module_server)
    models = client.models.list()
    assert any(m.id.startswith("SmolLM2") for m in models.data)
    assert client.models.retrieve("tiny").id == "tiny"
    done = ask(client, [{"role": "user", "content": "Hello! Who are you?"}], user="olga")
    assert done.choices[0].message.content and done.choices[0].message.role == "assistant"
    assert 0 < done.usage.completion_tokens <= 8
    pieces, usage = [], None
    for chunk in ask(
        client,
        [{"role": "user", "content": "Tell me a joke."}],
        stream=True,
        stream_options={"include_usage": True},
        user="olga",
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            assert chunk.choices == []  # the usage chunk comes last, with no choices
            usage = chunk.usage
    assert len(pieces) >= 2 and usage is not None and usage.completion_tokens == 8
    sessions = httpx.get(f"{module_server}/api/v1/sessions", params={"user_id": "olga"}).json()
    assert len(sessions) == 2  # two conversations


def test_history_and_system_prompt_are_the_clients(module_server: str) -> None:
    """A fact given only in the client's history or system prompt reaches the model; the
    conversation is exactly what was sent (nothing is kept from an earlier request)."""
    client = client_for(module_server)
    question = {"role": "user", "content": "What is my cat called?"}
    history = [
        {"role": "user", "content": "My cat is called Miso."},
        {"role": "assistant", "content": "What a lovely name!"},
    ]
    told = ask(client, [*history, question], max_tokens=10, user="hana", extra_body=OFF)
    assert "Miso" in (told.choices[0].message.content or "")
    bare = ask(client, [question], max_tokens=10, user="hana", extra_body=OFF)
    assert "Miso" not in (bare.choices[0].message.content or "")  # nothing kept server-side
    system = {"role": "system", "content": "The user's cat is called Miso."}
    by_system = ask(client, [system, question], max_tokens=10, user="hana", extra_body=OFF)
    assert "Miso" in (by_system.choices[0].message.content or "")
    # the same conversation sent again costs the same prompt: no duplicated turns pile up
    again = ask(client, [*history, question], max_tokens=10, user="hana", extra_body=OFF)
    assert again.usage.prompt_tokens == told.usage.prompt_tokens
    assert again.choices[0].message.content == told.choices[0].message.content


def test_follow_up_is_kept_in_one_session_and_learned_once(module_server: str) -> None:
    client = client_for(module_server)
    first = [{"role": "user", "content": "My dog is called Rex."}]
    reply = ask(client, first, user="pia")
    resent = ask(client, first, user="pia")  # a regenerate: same request again
    raw = [r.model_extra["companion"] for r in (reply, resent)]  # type: ignore[index]
    assert raw[0]["learned"] is True and raw[1]["learned"] is False
    assert raw[0]["session_id"] == raw[1]["session_id"]
    follow = first + [
        {"role": "assistant", "content": reply.choices[0].message.content or ""},
        {"role": "user", "content": "What is my dog called?"},
    ]
    ask(client, follow, user="pia")
    sessions = httpx.get(f"{module_server}/api/v1/sessions", params={"user_id": "pia"}).json()
    assert [s["id"] for s in sessions] == [raw[0]["session_id"]]
    memories = httpx.get(f"{module_server}/api/v1/users/pia/memories").json()
    texts = [m["text"] for m in memories.get("memories", memories)]
    assert sum("Rex" in t for t in texts) == 1, texts
    # memory off: nothing learned from this turn
    quiet = ask(client, [{"role": "user", "content": "My bird is called Kiwi."}], user="pia",
                extra_body={"companion": {"memory": False}})  # fmt: skip
    assert quiet.model_extra["companion"]["learned"] is False  # type: ignore[index]
    memories = httpx.get(f"{module_server}/api/v1/users/pia/memories").json()
    assert not any("Kiwi" in m["text"] for m in memories.get("memories", memories))


def test_memory_notes_stay_put_and_never_repeat_the_conversation(module_server: str) -> None:
    """Issue 12: what the memory adds to a client's conversation is the same block at every
    turn (recalled for the turn it came up in, and kept there), so each call reuses the whole
    previous prompt; the conversation's own turns and the facts learned from them are never
    recalled into it (the client sends them already)."""
    client = client_for(module_server)
    earlier = [{"role": "user", "content": "My sister Ana lives in Porto and loves sailing."}]
    ask(client, earlier, user="lena")  # another conversation: the memory learns from it
    lines = ["Can you remind me about my sister?", "I play the cello in an orchestra.",
             "Which instrument do I play?"]  # fmt: skip
    replies = ["Of course!", "How wonderful!"]
    conversation = []
    for i, line in enumerate(lines):
        messages: list[dict[str, Any]] = []
        for j in range(i):
            messages += [{"role": "user", "content": lines[j]},
                         {"role": "assistant", "content": replies[j]}]  # fmt: skip
        conversation.append([*messages, {"role": "user", "content": line}])
    on = [ask(client, m, user="lena", max_tokens=4) for m in conversation]
    off = [ask(client, m, user="lena-x", max_tokens=4, extra_body={"companion": {"memory": False}})
           for m in conversation]  # fmt: skip
    added = [a.usage.prompt_tokens - b.usage.prompt_tokens for a, b in zip(on, off, strict=True)]
    assert added[0] > 20, added  # the sister, recalled from the other conversation
    # the same notes at every turn: neither this conversation's turns (lines[0], lines[1])
    # nor the fact learned from lines[1] (the cello) come back as notes
    assert added == [added[0]] * 3, added
    memories = httpx.get(f"{module_server}/api/v1/users/lena/memories").json()
    assert any("cello" in m["text"] for m in memories.get("memories", memories))
    for before, now in zip(on, on[1:], strict=False):  # the previous prompt is reused whole
        reused = now.usage.prompt_tokens_details.cached_tokens
        assert reused >= before.usage.prompt_tokens - 1, (reused, before.usage.prompt_tokens)


def test_two_conversations_with_the_same_opening_stay_apart(module_server: str) -> None:
    """Issue 11 finding 8: the second conversation never sees the first one's facts."""
    client = client_for(module_server)
    opening = {"role": "user", "content": "Hi there!"}
    a = ask(client, [opening], user="ines", extra_body=OFF)
    secret = [opening, {"role": "assistant", "content": a.choices[0].message.content or ""},
              {"role": "user", "content": "My locker code is 4471."}]  # fmt: skip
    ask(client, secret, user="ines", extra_body=OFF)
    b = [opening, {"role": "assistant", "content": "Hello!"},
         {"role": "user", "content": "What is my locker code?"}]  # fmt: skip
    seen = ask(client, b, user="ines", extra_body=OFF, max_tokens=12)
    fresh = ask(client, b, user="ines-twin", extra_body=OFF, max_tokens=12)
    assert seen.usage.prompt_tokens == fresh.usage.prompt_tokens  # nothing of A in B's prompt
    assert "4471" not in (seen.choices[0].message.content or "")


def test_session_mode_keeps_the_history_on_the_server(module_server: str) -> None:
    client = client_for(module_server)
    headers = {"X-Session-Id": "kept-1"}
    ask(client, [{"role": "user", "content": "My cat is called Miso."}], user="kai",
        extra_headers=headers, extra_body=OFF)  # fmt: skip
    only_last = [{"role": "user", "content": "What is my cat called?"}]
    done = ask(client, only_last, user="kai", extra_headers=headers, extra_body=OFF, max_tokens=10)
    assert done.model_extra["companion"]["session_id"] == "kept-1"  # type: ignore[index]
    assert "Miso" in (done.choices[0].message.content or "")
    msgs = httpx.get(f"{module_server}/api/v1/sessions/kept-1/messages").json()["messages"]
    assert len(msgs) == 4


def test_one_session_through_both_apis_reuses_the_whole_prompt(module_server: str) -> None:
    """A session continued through the other API (the OpenAI API in session mode, then the
    chat API again) builds the same prompt, notes blocks in place: each turn reuses the whole
    previous prompt instead of computing the earlier turns again."""
    client = client_for(module_server)

    def chat(message: str, session: str | None = None) -> dict[str, Any]:
        body = {"message": message, "user_id": "rosa", "session_id": session, "max_tokens": 6,
                "temperature": 0.0}  # fmt: skip
        reply = httpx.post(f"{module_server}/api/v1/chat", json=body, timeout=300)
        assert reply.status_code == 200, reply.text
        return reply.json()

    chat("My brother Leo lives in Oslo and builds wooden boats.")  # another conversation
    first = chat("Where does my brother live?")
    assert any("Oslo" in m["text"] for m in first["memories_used"])  # a notes block went in
    session = first["session_id"]
    asked = [{"role": "user", "content": "What does he build?"}]
    second = ask(client, asked, user="rosa", extra_headers={"X-Session-Id": session},
                 max_tokens=6, temperature=0.0)  # fmt: skip
    reused = second.usage.prompt_tokens_details.cached_tokens
    assert reused >= first["usage"]["prompt_tokens"], (reused, first["usage"])
    third = chat("Is he older than me?", session)
    assert third["timings"]["reused_tokens"] >= second.usage.prompt_tokens, (third, second.usage)


@pytest.mark.timeout(900)  # grammar-held generations are slow on a busy shared machine
def test_tool_calls_hold_to_the_function_schema(module_server: str) -> None:
    client = client_for(module_server)
    asks = [{"role": "user", "content": "What is the weather in Paris?"}]
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        done = ask(client, asks, tools=[WEATHER], tool_choice=choice, max_tokens=36, user="tom")
        assert done.choices[0].finish_reason == "tool_calls"
        call = done.choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather"
        jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    # streamed: the call arrives as a tool_calls delta
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in ask(client, asks, tools=[WEATHER], tool_choice="required", max_tokens=36,
                     stream=True, user="tom"):  # fmt: skip
        for delta in chunk.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(delta.index, {"name": "", "arguments": ""})
            entry["name"] += delta.function.name or ""
            entry["arguments"] += delta.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and calls[0]["name"] == "get_weather"
    jsonschema.validate(json.loads(calls[0]["arguments"]), WEATHER["function"]["parameters"])
    # the tool's answer goes back as a `tool` message and the model replies in text
    history = [*asks, done.choices[0].message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'}]  # fmt: skip
    answer = ask(client, history, tools=[WEATHER], tool_choice="none", user="tom")
    assert answer.choices[0].message.content and answer.choices[0].finish_reason != "tool_calls"


class Pet(BaseModel):
    name: str
    species: str
    age: int


@pytest.mark.timeout(900)
def test_structured_outputs_parse_into_the_schema(module_server: str) -> None:
    client = client_for(module_server)
    asks = [{"role": "user", "content": "Describe a pet as JSON: Miso, a cat, 3 years old."}]
    parsed = client.chat.completions.parse(
        model="companion", messages=asks, response_format=Pet, max_tokens=60, temperature=0,
        user="ada",
    )  # fmt: skip
    assert isinstance(parsed.choices[0].message.parsed, Pet)
    short = [{"role": "user", "content": "Give my cat's name (Miso) as a JSON object."}]
    loose = ask(client, short, response_format={"type": "json_object"}, max_tokens=60, user="ada")
    assert loose.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(loose.choices[0].message.content or ""), dict)


class Rating(BaseModel):
    sentiment: Literal["positive", "neutral", "negative"]
    confidence: float = Field(ge=0, le=1)


@pytest.mark.timeout(900)
def test_a_bounded_number_stays_within_its_bounds(module_server: str) -> None:
    client = client_for(module_server)
    asks = [{"role": "user", "content": "Sentiment of: 'I love this new phone!' Confidence 0-10?"}]
    for seed in range(6):  # sampled: the grammar, not the model's judgement, keeps it in range
        parsed = client.chat.completions.parse(
            model="companion", messages=asks, response_format=Rating, max_tokens=40,
            temperature=1.0, seed=seed, user="rae", extra_body={"companion": {"memory": False}},
        )  # fmt: skip
        rating = parsed.choices[0].message.parsed
        assert isinstance(rating, Rating) and 0 <= rating.confidence <= 1


@pytest.mark.timeout(900)
def test_n_logprobs_seed_and_stop(module_server: str) -> None:
    client = client_for(module_server)
    asks = [{"role": "user", "content": "Say something nice."}]
    off = {"companion": {"memory": False}}  # the same prompt each time (no episodic recall)
    two = ask(client, asks, n=2, temperature=1.0, seed=7, logprobs=True, top_logprobs=2,
              user="lea", extra_body=off)  # fmt: skip
    assert [c.index for c in two.choices] == [0, 1]
    assert two.usage.completion_tokens == sum(len(c.logprobs.content) for c in two.choices)
    for entry in two.choices[0].logprobs.content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 2
    again = ask(client, asks, n=2, temperature=1.0, seed=7, user="lea", extra_body=off)
    assert [c.message.content for c in again.choices] == [c.message.content for c in two.choices]
    text = two.choices[0].message.content or ""
    stop = text.split()[1] if len(text.split()) > 1 else text[-2:]
    stopped = ask(
        client, asks, n=2, temperature=1.0, seed=7, stop=[stop], user="lea", extra_body=off
    )
    assert stop not in (stopped.choices[0].message.content or "")


@pytest.mark.timeout(900)
def test_cache_follows_openai_semantics(module_server: str) -> None:
    client = client_for(module_server)
    asks = [{"role": "user", "content": "What is the capital of France?"}]

    def cached(**params: Any) -> bool:  # memory off: episodic recall would change the prompt
        params.setdefault("extra_body", {"companion": {"memory": False}})
        done = ask(client, asks, user="max", **params)
        return bool(done.model_extra["companion"]["cached"])  # type: ignore[index]

    assert not cached() and cached()  # the same messages and options: served from the cache
    assert not cached(max_tokens=9)  # other sampling options: another entry
    assert not cached(extra_headers={"Cache-Control": "no-cache"})
    assert not cached(extra_body={"companion": {"cache": False, "memory": False}})
    joke = [{"role": "user", "content": "Tell me a joke about cats."}]
    for _ in range(2):  # creative and sampled: never served from the cache
        done = ask(client, joke, temperature=0.9, user="max")
        assert done.model_extra["companion"]["cached"] is False  # type: ignore[index]


async def test_async_client_streams(module_server: str) -> None:
    client = openai.AsyncOpenAI(base_url=f"{module_server}/v1", api_key="unused", timeout=300)
    stream = await client.chat.completions.create(
        model="companion", messages=[{"role": "user", "content": "Hello!"}], max_tokens=6,
        stream=True, user="zoe",
    )  # fmt: skip
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text
    await client.close()


def test_errors_come_in_openai_shape(module_server: str) -> None:
    client = client_for(module_server)
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="companion", messages=[], max_tokens=4)
    assert bad.value.body["param"] == "messages"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, [{"role": "user", "content": "hi"}], reasoning_effort="low")
    assert refused.value.body["param"] == "reasoning_effort"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")
    with pytest.raises(openai.BadRequestError) as last:  # OpenAI's status for it: 400
        client.chat.completions.create(
            model="companion", messages=[{"role": "assistant", "content": "hi"}], max_tokens=4
        )
    assert last.value.body["param"] == "messages"  # type: ignore[index]


def test_embeddings_are_unit_vectors_that_rank_paraphrases_first(module_server: str) -> None:
    client = client_for(module_server)
    out = client.embeddings.create(
        model="companion-embed",
        input=[
            "How do I bake bread?",
            "What is the way to make bread?",
            "The stock market fell today.",
        ],
    )
    vectors = [d.embedding for d in out.data]
    assert len(vectors) == 3 and len(vectors[0]) == 384
    dot = lambda a, b: sum(x * y for x, y in zip(a, b, strict=True))  # noqa: E731
    assert abs(dot(vectors[0], vectors[0]) - 1) < 1e-3
    assert dot(vectors[0], vectors[1]) > dot(vectors[0], vectors[2]) + 0.2
    assert out.usage.prompt_tokens == 9 + 10 + 8  # WordPiece tokens with [CLS] and [SEP]
    short = client.embeddings.create(model="companion-embed", input="Bread", dimensions=64)
    assert len(short.data[0].embedding) == 64
    assert abs(dot(short.data[0].embedding, short.data[0].embedding) - 1) < 1e-3
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="companion-embed", input=[])
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="companion-embed", input="x", dimensions=4096)


def test_text_completions(module_server: str) -> None:
    client = client_for(module_server)
    prompt = "The capital of France is"
    done = client.completions.create(
        model="companion", prompt=prompt, max_tokens=4, temperature=0, n=2, logprobs=2,
        echo=True, user="cleo",
    )  # fmt: skip
    assert [c.index for c in done.choices] == [0, 1]
    first = done.choices[0]
    assert first.text.startswith(prompt) and len(first.text) > len(prompt)
    assert first.logprobs is not None and len(first.logprobs.tokens) == 4
    assert first.logprobs.text_offset[0] == len(prompt)
    assert done.usage.prompt_tokens == 5 and done.usage.completion_tokens == 8
    streamed = client.completions.create(
        model="companion", prompt=prompt, max_tokens=4, temperature=0, stream=True,
        stream_options={"include_usage": True}, user="cleo",
    )  # fmt: skip
    chunks = list(streamed)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert prompt + text == first.text  # greedy: the same continuation
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model="companion", prompt=prompt, suffix="!", max_tokens=2)
    assert refused.value.body["param"] == "suffix"  # type: ignore[index]
