"""Every parameter of the installed SDK's ChatCompletionCreateParams is honoured or refused.

The parameters are enumerated from the `openai` package itself, so a parameter a new SDK adds
fails this test until it is declared below. "Honoured" means the parameter reaches the turn the
engine runs (checked on the ClientRequest the route builds, with the real model loaded);
"refused" means a 400 in OpenAI's shape that names it. The route-level ones (stream, user,
model, messages) are checked through the SDK in test_openai.py.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openai.types.chat import completion_create_params

from companion.openai_compat.params import BadParameter, ChatParams
from companion.openai_compat.turn import ClientRequest
from companion.runtime import Runtime, open_runtime
from companion.server.app import create_app
from companion.server.openai_api import chat_request
from tests.conftest import make_settings

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
SCHEMA = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}

# parameter -> (a value to send, what the engine's request shows for it)
HONOURED: dict[str, tuple[Any, Callable[[ClientRequest], bool]]] = {
    "frequency_penalty": (1.5, lambda r: r.options["frequency_penalty"] == 1.5),
    "presence_penalty": (-1.0, lambda r: r.options["presence_penalty"] == -1.0),
    "logit_bias": ({"42": -100}, lambda r: r.options["logit_bias"] == ((42, -100.0),)),
    "logprobs": (True, lambda r: r.logprobs == 0),
    "max_completion_tokens": (7, lambda r: r.options["max_tokens"] == 7),
    "max_tokens": (9, lambda r: r.options["max_tokens"] == 9),
    "n": (3, lambda r: r.n == 3),
    "parallel_tool_calls": (False, lambda r: r.tools is None or not r.tools.parallel),
    "prompt_cache_key": ("conv-1", lambda r: r.kv_key == "conv-1"),
    "response_format": (SCHEMA, lambda r: r.grammar is not None),
    "seed": (1234, lambda r: r.options["seed"] == 1234),
    "stop": (["\n\n"], lambda r: r.options["stop"] == ["\n\n"]),
    "temperature": (0.3, lambda r: r.options["temperature"] == 0.3),
    "tool_choice": ("required", lambda r: r.tools is not None and r.tools.choice == "required"),
    "tools": ([TOOL], lambda r: r.tools is not None and "get_weather" in r.tools.functions),
    "top_p": (0.5, lambda r: r.options["top_p"] == 0.5),
    # accepted values that need nothing more: companion stores every exchange, serves from
    # memory (its KV cache), in the default tier, text only
    "store": (True, lambda r: True),
    "prompt_cache_retention": ("in_memory", lambda r: True),
    "service_tier": ("auto", lambda r: True),
    "modalities": (["text"], lambda r: True),
}
WITH = {"tool_choice": {"tools": [TOOL]}, "parallel_tool_calls": {"tools": [TOOL]}}
REFUSED: dict[str, Any] = {
    "audio": {"voice": "alloy", "format": "mp3"},
    "function_call": "auto",
    "functions": [{"name": "f", "parameters": {}}],
    "moderation": {"policy": {}},
    "prediction": {"type": "content", "content": "x"},
    "prompt_cache_options": {"mode": "implicit"},
    "reasoning_effort": "low",
    "verbosity": "low",
    "web_search_options": {},
    "metadata": {"k": "v"},
    "top_logprobs": 3,  # only with logprobs: true (then honoured: see below)
}
ROUTE_LEVEL = {"messages", "model", "stream", "stream_options", "user", "safety_identifier"}
MESSAGES = [{"role": "user", "content": "Hi"}]
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """One runtime for the module: these tests build requests, they do not generate."""
    rt = open_runtime(make_settings(tmp_path_factory.mktemp("params") / "data"))
    yield rt
    rt.close()


@pytest.fixture(scope="module")
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime.settings, runtime)) as c:
        yield c


def sdk_parameters() -> set[str]:
    return set(typing.get_type_hints(completion_create_params.CompletionCreateParamsBase))


def build(runtime: Runtime, **params: Any) -> ClientRequest:
    body = ChatParams.model_validate({"model": "companion", "messages": MESSAGES, **params})
    return chat_request(body, runtime, "u1", None)


def test_every_sdk_parameter_is_declared() -> None:
    declared = set(HONOURED) | set(REFUSED) | ROUTE_LEVEL
    assert sdk_parameters() - declared == set(), "a new SDK parameter needs a decision"


@pytest.mark.parametrize("name", sorted(HONOURED))
def test_honoured_parameter_reaches_the_engine(runtime: Runtime, name: str) -> None:
    value, shows = HONOURED[name]
    request = build(runtime, **{name: value, **WITH.get(name, {})})
    assert shows(request), name


def test_top_logprobs_is_honoured_with_logprobs(runtime: Runtime) -> None:
    assert build(runtime, logprobs=True, top_logprobs=5).logprobs == 5


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_parameter_is_a_400_naming_it(runtime: Runtime, name: str) -> None:
    with pytest.raises(BadParameter) as refused:
        build(runtime, **{name: REFUSED[name]})
    assert refused.value.status_code == 400 and refused.value.field == name


def test_refusals_and_bad_values_come_back_in_openai_shape(client: TestClient) -> None:
    """Through HTTP: unknown, refused and out-of-range parameters; unknown models and routes."""
    cases: list[tuple[dict[str, Any], int, str | None]] = [
        ({"audio": {"voice": "alloy"}}, 400, "audio"),
        ({"no_such_thing": 1}, 400, "no_such_thing"),
        ({"temperature": 3}, 400, "temperature"),
        ({"n": 99}, 400, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
        ({"logit_bias": {"99999999": 1}}, 400, "logit_bias"),
        ({"store": False}, 400, "store"),
        ({"response_format": {"type": "xml"}}, 400, "response_format"),
        ({"tool_choice": "required"}, 400, "tool_choice"),
        ({"model": "gpt-4o"}, 404, "model"),
        ({"messages": []}, 400, "messages"),
        ({"messages": [{"role": "user", "content": [IMAGE]}]}, 400, "messages[0].content"),
    ]
    for extra, status, param in cases:
        body = {"model": "companion", "messages": MESSAGES, "max_tokens": 2, **extra}
        resp = client.post("/v1/chat/completions", json=body)
        assert resp.status_code == status, (extra, resp.text)
        error = resp.json()["error"]
        assert error["param"] == param and error["message"] and error["type"], resp.text
    for method, path, status in [("GET", "/v1/nope", 404), ("GET", "/v1/chat/completions", 405),
                                 ("GET", "/v1/models/gpt-4o", 404)]:  # fmt: skip
        resp = client.request(method, path)
        assert resp.status_code == status
        assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
    assert client.get("/v1/models/tiny").json()["id"] == "tiny"
