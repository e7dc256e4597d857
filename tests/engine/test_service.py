"""The engine behind the chat service and the HTTP API: predictive prefill, 429 when full."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from companion.domain import GenerationOptions
from companion.llm.base import GenerationRequest
from companion.runtime import Runtime, open_runtime
from companion.server.app import create_app
from tests.conftest import make_settings


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """One decoding slot and no waiting room, so a second request is refused at once."""
    data: Path = tmp_path_factory.mktemp("svc") / "data"
    settings = make_settings(
        data,
        engine_parallel=1,
        engine_max_queue=0,
        n_threads=1,
        memory_enabled=False,
        enable_caching=False,
        context_length=1024,
    )
    rt = open_runtime(settings)
    yield rt
    rt.close()


async def test_open_session_prefills_what_the_first_reply_reuses(small: Runtime) -> None:
    opened = await small.companion.open_session("pat", "pat-session")
    assert opened["prefilled"] and opened["prefix_tokens"] > 10
    result = await small.companion.chat("pat", "Hello, who are you?", "pat-session", max_tokens=6)
    assert result.timings["reused_tokens"] >= opened["prefix_tokens"]
    again = await small.companion.open_session("pat", "pat-session")
    assert again["reused_tokens"] >= result.usage.prompt_tokens  # the last turn is still cached


def hold_the_only_slot(rt: Runtime, release: threading.Event) -> threading.Thread:
    """Run a long generation on the engine from another thread until `release` is set."""
    engine = rt.companion.engine
    ask = [{"role": "user", "content": "Write a very long story about the sea and its ships."}]
    prompt = engine.tokenize(engine.render_chat(ask))
    started = threading.Event()

    async def hold() -> None:
        request = GenerationRequest(prompt, GenerationOptions(max_tokens=900, temperature=0.0))
        async for _ in engine.generate(request):
            started.set()
            if release.is_set():
                return

    thread = threading.Thread(target=asyncio.run, args=(hold(),), daemon=True)
    thread.start()
    assert started.wait(timeout=10), "the long generation never started"
    return thread


def test_full_engine_answers_429_with_retry_after(small: Runtime) -> None:
    release = threading.Event()
    with TestClient(create_app(small.settings, small)) as client:
        holder = hold_the_only_slot(small, release)
        try:
            resp = client.post("/api/v1/chat", json={"message": "Hi there", "max_tokens": 4})
        finally:
            release.set()
            holder.join(timeout=30)
        assert resp.status_code == 429, resp.text
        assert int(resp.headers["Retry-After"]) >= 1
        assert resp.json()["error"]["code"] == "overloaded"
        deadline = time.monotonic() + 5
        while small.companion.engine.stats()["active_sequences"]:  # the slot frees at once
            assert time.monotonic() < deadline
            time.sleep(0.01)
        opened = client.post("/api/v1/sessions/http-session/open", json={"user_id": "quinn"})
        assert opened.status_code == 200 and opened.json()["prefilled"] is True
        stats = client.get("/api/v1/stats").json()["engine"]
        assert stats["prefills"] >= 1 and "kv_used_ratio" in stats
