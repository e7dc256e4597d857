"""The batched engine: one thread owns the llama.cpp context and decodes every request together.

Each step builds one llama_batch: the next token of every generating sequence, then chunks of
waiting prompts up to the step's token budget (so a long prompt never freezes the streams
already running), and calls llama_decode once. Requests join between steps and leave when
done; each has its own sampler chain, stop strings and token stream. A session's sequence
stays in the KV cache after its turn (see kvcache.py), so its next turn decodes only what is
new. Tokens travel back to the caller's event loop through an asyncio.Queue; a consumer that
stops reading marks its request cancelled and its sequence is freed at the next step.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import llama_cpp

from companion.config import Settings
from companion.domain import GenerationOptions
from companion.errors import (
    CompanionError,
    ConfigError,
    GenerationError,
    ModelDown,
    Overloaded,
    PayloadTooLarge,
)
from companion.llm.admission import WaitPredictor, check_wait, fair_pick
from companion.llm.base import GenerationDone, GenerationRequest, ModelInfo, TokenLogprob
from companion.llm.jobs import EngineFigures, Job
from companion.llm.kvcache import MAX_PREFIXES, SPLIT_SPARE, Plan, SequencePool
from companion.llm.kvstate import ANONYMOUS_KEY, Ledger, StateMover
from companion.llm.kvtiers import KvTiers, open_tiers
from companion.llm.llama_cpp import ContextPlan, LoadedModel, load_model
from companion.llm.probe import AUTO_MAX, auto_parallel
from companion.llm.prompt import SpecialTokens, render_prompt
from companion.llm.sampling import (
    Detokenizer,
    Sampler,
    StopText,
    check_grammar,
    token_bytes,
    token_logprobs,
)
from companion.llm.stepbudget import StepBudget, shares

log = logging.getLogger("companion.llm.batched")

_anonymous = itertools.count()
BASE_STREAMS = 8  # sequences the stream rate floor always allows (the engine's old default)


def least_streams(parallel: int) -> int:
    """Sequences that always run, whatever the stream rate floor or the RAM budget says."""
    return min(parallel, BASE_STREAMS)


def max_parallel(settings: Settings) -> int:
    """The decoding slots the context is built for (auto: the most the probe may choose)."""
    return AUTO_MAX if settings.engine_parallel == "auto" else settings.engine_parallel


def kv_split(settings: Settings, n_gpu_layers: int = 0) -> bool:
    """Whether each sequence gets its own KV stream (engine_kv_layout; auto: on CPU with a
    fixed engine_parallel and engine_kv_tokens unset).

    With one unified buffer every token of a step attends over every cell in use, whichever
    sequence holds it: on CPU, 8 decoding sequences of ~400 tokens each made an 8-token step
    1.29x as long as with one stream per sequence, ~800 tokens 1.43x (docs/engine.md,
    scripts/kv_split_cost.py). A split stream holds one sequence, so idle sessions cannot
    stay in the cells beyond SPLIT_SPARE streams: they wait in the host-RAM tier instead.
    """
    if settings.engine_kv_layout != "auto":
        return settings.engine_kv_layout == "split"
    fixed = settings.engine_parallel != "auto" and settings.engine_kv_tokens is None
    return fixed and n_gpu_layers == 0


def context_plan(settings: Settings, n_gpu_layers: int = 0) -> ContextPlan:
    """The context the engine settings ask for: KV cells, sequence ids, step budget, threads.

    With engine_parallel = auto and no engine_kv_tokens, the cells come from the RAM budget.
    Split: one stream of context_length cells (padded to 256) per sequence id, and only
    SPLIT_SPARE ids beyond the decoding slots.
    """
    parallel = max_parallel(settings)
    if kv_split(settings, n_gpu_layers):
        n_seq = parallel + SPLIT_SPARE
        return ContextPlan(
            kv_tokens=n_seq * -(-settings.context_length // 256) * 256,
            n_seq_max=n_seq,
            n_batch=max(settings.engine_batch_tokens, parallel + 1),
            n_threads=settings.n_threads,
            kv_type=settings.kv_cache_type,
            split=True,
            min_seq=least_streams(parallel) + SPLIT_SPARE,
        )
    n_seq = min(parallel + settings.engine_cached_sessions + MAX_PREFIXES, 256)
    auto = settings.engine_parallel == "auto"
    return ContextPlan(
        kv_tokens=settings.engine_kv_tokens or (0 if auto else settings.context_length * parallel),
        n_seq_max=max(n_seq, parallel + 1),
        n_batch=max(settings.engine_batch_tokens, parallel + 1),
        n_threads=settings.n_threads,
        kv_type=settings.kv_cache_type,
    )


def open_engine(settings: Settings, path: Path, size: str, n_gpu_layers: int = 0) -> BatchedEngine:
    """Load `path` into a BatchedEngine shaped by the engine settings."""
    loaded = load_model(
        path,
        size=size,
        context_length=settings.context_length,
        n_gpu_layers=n_gpu_layers,
        plan=context_plan(settings, n_gpu_layers),
    )
    tiers = open_tiers(settings, path)
    parallel = max_parallel(settings)
    if loaded.plan.split:  # the streams the RAM budget held (llama_cpp.streams_for_ram)
        parallel = min(parallel, loaded.plan.n_seq_max - SPLIT_SPARE)
    engine = BatchedEngine(
        loaded,
        parallel=parallel,
        max_queue=settings.engine_max_queue,
        tiers=tiers,
        timeout_s=settings.request_timeout_s,
        floor_tps=settings.engine_stream_floor_tps,
    )
    if settings.engine_parallel == "auto":
        cache = settings.data_dir / "kv" / f"probe-{path.stem}.json"
        engine.parallel = auto_parallel(engine, cache)
    return engine


class BatchedEngine:
    """Continuous batching over one llama.cpp context shared by `parallel` decoding sequences."""

    def __init__(
        self,
        model: LoadedModel,
        *,
        parallel: int = 8,
        max_queue: int = 64,
        tiers: KvTiers | None = None,
        timeout_s: float | None = None,
        floor_tps: float = 0.0,
    ) -> None:
        if model.plan.n_batch <= parallel:
            raise ConfigError(
                f"engine_batch_tokens ({model.plan.n_batch}) must exceed "
                f"engine_parallel ({parallel})",
                field="engine_batch_tokens",
            )
        self._model = model
        self._ctx: Any = model.context.ctx
        self._mem: Any = model.context.memory
        self._vocab: Any = model.model.vocab
        self._n_vocab = int(model.model.n_vocab())
        self._specials = SpecialTokens(model.model)  # only the template's markers parse
        self.parallel = parallel
        self.floor_tps = floor_tps  # each stream's least tokens/s while others wait (0: off)
        self.max_queue = max_queue
        self._budget = model.plan.n_batch
        self._chunks = StepBudget(self._budget)  # prompt tokens per step beside decoding
        self._split = model.plan.split
        self._pool = SequencePool(
            model.plan.n_seq_max, model.plan.kv_tokens, stream_cells=model.plan.stream_cells
        )
        self._mover = StateMover(self._ctx, self._mem, tiers)  # evicted sessions: RAM, disk
        self._ledger = Ledger()  # each session's last tokens: a turn's new tokens are counted
        self._predictor = WaitPredictor()
        self.timeout_s = timeout_s  # a request predicted to wait longer is refused at once
        self._batch: Any = llama_cpp.llama_batch_init(self._budget, 0, 1)
        self._waiting: deque[Job] = deque()
        self._active: list[Job] = []
        self._wake = threading.Condition()
        self._closing = False
        self._down: str | None = None  # why the engine no longer takes requests (None: serving)
        self._borrowers = threading.Condition()  # callers tokenizing; close() waits for them
        self._borrowing = 0
        self._freed = False
        self.figures = EngineFigures()
        self._thread = threading.Thread(target=self._run, name="companion-engine", daemon=True)
        self._thread.start()

    @property
    def info(self) -> ModelInfo:
        return self._model.info

    @property
    def vocab(self) -> Any:
        """The llama_vocab pointer (read-only use: detokenizing, end-of-generation checks)."""
        return self._vocab

    def render_chat(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """The prompt text for `messages` from the GGUF's chat template (with the reply header)."""
        formatter = self._model.formatter if add_generation_prompt else self._model.prefix_formatter
        with self._borrow():
            return render_prompt(formatter, messages, self._specials)  # contents marked as data

    def tokenize(self, text: str) -> list[int]:
        """Token ids of a rendered prompt (no extra BOS): special tokens parsed in the template's
        text only; message contents of a render_chat prompt are plain text (see prompt.py)."""
        with self._borrow():
            return self._specials.tokenize(text)

    def count_tokens(self, text: str) -> int:
        """Tokens of plain text (special-token strings count as text)."""
        with self._borrow():
            return len(self._model.model.tokenize(text.encode("utf-8"), False, False))

    @contextmanager
    def _borrow(self) -> Iterator[None]:
        """Use the model from a caller's thread; ModelDown once close() has freed it."""
        with self._borrowers:
            if self._freed:
                raise _down_error("it was closed")
            self._borrowing += 1
        try:
            yield
        finally:
            with self._borrowers:
                self._borrowing -= 1
                self._borrowers.notify_all()

    def stats(self) -> dict[str, float]:
        return {**self.figures.snapshot(), "parallel": float(self.parallel),
                "streams": float(self.streams),
                "kv_cells": float(self._pool.kv_tokens),
                "kv_streams": float(self._model.plan.n_seq_max if self._split else 1)}  # fmt: skip

    @property
    def down_reason(self) -> str | None:
        """Why the engine takes no requests (its thread stopped, or closed); None if serving."""
        with self._wake:
            return self._down

    def check_serving(self) -> None:
        """Raise ModelDown now if the engine takes no requests (before work that would be lost)."""
        with self._wake:
            if self._down is not None or self._closing:
                raise _down_error(self._down or "it was closed")

    @contextmanager
    def admit(self, request: GenerationRequest) -> Iterator[None]:
        """Overloaded (429) now when `request` would wait past request_timeout_s, before the
        caller stores anything (its queueing checks again)."""
        with self._wake:
            self._check_wait()
        yield

    async def generate(self, request: GenerationRequest) -> AsyncIterator[str | GenerationDone]:
        """Stream text pieces, then one GenerationDone. Closing the stream cancels the run."""
        job = self._submit(request, prefill_only=False)
        try:
            while True:
                item = await job.out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, GenerationDone):
                    return
        finally:
            request.cancelled = True

    async def prefill(self, prompt_tokens: list[int], session_key: str) -> GenerationDone:
        """Put a session's prompt so far into the KV cache before its next message arrives."""
        request = GenerationRequest(prompt_tokens, GenerationOptions(max_tokens=1), session_key)
        job = self._submit(request, prefill_only=True)
        try:
            item = await job.out.get()
        finally:
            request.cancelled = True
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, GenerationDone)
        return item

    def close(self) -> None:
        """Finish the requests already accepted, stop the thread and free the model."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join()
        with self._borrowers:  # a request holding this engine (a reload swapped it) may tokenize
            self._freed = True
            self._borrowers.wait_for(lambda: self._borrowing == 0)
        llama_cpp.llama_batch_free(self._batch)
        self._model.close()
        if self._mover.tiers is not None:
            self._mover.tiers.close()

    # --- the caller's side ---------------------------------------------------------------

    def _submit(self, request: GenerationRequest, *, prefill_only: bool) -> Job:
        """Queue a request, or raise Overloaded when the waiting queue is full."""
        need = len(request.prompt_tokens) + (0 if prefill_only else request.options.max_tokens)
        if not request.prompt_tokens:
            raise GenerationError("empty prompt")
        if request.grammar and not prefill_only:  # refused here, not in a step other jobs share
            with self._borrow():  # the vocab is freed once the engine is closed
                check_grammar(self._vocab, request.grammar)
        if need > min(self._pool.kv_tokens, self.info.context_length):
            raise PayloadTooLarge(
                f"prompt of {len(request.prompt_tokens)} tokens plus max_tokens "
                f"{request.options.max_tokens} exceeds the context ({self.info.context_length})"
            )
        key = request.session_key or f"{ANONYMOUS_KEY}{next(_anonymous)}"
        job = Job(request, key, asyncio.get_running_loop(), asyncio.Queue(), prefill_only)
        with self._wake:
            if self._down is not None or self._closing:
                raise _down_error(self._down or "it was closed")
            if len(self._waiting) >= self.max_queue + self._free_slots():
                raise Overloaded(
                    f"{len(self._waiting)} requests are waiting (engine_max_queue); retry shortly",
                    retry_after_s=2,
                )
            if not prefill_only:
                self._check_wait()
            self._waiting.append(job)
            self._wake.notify()
        return job

    @property
    def streams(self) -> int:
        """Sequences decoded together now: `parallel` at most, fewer while a step with more
        would give each stream under `floor_tps` tokens a second (never under BASE_STREAMS)."""
        return self._chunks.streams(self.floor_tps, least_streams(self.parallel), self.parallel)

    def _free_slots(self) -> int:
        """Slots neither running nor promised (with the lock held)."""
        return max(0, self.streams - len(self._active))

    def _check_wait(self) -> None:
        """Overloaded when a newcomer behind the waiting queue would not finish before its
        deadline (with the lock held)."""
        ahead = len(self._waiting) + 1 - self._free_slots()
        check_wait(self._predictor, ahead, self.streams, self.timeout_s)

    # --- the engine thread ---------------------------------------------------------------

    def _run(self) -> None:
        """The thread: decode until closed. If anything escapes the loop the engine is down."""
        reason = "it was closed"
        try:
            self._loop()
        except BaseException as exc:
            reason = f"its decode thread failed: {type(exc).__name__}: {exc}"
            log.critical("the engine stopped: %s", reason, exc_info=True)
        finally:
            self._stop(reason)

    def _loop(self) -> None:
        """Steps until closed and idle.

        A CompanionError from a step (the KV cache full, a decode status) fails the requests in
        that batch and the engine goes on. Any other exception (a bug, or the native library
        failing) leaves the KV cache and the sequence bookkeeping in an unknown state, where
        going on could mix one session's context into another's: it escapes, and the engine
        stops (see _stop) until the model is reloaded.
        """
        while True:
            with self._wake:
                while not (self._waiting or self._active or self._closing):
                    self._wake.wait()
                if self._closing and not (self._waiting or self._active):
                    return
            try:
                self._admit()
                self._reap()
                if self._active:
                    self._shed_idle()
                    self._step()
            except CompanionError as exc:  # this batch failed: the error goes to its callers
                log.exception("decode step failed")
                self._fail_all(exc)
            self._publish()

    def _stop(self, reason: str) -> None:
        """Refuse new requests from now on; every request still here ends with ModelDown."""
        with self._wake:
            self._down = reason
            left = list(self._waiting) + self._active
            self._waiting.clear()
        self._active = []
        error = _down_error(reason)
        for job in left:
            self._reject(job, error)
        if left:
            log.error("%d requests ended: the model stopped (%s)", len(left), reason)

    def _admit(self) -> None:
        """Start waiting requests while decoding slots and KV cells allow (fair across users)."""
        with self._wake:
            waiting = list(self._waiting)
        live = []
        for job in waiting:
            if job.cancelled:
                self._dequeue(job)
                self._finish(job, "cancelled", started=False)
            else:
                live.append(job)
        streams = self.streams
        slots = streams - len(self._active)
        if slots <= 0 or not live:
            return
        if self._active:  # the ids that finished turns left are free for these (see _shed_idle)
            self._shed_idle(keep={job.key for job in live})
        for job in fair_pick(live, self._active, 2 * slots):
            if len(self._active) >= streams:
                break
            max_new = 0 if job.prefill_only else job.request.options.max_tokens
            job.restore_from, saved = self._mover.best_saved(job.key, job.request.prompt_tokens)
            plan = self._pool.acquire(job.key, job.request.prompt_tokens, max_new, saved)
            self._mover.save(self._pool.drain_evicted())  # copied out before the cells are reused
            if plan is None:
                if not self._active:
                    self._dequeue(job)
                    self._reject(job, GenerationError("the KV cache cannot hold this request"))
                continue
            self._dequeue(job)
            self._start(job, plan)

    def _dequeue(self, job: Job) -> None:
        with self._wake:
            self._waiting.remove(job)

    def _start(self, job: Job, plan: Plan) -> None:
        """Apply the cache plan and make `job` active (a failure here reaches it via _fail_all)."""
        job.seq, job.admitted = plan.seq, time.perf_counter()
        self._active.append(job)
        for seq in plan.evicted:
            llama_cpp.llama_memory_seq_rm(self._mem, seq, -1, -1)
        keep = plan.keep
        prompt = job.request.prompt_tokens
        self.figures.admitted(self._ledger.new_tokens(job.key, prompt))
        if plan.restore:
            keep = self._mover.restore(job.key, plan.seq, keep, prompt, job.restore_from)
            if keep == 0:  # nothing restored: the whole prompt is computed
                self._pool.entries[plan.seq].trim(0)
                self._pool.entries[plan.seq].reserve += plan.keep
        elif plan.copy_from is None:
            if not llama_cpp.llama_memory_seq_rm(self._mem, plan.seq, keep, -1):
                llama_cpp.llama_memory_seq_rm(self._mem, plan.seq, -1, -1)
                self._pool.entries[plan.seq].trim(0)
                keep = 0
        elif self._split:  # across streams only whole streams copy (at the next decode)
            llama_cpp.llama_memory_seq_rm(self._mem, plan.seq, -1, -1)
            llama_cpp.llama_memory_seq_cp(self._mem, plan.copy_from, plan.seq, -1, -1)
            llama_cpp.llama_memory_seq_rm(self._mem, plan.seq, keep, -1)
        else:
            llama_cpp.llama_memory_seq_rm(self._mem, plan.seq, -1, -1)
            llama_cpp.llama_memory_seq_cp(self._mem, plan.copy_from, plan.seq, 0, keep)
        if plan.pin is not None:
            llama_cpp.llama_memory_seq_rm(self._mem, plan.pin, -1, -1)
            llama_cpp.llama_memory_seq_cp(self._mem, plan.copy_from, plan.pin, 0, keep)
        if not plan.restore or job.restore_from != job.key:
            self._mover.discard(job.key)  # a state saved earlier is stale now
        job.pos, job.reused, job.pending = keep, keep, list(prompt[keep:])
        if not job.prefill_only:
            job.sampler = Sampler(
                job.request.options, self._n_vocab, vocab=self._vocab, grammar=job.request.grammar
            )
            job.detok = Detokenizer(self._vocab)
            job.text = StopText(job.request.options.stop)
            job.logprobs = [] if job.request.logprobs is not None else None

    def _shed_idle(self, keep: Collection[str] = ()) -> None:
        """While sequences decode, idle sessions wait in host RAM, not in the KV cells.

        With one unified KV buffer, every token of every step attends over the whole used
        cell range (llama.cpp's n_kv: the highest cell in use, padded to 256), whichever
        sequences the cells belong to: on CPU each masked cell still costs a check per head
        and layer. Measured with the tiny model on 2 cores: 8-stream decode steps took 1.45x
        as long, and steps carrying a prompt chunk 1.63x, with 12,000 cells of other
        sequences in the cache, about 0.2 us per token and cell (docs/engine.md). Saving a
        session's state and restoring it costs about 20 us per cell (16 + 3 ms for 1,024
        tokens), as much as ~100 tokens of others attending past its cells: an idle session
        leaves the cells as soon as others decode (its next turn restores it); alone, a
        session keeps them.
        Only with a host-RAM tier: without one, leaving would mean a full prefill later.
        Also before admission (`keep`: the waiting sessions, whose own sequence is reused):
        with split streams a new sequence takes the lowest free id, and llama.cpp decodes a
        step in one ubatch per run of consecutive ids (~10 ms each). Shed only after
        admission, a finished turn's id was still taken, so the next request took a spare id
        past the others: under bench load 79 % of the steps took 1-3 ubatches more than needed.
        """
        if self._mover.holds_in_ram and self._pool.shed_idle(keep):
            self._mover.save(self._pool.drain_evicted())

    def _reap(self) -> None:
        """End the active requests whose callers left; their slots are free for this step."""
        for job in [j for j in self._active if j.cancelled]:
            self._finish(job, "cancelled")

    def _step(self) -> None:
        """One llama_decode over every active sequence; then sample and deliver."""
        parts = self._fill_batch()
        started = time.perf_counter()
        rc = llama_cpp.llama_decode(self._ctx, self._batch)
        self._pool.copied()  # llama_decode applied the pending copies between streams first
        while rc == 1:  # no KV slot: drop a cached session and try again
            seq = self._pool.evict_one()
            if seq is None:
                raise GenerationError("the KV cache is full")
            self._mover.save(self._pool.drain_evicted())
            llama_cpp.llama_memory_seq_rm(self._mem, seq, -1, -1)
            rc = llama_cpp.llama_decode(self._ctx, self._batch)
        if rc != 0:
            raise GenerationError(f"llama_decode failed with status {rc}")
        elapsed = time.perf_counter() - started
        prompt_tokens, generated = 0, 0
        for job, tokens, out_index, is_prompt in parts:
            job.pos += len(tokens)
            prompt_tokens += len(tokens) if is_prompt else 0
            self._pool.entries[job.seq].append(tokens)
            if out_index >= 0:
                generated += self._sample(job, out_index)
            elif job.prefill_only and not job.pending:
                self._finish(job, "prefilled")
        decoding = sum(1 for part in parts if not part[3])
        self._chunks.observe(decoding, prompt_tokens, elapsed, len(parts))  # the next steps
        self.figures.step(prompt_tokens, generated, len(parts), int(self._batch.n_tokens))

    def _fill_batch(self) -> list[tuple[Job, list[int], int, bool]]:
        """Decode tokens first (one per generating sequence), then prompt chunks in the budget.

        Returns (job, tokens added, batch index of its logits or -1, whether they are prompt)
        for every job in the batch.
        """
        picked: list[tuple[Job, list[int], bool, bool]] = []  # job, tokens, logits, prompt
        for job in self._active:
            if job.next_token is not None:
                picked.append((job, [job.next_token], True, False))
                job.next_token = None
        n = len(picked)
        waiting = [j for j in self._active if j.pending]
        waiting.sort(key=lambda j: (j.prefill_only, j.admitted))  # replies before predictions
        replies = sum(1 for j in waiting if not j.prefill_only)
        room = self._chunks.prompt_tokens(n, replies)  # running streams' gaps stay short
        for job, take in zip(waiting, shares([len(j.pending) for j in waiting], room), strict=True):
            if take <= 0:
                continue
            chunk, job.pending = job.pending[:take], job.pending[take:]
            picked.append((job, chunk, not job.pending and not job.prefill_only, True))
            n += take
        if self._split:  # llama.cpp splits a step into ubatches of consecutive sequence ids
            picked.sort(key=lambda part: part[0].seq)
        batch, n = self._batch, 0
        parts: list[tuple[Job, list[int], int, bool]] = []
        for job, tokens, wants, is_prompt in picked:
            for i, token in enumerate(tokens):
                _put(batch, n + i, token, job.pos + i, job.seq, wants and i == len(tokens) - 1)
            parts.append((job, tokens, n + len(tokens) - 1 if wants else -1, is_prompt))
            n += len(tokens)
        batch.n_tokens = n
        return parts

    def _sample(self, job: Job, index: int) -> int:
        """Sample `job`'s next token from batch position `index`; deliver its text. 1 if kept."""
        assert job.sampler is not None and job.detok is not None and job.text is not None
        token = job.sampler.sample(self._ctx, index)
        if job.logprobs is not None:
            job.logprobs.append(self._logprob(job, index, token))
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._finish(job, "stop")
            return 0
        job.generated += 1
        job.first_at = job.first_at or time.perf_counter()
        piece = job.text.add(job.detok.piece(token))
        if piece:
            job.send(piece)
        if job.text.stopped:
            self._finish(job, "stop")
        elif job.generated >= job.request.options.max_tokens:
            self._finish(job, "length")
        else:
            job.next_token = token
        return 1

    def _logprob(self, job: Job, index: int, token: int) -> TokenLogprob:
        """The sampled token's log-probability and the request's number of alternatives."""
        top = job.request.logprobs or 0
        value, best = token_logprobs(self._ctx, index, token, self._n_vocab, top)

        def piece(t: int) -> tuple[str, tuple[int, ...]]:
            raw = token_bytes(self._vocab, t)
            return raw.decode("utf-8", errors="replace"), tuple(raw)

        text, raw = piece(token)
        return TokenLogprob(text, raw, value, tuple((*piece(t), lp) for t, lp in best))

    def _finish(self, job: Job, finish: str, *, started: bool = True) -> None:
        """Send the rest of the text and the GenerationDone; keep the sequence for the session."""
        if job.text is not None:
            tail = job.text.finish()
            if tail and finish != "cancelled":
                job.send(tail)
        job.free()
        if started:
            self._active.remove(job)
            self._ledger.ended(job.key, self._pool.entries[job.seq].tokens)
            self._pool.release(job.seq)
            if finish in ("stop", "length"):
                self._predictor.observe(time.perf_counter() - job.admitted)
        done = job.done(finish)
        self.figures.finished(done, job.prefill_only)
        job.send(done)

    def _reject(self, job: Job, error: CompanionError) -> None:
        self.figures.failed()
        job.free()
        job.send(error)

    def _fail_all(self, exc: Exception) -> None:
        """After a failed step: every active request gets the error; their sequences are cleared."""
        error = (
            exc if isinstance(exc, CompanionError) else GenerationError(f"generation failed: {exc}")
        )
        for job in list(self._active):
            self._active.remove(job)
            llama_cpp.llama_memory_seq_rm(self._mem, job.seq, -1, -1)
            self._pool.release(job.seq, keep=False)
            self._reject(job, error)

    def _publish(self) -> None:
        """Refresh the gauges stats() reads from other threads."""
        with self._wake:
            depth = len(self._waiting)
        gauges = {
            "active_sequences": float(len(self._active)),
            "queue_depth": float(depth),
            "kv_used_ratio": round(self._pool.used_cells() / self._pool.kv_tokens, 4),
            "kv_sequences": float(len(self._pool.entries)),
        }
        if not self._active:
            gauges.update(batch_size=0.0, batch_sequences=0.0)
        self.figures.publish(gauges, {**self._pool.counters, **self._mover.stats()})


def _down_error(reason: str) -> ModelDown:
    """The error every request gets once the engine has stopped."""
    return ModelDown(
        f"the model stopped ({reason}) and serves no requests; restart the server or reload "
        "the model (POST /api/v1/models/reload)"
    )


def _put(batch: Any, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
    """Write one token into slot `i` of a llama_batch."""
    batch.token[i] = token
    batch.pos[i] = pos
    batch.n_seq_id[i] = 1
    batch.seq_id[i][0] = seq
    batch.logits[i] = logits
