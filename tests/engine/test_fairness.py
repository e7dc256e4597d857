"""Fair admission with the real tiny model: one user with ten sessions does not starve another,
and a request that cannot be served before its deadline is refused at once."""

from __future__ import annotations

import asyncio
import time

import pytest

from companion.errors import Overloaded
from companion.llm.base import GenerationDone
from companion.llm.batched import BatchedEngine
from tests.engine.conftest import chat_prompt, collect, greedy, make_engine

ASK = "Tell me a short fact about the sea."


async def wait_until(check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


async def timed(engine: BatchedEngine, prompt: list[int], user: str, key: str) -> float:
    """When the request got its slot (seconds, perf_counter)."""
    request = greedy(prompt, max_tokens=6, key=key)
    request.user = user
    sent = time.perf_counter()
    _, done = await collect(engine, request)
    return sent + done.timings["queue_ms"] / 1000


async def test_one_user_with_ten_sessions_does_not_starve_another() -> None:
    engine = make_engine(parallel=2, max_queue=12)
    try:
        prompt = chat_prompt(engine, ASK)
        many = [asyncio.create_task(timed(engine, prompt, "many", f"many-{i}")) for i in range(10)]
        await wait_until(lambda: engine.stats()["queue_depth"] >= 6)
        other = await timed(engine, prompt, "other", "other-0")
        started = await asyncio.gather(*many)
    finally:
        engine.close()
    before_other = sum(1 for t in started if t < other)
    assert before_other <= 4  # FIFO would have started all ten first
    assert sum(1 for t in started if t > other) >= 5


async def test_a_request_predicted_to_miss_its_deadline_is_refused_at_once() -> None:
    engine = make_engine(parallel=1, max_queue=8)
    try:
        prompt = chat_prompt(engine, ASK)
        _, taught = await collect(engine, greedy(prompt, 40, key="teach"))  # a turn's time
        hogs = [asyncio.create_task(collect(engine, greedy(prompt, 40, key=f"h{i}")))
                for i in range(3)]  # fmt: skip
        await wait_until(lambda: engine.stats()["queue_depth"] >= 2)
        engine.timeout_s = 1.5 * taught.timings["generation_ms"] / 1000  # 3 turns ahead: late
        started = time.perf_counter()
        with pytest.raises(Overloaded) as refused:
            await anext(engine.generate(greedy(prompt, key="late")))
        assert time.perf_counter() - started < 0.5 and refused.value.retry_after_s >= 1
        assert "request_timeout_s" in str(refused.value)
        results = await asyncio.gather(*hogs)
    finally:
        engine.close()
    assert all(isinstance(done, GenerationDone) for _, done in results)
