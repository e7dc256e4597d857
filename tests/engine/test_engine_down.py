"""A stopped engine refuses at once with ModelDown (503), in words, instead of queueing."""

from __future__ import annotations

import pytest

from companion.errors import ModelDown
from tests.engine.conftest import chat_prompt, collect, greedy, make_engine


async def test_a_closed_engine_refuses_new_requests_with_model_down() -> None:
    engine = make_engine()
    prompt = chat_prompt(engine, "Hi")
    pieces, done = await collect(engine, greedy(prompt, max_tokens=4))
    assert done.completion_tokens >= 1
    assert engine.down_reason is None
    engine.check_serving()
    engine.close()
    assert engine.down_reason == "it was closed"
    with pytest.raises(ModelDown):
        engine.check_serving()
    with pytest.raises(ModelDown) as refused:
        await collect(engine, greedy(prompt, max_tokens=4))
    assert refused.value.status_code == 503 and refused.value.code == "model_unavailable"
    assert "it was closed" in refused.value.message
    assert "POST /api/v1/models/reload" in refused.value.message
    with pytest.raises(ModelDown):
        await engine.prefill(prompt, "s1")
    with pytest.raises(ModelDown):  # a request still holding the engine: refused, no crash
        engine.count_tokens("Hi")
    with pytest.raises(ModelDown):
        engine.tokenize(engine.render_chat([{"role": "user", "content": "Hi"}]))
