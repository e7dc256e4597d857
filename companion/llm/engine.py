"""The engine: one thread owns the llama.cpp context; requests reach it through a queue.

Tokens travel back to the caller's event loop through an asyncio.Queue. A consumer that stops
reading (client gone, deadline) marks its request cancelled and the thread stops at the next
token.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import llama_cpp

from companion.errors import GenerationError, Overloaded
from companion.llm.base import GenerationDone, GenerationRequest, ModelInfo
from companion.llm.llama_cpp import LoadedModel

log = logging.getLogger("companion.llm.engine")

_STOP = object()


@dataclass
class _Job:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[Any]
    submitted: float


class LlamaEngine:
    """Serves generations one at a time from a single llama.cpp context."""

    def __init__(self, model: LoadedModel, *, max_queue: int = 64) -> None:
        self._model = model
        self._llama: Any = model.llama
        self._jobs: queue.Queue[_Job | object] = queue.Queue(maxsize=max_queue)
        self._busy = False
        self._counters = {"prompt_tokens": 0, "completion_tokens": 0, "generations": 0}
        self._thread = threading.Thread(target=self._run, name="companion-engine", daemon=True)
        self._thread.start()

    @property
    def info(self) -> ModelInfo:
        return self._model.info

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """The prompt text for `messages`, from the chat template stored in the GGUF."""
        formatter: Any = self._model.formatter
        return str(formatter(messages=messages).prompt)

    def tokenize(self, text: str) -> list[int]:
        """Token ids of a rendered prompt (special tokens parsed, no extra BOS)."""
        return list(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def count_tokens(self, text: str) -> int:
        """Tokens of plain text (special-token strings count as text)."""
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def stats(self) -> dict[str, float]:
        return {
            "queue_depth": float(self._jobs.qsize()),
            "active_sequences": 1.0 if self._busy else 0.0,
            **{k: float(v) for k, v in self._counters.items()},
        }

    async def generate(self, request: GenerationRequest) -> AsyncIterator[str | GenerationDone]:
        """Stream text pieces, then one GenerationDone. Closing the stream cancels the run."""
        loop = asyncio.get_running_loop()
        out: asyncio.Queue[Any] = asyncio.Queue()
        try:
            self._jobs.put_nowait(_Job(request, loop, out, time.perf_counter()))
        except queue.Full:
            raise Overloaded("the generation queue is full; retry shortly", retry_after_s=2) from None
        try:
            while True:
                item = await out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, GenerationDone):
                    return
        finally:
            request.cancelled = True

    def close(self) -> None:
        """Finish the queued jobs, stop the thread and free the model."""
        self._jobs.put(_STOP)
        self._thread.join()
        self._llama.close()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            assert isinstance(job, _Job)
            self._busy = True
            try:
                done = self._generate(job)
                job.loop.call_soon_threadsafe(job.out.put_nowait, done)
            except Exception as exc:  # the worker loop: the error goes back to the caller
                log.exception("generation failed")
                err = GenerationError(f"generation failed: {exc}")
                job.loop.call_soon_threadsafe(job.out.put_nowait, err)
            finally:
                self._busy = False

    def _generate(self, job: _Job) -> GenerationDone:
        req, opts = job.request, job.request.options
        started = time.perf_counter()
        if req.cancelled:
            return GenerationDone("", len(req.prompt_tokens), 0, "cancelled", {})
        samples = 0

        def stop_check(_input_ids: Any, _logits: Any) -> bool:
            # called once per sampled token, plus once for the final EOS / extra sample
            nonlocal samples
            samples += 1
            return req.cancelled

        pieces: list[str] = []
        first_at: float | None = None
        finish = "stop"
        stream = self._llama.create_completion(
            req.prompt_tokens,
            max_tokens=opts.max_tokens,
            temperature=opts.temperature,
            top_p=opts.top_p,
            top_k=opts.top_k,
            repeat_penalty=opts.repeat_penalty,
            stop=list(opts.stop) or None,
            seed=opts.seed,
            stream=True,
            stopping_criteria=llama_cpp.StoppingCriteriaList([stop_check]),
        )
        for chunk in stream:
            choice = chunk["choices"][0]
            if choice["text"]:
                first_at = first_at or time.perf_counter()
                pieces.append(choice["text"])
                job.loop.call_soon_threadsafe(job.out.put_nowait, choice["text"])
            if choice["finish_reason"] is not None:
                finish = choice["finish_reason"]
        if req.cancelled:
            finish = "cancelled"
        sampled = min(max(samples - 1, 0), opts.max_tokens)
        ended = time.perf_counter()
        timings = _timings(job.submitted, started, first_at, ended, sampled)
        self._counters["prompt_tokens"] += len(req.prompt_tokens)
        self._counters["completion_tokens"] += sampled
        self._counters["generations"] += 1
        log.info(
            "generated %d tokens (prompt %d) in %.0f ms, %.1f tokens/s, finish=%s",
            sampled, len(req.prompt_tokens), timings["generation_ms"],
            timings["tokens_per_second"], finish,
        )
        return GenerationDone("".join(pieces), len(req.prompt_tokens), sampled, finish, timings)


def _timings(
    submitted: float, started: float, first_at: float | None, ended: float, tokens: int
) -> dict[str, float]:
    """Queue wait, time to first token, generation time and decode speed, in ms and tokens/s."""
    ttft = (first_at or ended) - submitted
    gen_s = ended - started
    return {
        "queue_ms": round((started - submitted) * 1000, 2),
        "time_to_first_token_ms": round(ttft * 1000, 2),
        "generation_ms": round(gen_s * 1000, 2),
        "tokens_per_second": round(tokens / gen_s, 2) if gen_s > 0 else 0.0,
    }
