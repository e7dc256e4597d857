"""One request inside the batched engine, and the engine's running figures.

A Job lives on the engine thread from admission to its end; its events go back to the
caller's event loop. EngineFigures keeps what `stats()` reports, written by the engine thread
and read from any thread under a lock.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from companion.llm.base import GenerationDone, GenerationRequest, TokenLogprob
from companion.llm.sampling import Detokenizer, Sampler, StopText
from companion.stats import percentile

WINDOW_S = 10.0  # aggregate rates are measured over the last this many seconds


@dataclass(eq=False)
class Job:
    """A generation (or a prefill, which stops once its prompt is in the cache)."""

    request: GenerationRequest
    key: str
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[Any]
    prefill_only: bool = False
    submitted: float = field(default_factory=time.perf_counter)
    admitted: float = 0.0
    first_at: float | None = None
    seq: int = -1
    pos: int = 0  # next KV position of this sequence
    pending: list[int] = field(default_factory=list)  # prompt tokens not yet decoded
    next_token: int | None = None  # sampled, to be decoded in the next step
    reused: int = 0
    restore_from: str = ""  # the saved state a restore plan loads (this or another session's)
    generated: int = 0
    sampler: Sampler | None = None
    detok: Detokenizer | None = None
    text: StopText | None = None
    logprobs: list[TokenLogprob] | None = None  # filled when the request asks for them

    @property
    def user(self) -> str:
        """Whose request (fairness); a request without a user counts as its own session's."""
        return self.request.user or self.key

    @property
    def cancelled(self) -> bool:
        return self.request.cancelled

    def send(self, item: Any) -> None:
        """Hand `item` to the caller's loop; a closed loop means the caller is gone."""
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)
        except RuntimeError:
            self.request.cancelled = True

    def done(self, finish: str) -> GenerationDone:
        """The closing event, with exact token counts and the timings of this request."""
        ended = time.perf_counter()
        admitted = self.admitted or ended
        gen_s = ended - admitted
        ttft = (self.first_at or ended) - self.submitted
        timings = {
            "queue_ms": round((admitted - self.submitted) * 1000, 2),
            "time_to_first_token_ms": round(ttft * 1000, 2),
            "generation_ms": round(gen_s * 1000, 2),
            "tokens_per_second": round(self.generated / gen_s, 2) if gen_s > 0 else 0.0,
            "prompt_ms": round(((self.first_at or ended) - admitted) * 1000, 2),
            "reused_tokens": float(self.reused),
        }
        text = self.text.text if self.text is not None else ""
        prompt = len(self.request.prompt_tokens)
        return GenerationDone(text, prompt, self.generated, finish, timings, self.logprobs)

    def free(self) -> None:
        if self.sampler is not None:
            self.sampler.free()
            self.sampler = None


class EngineFigures:
    """Counters, recent decode steps and time-to-first-token samples."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._steps: deque[tuple[float, int, int, int]] = deque()  # (t, prompt, gen, seqs)
        self._ttft_ms: deque[float] = deque(maxlen=1000)
        self.totals = {"generations": 0, "prompt_tokens": 0, "completion_tokens": 0,
                       "cancelled": 0, "failed": 0, "prefills": 0,
                       "new_prompt_tokens": 0, "decoded_tokens": 0}  # fmt: skip
        self.gauges = {"active_sequences": 0.0, "queue_depth": 0.0, "kv_used_ratio": 0.0,
                       "kv_sequences": 0.0, "batch_size": 0.0, "batch_sequences": 0.0}  # fmt: skip
        self.kv_counters: dict[str, float] = {}

    def step(self, prompt: int, generated: int, sequences: int, tokens: int) -> None:
        """Record one llama_decode: prompt and generated tokens, sequences and batch tokens."""
        now = time.perf_counter()
        with self._lock:
            self._steps.append((now, prompt, generated, sequences))
            while self._steps and self._steps[0][0] < now - WINDOW_S:
                self._steps.popleft()
            self.totals["prompt_tokens"] += prompt
            self.totals["decoded_tokens"] += generated
            self.gauges["batch_size"] = float(tokens)
            self.gauges["batch_sequences"] = float(sequences)

    def finished(self, done: GenerationDone, prefill: bool) -> None:
        """Record one request's end."""
        with self._lock:
            if prefill:
                self.totals["prefills"] += 1
                return
            self.totals["generations"] += 1
            self.totals["completion_tokens"] += done.completion_tokens
            if done.finish_reason == "cancelled":
                self.totals["cancelled"] += 1
            elif done.completion_tokens:
                self._ttft_ms.append(done.timings["time_to_first_token_ms"])

    def admitted(self, new_tokens: int) -> None:
        """A request started: `new_tokens` of its prompt were not in its session's last turn."""
        with self._lock:
            self.totals["new_prompt_tokens"] += new_tokens

    def publish(self, gauges: dict[str, float], kv_counters: dict[str, float]) -> None:
        """Replace the live gauges and the KV-cache counters."""
        with self._lock:
            self.gauges.update(gauges)
            self.kv_counters = dict(kv_counters)

    def failed(self) -> None:
        with self._lock:
            self.totals["failed"] += 1

    def snapshot(self) -> dict[str, float]:
        """Every figure as a float (the Engine protocol's stats())."""
        now = time.perf_counter()
        with self._lock:
            steps = [s for s in self._steps if s[0] >= now - WINDOW_S]
            ttft = list(self._ttft_ms)
            out = {k: float(v) for k, v in {**self.totals, **self.gauges}.items()}
            out.update({f"kv_{k}": float(v) for k, v in self.kv_counters.items()})
        span = max(now - steps[0][0], 1.0) if steps else 1.0
        out["batch_sequences_avg"] = (
            round(sum(s[3] for s in steps) / len(steps), 2) if steps else 0.0
        )
        out["prompt_tokens_per_s"] = round(sum(s[1] for s in steps) / span, 2)
        out["generated_tokens_per_s"] = round(sum(s[2] for s in steps) / span, 2)
        out["ttft_p50_ms"] = round(percentile(ttft, 50), 2)
        out["ttft_p95_ms"] = round(percentile(ttft, 95), 2)
        return out
