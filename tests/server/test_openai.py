"""The official OpenAI Python client against a real running server."""

from __future__ import annotations

import httpx
import openai
import pytest


def client_for(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=120)


def test_chat_completion_models_and_stream(server: str) -> None:
    client = client_for(server)
    models = client.models.list()
    assert any(m.id.startswith("SmolLM2") for m in models.data)
    done = client.chat.completions.create(
        model="companion",
        messages=[{"role": "user", "content": "Hello! Who are you?"}],
        max_tokens=16,
        user="olga",
    )
    assert done.choices[0].message.content and done.choices[0].message.role == "assistant"
    assert 0 < done.usage.completion_tokens <= 16
    pieces = []
    for chunk in client.chat.completions.create(
        model="companion",
        messages=[{"role": "user", "content": "Tell me a joke."}],
        max_tokens=16,
        stream=True,
        user="olga",
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    assert len(pieces) >= 2
    sessions = httpx.get(f"{server}/api/v1/sessions", params={"user_id": "olga"}).json()
    assert len(sessions) == 2  # one conversation per first message


def test_follow_up_continues_the_same_conversation(server: str) -> None:
    client = client_for(server)
    first = [{"role": "user", "content": "My cat is called Miso."}]
    reply = client.chat.completions.create(
        model="companion", messages=first, max_tokens=8, user="pia"
    )
    follow = first + [
        {"role": "assistant", "content": reply.choices[0].message.content or ""},
        {"role": "user", "content": "What is my cat called?"},
    ]
    client.chat.completions.create(model="companion", messages=follow, max_tokens=8, user="pia")
    sessions = httpx.get(f"{server}/api/v1/sessions", params={"user_id": "pia"}).json()
    assert len(sessions) == 1
    messages = httpx.get(f"{server}/api/v1/sessions/{sessions[0]['id']}/messages").json()[
        "messages"
    ]
    assert len(messages) == 4


def test_errors_come_in_openai_shape(server: str) -> None:
    client = client_for(server)
    with pytest.raises(openai.UnprocessableEntityError) as bad:
        client.chat.completions.create(model="companion", messages=[], max_tokens=4)
    assert bad.value.body["param"] == "messages"  # type: ignore[index]
    with pytest.raises(openai.APIStatusError) as last:
        client.chat.completions.create(
            model="companion", messages=[{"role": "assistant", "content": "hi"}], max_tokens=4
        )
    assert last.value.status_code == 422


def test_embeddings_are_unit_vectors_that_rank_paraphrases_first(server: str) -> None:
    client = client_for(server)
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
    with pytest.raises(openai.UnprocessableEntityError):
        client.embeddings.create(model="companion-embed", input=[])
