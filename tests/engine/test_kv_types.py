"""kv_cache_type: a quantized KV cache still answers, and a session's KV state takes less room
(what a user sets it for: more sessions in the same cells, smaller saved states)."""

from __future__ import annotations

import asyncio

import llama_cpp
import pytest

from companion.llm.batched import BatchedEngine
from companion.llm.llama_cpp import ContextPlan, load_model
from companion.llm.registry import tiny_package_path
from tests.engine.conftest import chat_prompt, collect, greedy


def _answer_and_state_bytes(kind: str) -> tuple[str, int]:
    path = tiny_package_path()
    assert path is not None
    plan = ContextPlan(kv_tokens=2048, n_seq_max=4, n_batch=64, n_threads=1, kv_type=kind)
    engine = BatchedEngine(
        load_model(path, size="tiny", context_length=1024, plan=plan), parallel=2, max_queue=2
    )
    try:
        prompt = chat_prompt(engine, "What is the capital of France?")
        _, done = asyncio.run(collect(engine, greedy(prompt, 16, key="kv-type")))
        (entry,) = [e for e in engine._pool.entries.values() if e.key == "kv-type"]
        size = int(llama_cpp.llama_state_seq_get_size(engine._ctx, entry.seq))
        return done.text, size
    finally:
        engine.close()


@pytest.mark.parametrize("kind", ["q8_0", "q4_0"])
def test_a_quantized_kv_cache_answers_in_less_room(kind: str) -> None:
    f16_text, f16_bytes = _answer_and_state_bytes("f16")
    text, size = _answer_and_state_bytes(kind)
    assert "Paris" in f16_text and "Paris" in text
    # q8_0 holds a cell in about 8.5 bits a value, q4_0 in about 4.5, against f16's 16
    assert size < (0.6 if kind == "q8_0" else 0.35) * f16_bytes, (size, f16_bytes)
