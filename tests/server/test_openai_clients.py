"""Other real OpenAI-API clients against a real server: LiteLLM (`openai/` provider with
api_base) and LangChain's ChatOpenAI, each with a client-sent history and a tool call."""

from __future__ import annotations

import json

import jsonschema
import pytest

from tests.server.test_openai import WEATHER

HISTORY = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "My cat is called Miso."},
    {"role": "assistant", "content": "What a lovely name!"},
    {"role": "user", "content": "What is my cat called?"},
]
OFF = {"companion": {"memory": False, "persona": False}}


@pytest.mark.timeout(900)
def test_litellm_as_a_client(module_server: str) -> None:
    litellm = pytest.importorskip("litellm")
    common = {"model": "openai/companion", "api_base": f"{module_server}/v1", "api_key": "x",
              "temperature": 0, "user": "lite", "extra_body": OFF}  # fmt: skip
    reply = litellm.completion(messages=HISTORY, max_tokens=10, **common)
    assert "Miso" in reply.choices[0].message.content
    asks = [{"role": "user", "content": "What is the weather in Oslo?"}]
    called = litellm.completion(messages=asks, tools=[WEATHER], tool_choice="required",
                                max_tokens=36, **common)  # fmt: skip
    call = called.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    stream = litellm.completion(messages=HISTORY, max_tokens=6, stream=True, **common)
    pieces = [c.choices[0].delta.content or "" for c in stream]
    assert "".join(pieces)


@pytest.mark.timeout(900)
def test_langchain_chat_openai(module_server: str) -> None:
    chat_openai = pytest.importorskip("langchain_openai")
    messages = pytest.importorskip("langchain_core.messages")
    llm = chat_openai.ChatOpenAI(
        model="companion", base_url=f"{module_server}/v1", api_key="x", temperature=0,
        max_tokens=10, extra_body=OFF, model_kwargs={"user": "chain"},
    )  # fmt: skip
    history = [
        messages.SystemMessage("You are a helpful assistant."),
        messages.HumanMessage("My cat is called Miso."),
        messages.AIMessage("What a lovely name!"),
        messages.HumanMessage("What is my cat called?"),
    ]
    assert "Miso" in llm.invoke(history).content
    bound = llm.bind_tools([WEATHER], tool_choice="get_weather").bind(max_tokens=36)
    out = bound.invoke([messages.HumanMessage("What is the weather in Oslo?")])
    assert out.tool_calls and out.tool_calls[0]["name"] == "get_weather"
    jsonschema.validate(out.tool_calls[0]["args"], WEATHER["function"]["parameters"])
