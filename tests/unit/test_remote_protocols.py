"""The two model-server protocols of the remote engine (pure logic): which one a URL speaks,
the request bodies, and the SSE events read back."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from companion.domain import GenerationOptions
from companion.errors import InputError
from companion.llm.base import GenerationRequest
from companion.llm.remote import (
    Last,
    OpenAIEvents,
    cache_key,
    llama_body,
    llama_events,
    openai_body,
)
from companion.llm.servers import ServerPool, server_base


def test_which_protocol_a_server_url_speaks() -> None:
    assert server_base("http://m0:8080") == ("http://m0:8080", "llama")
    assert server_base("http://m0:8080/v1/") == ("http://m0:8080/v1", "openai")
    assert server_base("http://m0:8080/v1", "llama") == ("http://m0:8080", "llama")
    assert server_base("http://vllm:8000", "openai") == ("http://vllm:8000", "openai")
    with pytest.raises(ValueError, match="model_server_api"):
        server_base("http://m0:8080", "grpc")
    pool = ServerPool(["http://a:1", "http://b:2/v1"])
    assert [(s.url, s.api) for s in pool.servers.values()] == [
        ("http://a:1", "llama"), ("http://b:2/v1", "openai")
    ]  # fmt: skip


def request(**options: object) -> GenerationRequest:
    opts = GenerationOptions(max_tokens=9, temperature=0.3, top_p=0.9, seed=7, stop=["\n"],
                             logit_bias=((5, -1.0),), **options)  # type: ignore[arg-type]  # fmt: skip
    return GenerationRequest([1, 2, 3], opts, session_key="sess-1", user="ann")


def test_llama_body_keeps_the_prompt_cached_and_may_pin_a_slot() -> None:
    body = llama_body(request(), 9, slot=3)
    assert body["prompt"] == [1, 2, 3] and body["n_predict"] == 9 and body["cache_prompt"]
    assert body["id_slot"] == 3 and body["seed"] == 7 and body["logit_bias"] == [[5, -1.0]]
    assert "top_k" in body and "repeat_penalty" in body


def test_openai_body_sends_token_ids_and_the_session_as_prompt_cache_key() -> None:
    body = openai_body(request(), 9, "SmolLM2")
    assert body["model"] == "SmolLM2" and body["prompt"] == [1, 2, 3]
    assert body["max_tokens"] == 9 and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["prompt_cache_key"] == "sess-1" and body["user"] == "ann"
    assert body["seed"] == 7 and body["stop"] == ["\n"] and body["logit_bias"] == {"5": -1.0}
    assert body["temperature"] == 0.3 and body["top_p"] == 0.9
    # not in OpenAI's API (companion's /v1 would refuse them)
    assert not {"top_k", "repeat_penalty", "cache_prompt", "n_predict"} & set(body)
    long = cache_key("x" * 500)
    assert len(long) <= 200 and long == cache_key("x" * 500) != cache_key("y" * 500)
    grammar = request()
    grammar.grammar = 'root ::= "a"'
    with pytest.raises(InputError, match="grammar"):
        openai_body(grammar, 9, "m")
    many = request()
    many.options = replace(many.options, stop=("a", "b", "c", "d", "e"))
    with pytest.raises(InputError, match="at most 4"):
        openai_body(many, 9, "m")


def test_llama_events() -> None:
    assert llama_events(json.dumps({"content": "Hi", "stop": False})) == ["Hi"]
    assert llama_events(json.dumps({"content": "", "stop": False})) == []
    last = llama_events(json.dumps({
        "content": "", "stop": True, "stop_type": "limit",
        "timings": {"cache_n": 40, "predicted_n": 9, "predicted_ms": 90.0,
                    "predicted_per_second": 100.0, "prompt_ms": 12.5},
    }))  # fmt: skip
    assert last == [Last("length", 9, 40, 90.0, 100.0, 12.5)]


def chunk(text: str | None = None, finish: str | None = None, usage: object = None) -> str:
    choices = [] if text is None else [{"index": 0, "text": text, "finish_reason": finish}]
    return json.dumps({"object": "text_completion", "choices": choices, "usage": usage})


def test_openai_events_end_at_done_with_finish_and_usage() -> None:
    parse = OpenAIEvents()
    assert parse(chunk("Once")) == ["Once"]
    assert parse(chunk(" upon")) == [" upon"]
    assert parse(chunk("", "length")) == []
    usage = {"prompt_tokens": 50, "completion_tokens": 2, "total_tokens": 52,
             "prompt_tokens_details": {"cached_tokens": 44}}  # fmt: skip
    assert parse(chunk(usage=usage)) == []
    assert parse("[DONE]") == [Last("length", 2, 44)]
    bare = OpenAIEvents()  # a server that sends no usage: the pieces are counted
    assert bare(chunk("x", "stop")) == ["x"]
    assert bare("[DONE]") == [Last("stop", None, 0)]


def test_an_error_event_in_an_openai_stream_fails_the_server() -> None:
    from companion.llm.remote import _StreamError

    with pytest.raises(_StreamError, match="boom"):
        OpenAIEvents()(json.dumps({"error": {"message": "boom", "code": "model_unavailable"}}))
