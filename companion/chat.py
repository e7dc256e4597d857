"""The chat service (the spec's EnhancedLLMHandler): one turn from message to stored reply.

A turn is a short sequence of named steps over a `Turn` (companion/turn.py): validate, session,
route, recall, context, cache, generate, store, learn. Its state goes through the backends'
interfaces: the store (SQLite or PostgreSQL), the response cache (its entries in process or in
Redis), the memory (personal.py) and the session lock (companion/shared/locks.py: in process,
or in Redis for every instance), which `in_turn` alone takes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, nullcontext
from dataclasses import replace
from typing import Any, TypeVar

from sqlalchemy.exc import OperationalError

from companion.anchors import Anchors
from companion.cache import Probe, ResponseCache
from companion.cache.base import CacheEntry, CacheHit
from companion.cached_turn import CachedTurns, cached_result, cached_timings
from companion.config import Settings
from companion.context import BuiltContext, build_context, one_line
from companion.domain import ChatResult, GenerationOptions, Message, Usage
from companion.embed.base import Embedder, Vector
from companion.errors import Overloaded, StorageError
from companion.llm.base import Engine, GenerationDone, GenerationRequest
from companion.llm.routing import ModelRouter, Route
from companion.memory.base import Recalled
from companion.persona.prompt import system_prompt
from companion.personal import Personal, TurnNotes, memory_line
from companion.shared.locks import LocalLocks, SessionLocks
from companion.stats import PerformanceStats
from companion.storage import Store
from companion.turn import (
    DEFAULT_USER,
    Turn,
    admitted,
    generate,
    options_from,
    title_of,
    validate_message,
)

log = logging.getLogger("companion.chat")

E = TypeVar("E")
ANCHORS = 50_000  # notes blocks kept for later prompts (a few hundred bytes each)

__all__ = ["DEFAULT_USER", "Companion", "options_from", "session_prefix"]


def session_prefix(
    engine: Engine, system: str, history: list[Message], budget_tokens: int
) -> list[int]:
    """The tokens every next turn of a session starts with: persona, then the history that fits."""
    head = [{"role": "system", "content": system}]
    turns = [{"role": m.role, "content": m.text} for m in history]
    for start in range(len(turns) + 1):
        if start < len(turns) and turns[start]["role"] == "assistant":
            continue
        text = engine.render_chat(head + turns[start:], add_generation_prompt=False)
        tokens = engine.tokenize(text)
        if len(tokens) <= budget_tokens:
            return tokens
    return engine.tokenize(engine.render_chat(head, add_generation_prompt=False))


class Companion:
    """Builds the context, generates, stores the exchange and keeps the figures."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        engine: Engine,
        *,
        personal: Personal | None = None,
        cache: ResponseCache | None = None,
        embedder: Embedder | None = None,
        router: ModelRouter | None = None,
        locks: SessionLocks | None = None,
    ) -> None:
        self.router = router  # model switching: a small engine beside `engine` (None: off)
        self.routing_note = "model_routing is off"  # why switching is off, when it is
        self.cache = cache  # None: caching off
        self.embedder = embedder  # one vector per message, shared by cache and memory
        self.settings = settings
        self.store = store
        self.engine = engine
        self.personal = personal  # persona, memories, session summary (None: the plain prompt)
        self.stats = PerformanceStats()
        # one turn at a time per session (held in Redis for every instance with redis_url)
        self.locks = locks or LocalLocks(settings.request_timeout_s)
        self.after_tasks: set[asyncio.Task[None]] = set()  # caching and learning, after replies
        # each generated turn's notes block, by its user message id, put back in later prompts
        # at the same place (per process; with redis_url in Redis too, for every instance:
        # runtime.py sets RedisAnchors)
        self.anchors: Anchors[int, str] = Anchors(ANCHORS)
        self.cached_turns = CachedTurns(  # a new conversation's cache hit, the short way
            settings, store, cache, personal, self.stats, lambda: self.engine
        )

    def not_in_prompt(
        self, recalled: list[Recalled], history: list[Message], blocks: list[str] | None = None
    ) -> list[Recalled]:
        """What the prompt does not hold already: no turn of the history it carries, no note
        that an earlier turn's notes block (anchored in that history) says. `blocks`: those
        blocks when the caller has read them already (else they are read from the anchors)."""
        said = {m.id for m in history}
        if blocks is None:
            blocks = [b for m in history if m.role == "user" and (b := self.anchors.get(m.id))]
        return [
            r for r in recalled
            if not (r.is_episode and getattr(r.memory, "message_id", None) in said)
            and not any(f"- {one_line(memory_line(r))}" in b for b in blocks)
        ]  # fmt: skip

    def swap_engine(self, engine: Engine) -> Engine:
        """Serve new requests from `engine`; returns the old one for the caller to close."""
        old, self.engine = self.engine, engine
        return old

    def choose_route(self, text: str, history: list[Message]) -> Route:
        """The engine for this message: the router's choice, else the one engine."""
        if self.router is None:
            return Route(self.engine, "only", (f"one model ({self.routing_note})",))
        return self.router.choose(self.engine, text, history)

    async def route(
        self, user_id: str | None, message: str, session_id: str | None = None
    ) -> Route:
        """Choose the model for a message ahead of chat_stream (pass it on as `route=`)."""
        text = self.validate(message)
        if self.router is None or session_id is None:
            return self.choose_route(text, [])
        history = await asyncio.to_thread(
            self.store.recent_messages, session_id, self.settings.history_messages,
            step=self.settings.history_step,
        )
        return self.choose_route(text, history)

    async def chat(
        self,
        user_id: str | None,
        message: str,
        session_id: str | None = None,
        *,
        use_cache: bool = True,
        **options: Any,
    ) -> ChatResult:
        """One complete reply (the streamed turn, collected)."""
        stream = self.chat_stream(user_id, message, session_id, use_cache=use_cache, **options)
        result = None
        async for event in stream:  # to its end: the turn caches and learns after its result
            if isinstance(event, ChatResult):
                result = event
        if result is None:
            raise AssertionError("chat_stream ended without a result")
        return result

    def chat_stream(
        self,
        user_id: str | None,
        message: str,
        session_id: str | None = None,
        *,
        use_cache: bool = True,
        route: Route | None = None,
        **options: Any,
    ) -> AsyncIterator[str | ChatResult]:
        """Text pieces as they are generated, then the ChatResult.

        A cache hit (unless `use_cache` is False) yields the cached reply as one piece; the
        exchange is still stored, marked cached.

        The user message is stored before generating; the reply after. If the stream is closed
        early, fails or passes its deadline, the user message (and any partial reply) is marked
        interrupted or failed, never left pending.

        One turn at a time per session (`in_turn`): a message to a session that is answering
        another waits for it (up to request_timeout_s, then 409 session_busy), so each reply
        follows the message it answers.
        """
        return self.in_turn(
            session_id,
            lambda: self.turn_steps(
                user_id, message, session_id, use_cache=use_cache, route=route, **options
            ),
        )

    async def in_turn(
        self, session_id: str | None, work: Callable[[], AsyncIterator[E]]
    ) -> AsyncIterator[E]:
        """`work`'s events, run holding the session's turn: the one place the session lock is
        taken (chat, regenerate, edit and continue all come through here). A new session
        (None) has no other turn to wait for."""
        held = nullcontext() if session_id is None else self.locks.hold(session_id)
        async with held, aclosing(work()) as events:  # type: ignore[type-var]
            async for event in events:
                yield event

    async def turn_steps(
        self,
        user_id: str | None,
        message: str,
        session_id: str | None,
        *,
        use_cache: bool = True,
        route: Route | None = None,
        **options: Any,
    ) -> AsyncIterator[str | ChatResult]:
        """One turn, its session already held: the steps, in order."""
        turn = self.validate_turn(user_id, message, session_id, use_cache, route, options)
        if turn.session_id is None:  # a first message: a shared exact hit needs no context work
            result = await self.cached_first_turn(turn)
            if result is not None:
                yield result.response
                yield result
                return
        await self.session_step(turn)
        self.route_step(turn)
        await self.recall_step(turn)
        await self.context_step(turn)
        if await self.cache_step(turn):
            assert turn.hit is not None
            yield turn.hit.entry.response
            yield await self.serve_hit(turn)
            return
        async with aclosing(self.generate_step(turn)) as pieces:
            async for piece in pieces:
                yield piece
        result = await self.store_step(turn)
        try:
            yield result  # the reply is out: caching and learning do not delay it
        finally:
            await self.after_reply(turn)

    # the steps

    def validate_turn(
        self,
        user_id: str | None,
        message: str,
        session_id: str | None,
        use_cache: bool,
        route: Route | None,
        options: dict[str, Any],
    ) -> Turn:
        """validate: the message (422/413) and a serving model (503 before anything is made)."""
        text = self.validate(message)
        self.engine.check_serving()
        return Turn(user_id or DEFAULT_USER, text, session_id, use_cache, options, route=route)

    async def cached_first_turn(self, turn: Turn) -> ChatResult | None:
        """cache, the short way: a new conversation's shared exact hit (cached_turn.py)."""
        turn.route = turn.route or self.choose_route(turn.text, [])  # no history yet
        return await self.cached_turns.serve(turn)

    async def session_step(self, turn: Turn) -> None:
        """session: the session (created on a first message) and its recent history."""
        turn.session = await asyncio.to_thread(
            self.store.create_session, turn.user_id, turn.session_id, title_of(turn.text)
        )
        turn.history = await asyncio.to_thread(
            self.store.recent_messages, turn.session.id, self.settings.history_messages,
            step=self.settings.history_step,
        )

    def route_step(self, turn: Turn) -> None:
        """route: the model for this message (model switching, llm/routing.py)."""
        turn.route = turn.route or self.choose_route(turn.text, turn.history)

    async def recall_step(self, turn: Turn) -> None:
        """recall: the message's vector (once: the cache and the memory share it), then the
        persona, the recalled memories and the summary, and the persona's sampling."""
        assert turn.session is not None
        turn.vector = await self.embed(turn.text)
        if self.personal is None:
            return
        notes = await asyncio.to_thread(
            self.personal.prepare, turn.user_id, turn.session.id, turn.text, turn.vector
        )
        self.stats.metrics.memory_recall.observe(notes.timings["memory_total_ms"] / 1000)
        kept = self.not_in_prompt(notes.memories, turn.history)
        turn.notes = notes if len(kept) == len(notes.memories) else replace(notes, memories=kept)
        asked = {k: v for k, v in turn.options.items() if v is not None}
        turn.options = {**notes.sampling, **asked}

    async def context_step(self, turn: Turn) -> None:
        """context: the prompt (persona, summary, memories, the history that fits)."""
        notes, engine = turn.notes, turn.engine
        turn.opts = options_from(self.settings, **turn.options)
        started = time.perf_counter()
        turn.built = await asyncio.to_thread(  # tokenizing a long history: not on the event loop
            build_context,
            engine,
            system_prompt=notes.system_prompt if notes else self.settings.system_prompt,
            history=turn.history,
            message=turn.text,
            budget_tokens=engine.info.context_length - turn.opts.max_tokens,
            memories=notes.lines if notes else (),
            summary=notes.summary if notes else None,
            personal=notes.personal if notes else False,
            anchored=self.anchors,
        )
        turn.context_ms = (time.perf_counter() - started) * 1000

    async def cache_step(self, turn: Turn) -> bool:
        """cache: ask the response cache; True on a hit (turn.hit)."""
        assert turn.opts is not None and turn.built is not None
        turn.probe, turn.hit = await self.lookup(
            turn.user_id, turn.text, turn.opts, turn.built, turn.vector, turn.use_cache,
            turn.engine,
        )  # fmt: skip
        return turn.hit is not None

    async def serve_hit(self, turn: Turn) -> ChatResult:
        """cache, on a hit: store the exchange as a cached one and let the memory learn."""
        assert turn.hit is not None and turn.session is not None and turn.route is not None
        timings = {"context_ms": round(turn.context_ms, 2), **self._memory_timings(turn)}
        result = await self.serve_cached(
            turn.user_id, turn.session.id, turn.text, turn.hit, turn.notes, timings, turn.started
        )
        result.extra["route"] = turn.route.to_dict()
        return result

    async def generate_step(self, turn: Turn) -> AsyncIterator[str]:
        """generate: admission (429 before anything is stored when the model cannot answer in
        time), store the user message (pending), then the reply's pieces as they come; a
        stream that does not complete marks the exchange interrupted or failed."""
        assert turn.session is not None and turn.opts is not None and turn.built is not None
        engine = turn.engine
        if engine is not self.engine:  # the routed model (the main one was checked on entry)
            engine.check_serving()
        request = GenerationRequest(
            turn.built.prompt_tokens, turn.opts, session_key=turn.session.id, user=turn.user_id
        )
        created = turn.session.id if turn.session_id is None else None
        async with admitted(engine, request, self.store, created):  # 429: nothing stays
            asked = turn.asked = await asyncio.to_thread(
                self.store.add_message,
                turn.session.id,
                "user",
                turn.text,
                status="pending",
                token_count=engine.count_tokens(turn.text),
            )
            if (block := turn.built.notes) is not None:
                self.anchors.put(asked.id, block)

            def settle(status: str, pieces: list[str]) -> None:
                self.fail(asked.id, status, pieces, engine.info.name)

            events = generate(engine, request, self.settings.request_timeout_s, settle)
            async with aclosing(events):
                async for event in events:
                    if isinstance(event, GenerationDone):
                        turn.done = event
                    else:
                        yield event

    async def store_step(self, turn: Turn) -> ChatResult:
        """store: the reply (the exchange complete)."""
        done, asked, engine = turn.done, turn.asked, turn.engine
        assert done is not None and asked is not None and turn.session is not None
        timings = {
            "context_ms": round(turn.context_ms, 2),
            **self._memory_timings(turn),
            **done.timings,
            "total_ms": round((time.perf_counter() - turn.started) * 1000, 2),
        }
        reply = await asyncio.to_thread(
            self.store.complete_exchange,
            asked.id,
            done.text,
            user_tokens=asked.token_count,
            reply_tokens=done.completion_tokens,
            model=engine.info.name,
            cached=False,
            timings=timings,
            finish_reason=done.finish_reason,
        )
        turn.timings = timings
        return self._result(turn, reply.id, timings)

    async def after_reply(self, turn: Turn) -> None:
        """After the result is out, still inside the session's turn: the reply into the cache,
        the memory learns, the figures count. It runs to its end even when the client leaves
        (the caller's cancellation only stops the wait; the session's next turn may then start
        before the memory has learned from this one)."""
        task = asyncio.create_task(self._after_reply(turn))
        self.after_tasks.add(task)
        task.add_done_callback(self.after_tasks.discard)
        await asyncio.shield(task)

    async def _after_reply(self, turn: Turn) -> None:
        try:
            await self._cache_reply(turn)
            await self.learn_step(turn)
        except Exception:  # the reply is stored and sent; only what follows it failed
            log.exception("caching or learning after a reply failed (the reply is stored)")

    async def settle(self) -> None:
        """Wait for every reply's caching and learning (at shutdown)."""
        while self.after_tasks:
            await asyncio.gather(*list(self.after_tasks), return_exceptions=True)

    async def learn_step(self, turn: Turn) -> None:
        """learn: the memory learns from the user's words; the figures count the turn."""
        done, asked, built = turn.done, turn.asked, turn.built
        assert done is not None and asked is not None and built is not None
        assert turn.session is not None
        if self.personal is not None and turn.notes is not None:
            await asyncio.to_thread(
                self.personal.after_turn, turn.user_id, turn.session.id, turn.text, asked.id,
                turn.notes,
            )  # fmt: skip
        timings = turn.timings
        self.stats.record_request(
            response_ms=timings["total_ms"],
            ttft_ms=timings.get("time_to_first_token_ms", 0.0),
            tokens_per_s=timings.get("tokens_per_second", 0.0),
            prompt=done.prompt_tokens,
            completion=done.completion_tokens,
        )
        log.info(
            "chat user=%s session=%s: %d prompt + %d reply tokens in %.0f ms "
            "(history %d, dropped %d)",
            turn.user_id,
            turn.session.id,
            done.prompt_tokens,
            done.completion_tokens,
            timings["total_ms"],
            built.history_used,
            built.history_dropped,
        )

    # the steps' parts

    async def _cache_reply(self, turn: Turn) -> None:
        """Keep a complete reply in the cache (a fault there only leaves it uncached)."""
        done, probe = turn.done, turn.probe
        assert done is not None
        if probe is None or not done.text.strip() or done.finish_reason not in ("stop", "length"):
            return
        assert self.cache is not None
        try:
            await asyncio.to_thread(
                self.cache.store,
                probe,
                done.text,
                model=turn.engine.info.name,
                prompt_tokens=done.prompt_tokens,
                completion_tokens=done.completion_tokens,
                finish_reason=done.finish_reason,
                user_id=turn.user_id,
            )
        except (StorageError, OperationalError) as exc:  # the reply is stored; only not cached
            self.cache.count_error()
            log.warning("caching a reply failed (the reply itself is stored): %s", exc)

    @staticmethod
    def _memory_timings(turn: Turn) -> dict[str, float]:
        return turn.notes.timings if turn.notes else {}

    @staticmethod
    def _result(turn: Turn, message_id: int, timings: dict[str, float]) -> ChatResult:
        """A generated turn's ChatResult."""
        done, built, notes, route = turn.done, turn.built, turn.notes, turn.route
        assert done is not None and built is not None and route is not None
        assert turn.session is not None
        used = notes.memories[: built.memories_used] if notes else []
        return ChatResult(
            response=done.text,
            session_id=turn.session.id,
            user_id=turn.user_id,
            cached=False,
            model=turn.engine.info.name,
            usage=Usage(done.prompt_tokens, done.completion_tokens),
            timings=timings,
            finish_reason=done.finish_reason,
            message_id=message_id,
            extra={
                "route": {**route.to_dict(), **({"server": done.server} if done.server else {})},
                "context": built.messages,  # the prompt as sent, for tests and debugging
                "memory_ids": [r.memory.id for r in used if not r.is_episode],
                "memories_used": [
                    {
                        "id": r.memory.id,
                        "type": "episode" if r.is_episode else "fact",
                        "text": r.memory.text,
                        "score": round(r.score, 4),
                        "reasons": r.reasons,
                    }
                    for r in used
                ],
            },
        )

    async def open_session(
        self, user_id: str | None, session_id: str | None = None
    ) -> dict[str, Any]:
        """Prefill a session's context so far (persona, history) into the engine's KV cache.

        Called when a chat page opens or a session resumes, so the first reply starts at once.
        A busy engine skips it (prefilled: false); the session is created if it is new.
        """
        user_id = user_id or DEFAULT_USER
        engine = self.engine
        session = await asyncio.to_thread(self.store.create_session, user_id, session_id)
        history = await asyncio.to_thread(
            self.store.recent_messages, session.id, self.settings.history_messages,
            step=self.settings.history_step,
        )
        system = await asyncio.to_thread(self.system_prompt_for, user_id)
        budget = engine.info.context_length - self.settings.max_tokens
        tokens = session_prefix(engine, system, history, budget)
        result: dict[str, Any] = {
            "session_id": session.id,
            "user_id": user_id,
            "prefix_tokens": len(tokens),
            "prefilled": False,
        }
        if self.router is not None:  # model switching: the first message may go to either model
            small = self.router.small
            small_budget = small.info.context_length - self.settings.max_tokens
            result["small_model_prefilled"] = (
                await self._prefill(
                    small, session_prefix(small, system, history, small_budget), session.id
                )
                is not None
            )
        done = await self._prefill(engine, tokens, session.id)
        if done is None:
            return result
        return {
            **result,
            "prefilled": True,
            "reused_tokens": int(done.timings["reused_tokens"]),
            "prefill_ms": done.timings["generation_ms"],
        }

    async def _prefill(
        self, engine: Engine, tokens: list[int], session_key: str
    ) -> GenerationDone | None:
        """Prefill one engine; None when it is busy or too slow."""
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                return await engine.prefill(tokens, session_key)
        except (Overloaded, TimeoutError):
            return None

    def system_prompt_for(self, user_id: str) -> str:
        """The system prompt this user's next turn will start with."""
        if self.personal is None:
            return self.settings.system_prompt
        persona, relationship = self.personal.personas.active(user_id)
        return system_prompt(persona, relationship, user_id)

    def get_performance_stats(self) -> dict[str, Any]:
        """The spec's figures plus the engine's and the loaded model's."""
        info = self.engine.info
        return {
            **self.stats.snapshot(),
            "model": info.name,
            "model_size": info.size,
            "model_load_time": info.load_time_s,
            "model_rss_mb": info.rss_added_mb,
            "engine": self.engine.stats(),
            "routing": self.router.stats(self.engine)
            if self.router is not None
            else {"enabled": False, "reason": self.routing_note},
            "memory": self.personal.stats() if self.personal is not None else {},
            "cache": self.cache.stats() if self.cache is not None else {"enabled": False},
        }

    async def embed(self, text: str) -> Vector | None:
        """The message's vector (memoised by text in the embedder), or None without one."""
        if self.embedder is None:
            return None
        return await asyncio.to_thread(self.embedder.embed_one, text)

    async def lookup(
        self,
        user_id: str,
        text: str,
        opts: GenerationOptions,
        built: BuiltContext,
        vector: Vector | None,
        use_cache: bool,
        engine: Engine,
    ) -> tuple[Probe | None, CacheHit | None]:
        """Ask the cache; the probe (None when caching is off or bypassed) keys the store later."""
        if self.cache is None or not self.settings.enable_caching:
            return None, None
        if not use_cache:
            self.cache.count_bypass()
            return None, None
        info = engine.info  # the routed model: a reply is never served across models
        probe = self.cache.probe(
            user_id,
            built.messages[:-1],
            text,
            options=opts,
            model_name=info.name,
            model_path=info.path,
            history_used=built.history_used,
            personal=built.personal,
        )
        if vector is not None:
            probe = replace(probe, vector=vector)
        try:
            hit, probe = await asyncio.to_thread(self.cache.lookup, probe)
        except (StorageError, OperationalError) as exc:  # a cache fault is a miss, not a failure
            self.cache.count_error()
            log.warning("cache lookup failed (served as a miss): %s", exc)
            return probe, None
        last_layer = "semantic" if self.cache.semantic is not None else "exact"
        self.stats.record_cache(hit is not None, hit.layer if hit else last_layer)
        return probe, hit

    async def serve_cached(
        self,
        user_id: str,
        session_id: str,
        text: str,
        hit: CacheHit,
        notes: TurnNotes | None,
        timings: dict[str, float],
        started: float,
    ) -> ChatResult:
        """Store the exchange as a cached one, let the memory learn from it, count it."""
        timings = cached_timings(hit, started, timings)
        total_ms = timings["total_ms"]
        reply = await asyncio.to_thread(
            self._store_cached, user_id, session_id, text, hit.entry, notes, timings
        )
        self.stats.record_request(
            response_ms=total_ms, ttft_ms=total_ms, tokens_per_s=0.0, prompt=0, completion=0
        )
        return cached_result(hit, session_id, user_id, timings, reply.id)

    def _store_cached(
        self,
        user_id: str,
        session_id: str,
        text: str,
        entry: CacheEntry,
        notes: TurnNotes | None,
        timings: dict[str, float],
    ) -> Message:
        """Store a cached exchange and let the memory learn from it (one thread hop)."""
        user_msg = self.store.add_message(
            session_id, "user", text, status="pending", token_count=self.engine.count_tokens(text)
        )
        reply = self.store.complete_exchange(
            user_msg.id,
            entry.response,
            user_tokens=user_msg.token_count,
            reply_tokens=entry.completion_tokens,
            model=entry.model,
            cached=True,
            timings=timings,
            finish_reason=entry.finish_reason,
        )
        if self.personal is not None and notes is not None:
            self.personal.after_turn(user_id, session_id, text, user_msg.id, notes)
        return reply

    def validate(self, message: str) -> str:
        """The message, stripped (422 when empty, 413 past max_message_chars)."""
        return validate_message(self.settings, message)

    def fail(self, user_message_id: int, status: str, pieces: list[str], model: str) -> None:
        """Mark the exchange failed or interrupted (sync: may run while the generator closes)."""
        self.stats.record_error(interrupted=status == "interrupted")
        self.store.fail_exchange(
            user_message_id, status, "".join(pieces) or None, model=model, timings={}
        )
        log.warning("exchange %d ended %s after %d pieces", user_message_id, status, len(pieces))
