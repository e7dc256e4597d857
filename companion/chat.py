"""The chat service (the spec's EnhancedLLMHandler): one turn from message to stored reply."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import nullcontext
from dataclasses import replace
from typing import Any

from sqlalchemy.exc import OperationalError

from companion.cache import Probe, ResponseCache
from companion.cache.base import CacheEntry, CacheHit
from companion.cached_turn import CachedTurns, cached_result, cached_timings
from companion.config import Settings
from companion.context import BuiltContext, build_context
from companion.domain import ChatResult, GenerationOptions, Message, Usage
from companion.embed.base import Embedder, Vector
from companion.errors import (
    DeadlineExceeded,
    InputError,
    Overloaded,
    PayloadTooLarge,
    StorageError,
)
from companion.llm.base import Engine, GenerationDone, GenerationRequest
from companion.llm.routing import ModelRouter, Route
from companion.persona.prompt import system_prompt
from companion.personal import Personal, TurnNotes
from companion.stats import PerformanceStats
from companion.storage import Store
from companion.turns import SessionTurns

log = logging.getLogger("companion.chat")

DEFAULT_USER = "default"


def options_from(settings: Settings, **overrides: Any) -> GenerationOptions:
    """Generation options from the settings, with per-request overrides (None = keep)."""
    base = GenerationOptions(
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=settings.top_k,
        repeat_penalty=settings.repeat_penalty,
        stop=tuple(settings.stop),
        seed=settings.seed,
    )
    changes = {k: (tuple(v) if k == "stop" else v) for k, v in overrides.items() if v is not None}
    return replace(base, **changes)


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
        self.cached_turns = CachedTurns(self)  # a new conversation's cache hit, the short way
        self.turns = SessionTurns()  # one turn at a time per session

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
        text = self._validate(message)
        if self.router is None or session_id is None:
            return self.choose_route(text, [])
        history = await asyncio.to_thread(
            self.store.recent_messages, session_id, self.settings.history_messages
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
        async for event in stream:
            if isinstance(event, ChatResult):
                return event
        raise AssertionError("chat_stream ended without a result")

    async def chat_stream(
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

        One turn at a time per session (turns.py): a message to a session that is answering
        another waits for it (up to request_timeout_s, then 409 session_busy), so each reply
        follows the message it answers.
        """
        wait = (
            nullcontext()
            if session_id is None  # a new session: no other turn can be in it
            else self.turns.hold(session_id, self.settings.request_timeout_s)
        )
        async with wait:
            turn = self._turn(user_id, message, session_id, use_cache=use_cache, route=route,
                              **options)
            try:
                async for event in turn:
                    yield event
            finally:
                await turn.aclose()  # type: ignore[attr-defined]

    async def _turn(
        self,
        user_id: str | None,
        message: str,
        session_id: str | None,
        *,
        use_cache: bool,
        route: Route | None,
        **options: Any,
    ) -> AsyncIterator[str | ChatResult]:
        """One turn (chat_stream's work, inside the session's turn)."""
        started = time.perf_counter()
        user_id = user_id or DEFAULT_USER
        text = self._validate(message)
        self.engine.check_serving()  # a stopped model: 503 before any session or message is made
        if session_id is None:  # a first message: a shared exact hit needs no context work
            route = route or self.choose_route(text, [])  # a new session has no history
            result = await self.cached_turns.serve(
                user_id,
                text,
                _title(text),
                use_cache=use_cache,
                engine=route.engine,
                options=options,
                started=started,
                route_info=route.to_dict(),
            )
            if result is not None:
                yield result.response
                yield result
                return
        session = await asyncio.to_thread(
            self.store.create_session, user_id, session_id, _title(text)
        )
        history = await asyncio.to_thread(
            self.store.recent_messages, session.id, self.settings.history_messages
        )
        route = route or self.choose_route(text, history)  # model switching (llm/routing.py)
        engine = route.engine
        vector = await self._embed(text)  # once per request: the cache and the memory share it
        notes = None
        if self.personal is not None:
            notes = await asyncio.to_thread(
                self.personal.prepare, user_id, session.id, text, vector
            )
            self.stats.metrics.memory_recall.observe(notes.timings["memory_total_ms"] / 1000)
            options = {**notes.sampling, **{k: v for k, v in options.items() if v is not None}}
        opts = options_from(self.settings, **options)
        ctx_start = time.perf_counter()
        budget = engine.info.context_length - opts.max_tokens
        built = await asyncio.to_thread(  # tokenizing a long history: not on the event loop
            build_context,
            engine,
            system_prompt=notes.system_prompt if notes else self.settings.system_prompt,
            history=history,
            message=text,
            budget_tokens=budget,
            memories=notes.lines if notes else (),
            summary=notes.summary if notes else None,
            personal=notes.personal if notes else False,
        )
        context_ms = (time.perf_counter() - ctx_start) * 1000
        probe, hit = await self._lookup(user_id, text, opts, built, vector, use_cache, engine)
        if hit is not None:
            yield hit.entry.response
            timings = {"context_ms": round(context_ms, 2), **(notes.timings if notes else {})}
            result = await self._serve_cached(
                user_id, session.id, text, hit, notes, timings, started
            )
            result.extra["route"] = route.to_dict()
            yield result
            return
        if engine is not self.engine:  # the routed model (the main one was checked on entry)
            engine.check_serving()
        user_msg = await asyncio.to_thread(
            self.store.add_message,
            session.id,
            "user",
            text,
            status="pending",
            token_count=engine.count_tokens(text),
        )
        request = GenerationRequest(built.prompt_tokens, opts, session_key=session.id, user=user_id)
        pieces: list[str] = []
        status = "interrupted"
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                async for event in engine.generate(request):
                    if isinstance(event, GenerationDone):
                        done = event
                    else:
                        pieces.append(event)
                        yield event
            status = "complete"
        except TimeoutError:
            raise DeadlineExceeded(
                f"no complete reply within request_timeout_s={self.settings.request_timeout_s}"
            ) from None
        except Exception:
            status = "failed"
            raise
        finally:
            if status != "complete":
                request.cancelled = True
                self._fail(user_msg.id, status, pieces, engine.info.name)
        timings = {
            "context_ms": round(context_ms, 2),
            **(notes.timings if notes else {}),
            **done.timings,
            "total_ms": round((time.perf_counter() - started) * 1000, 2),
        }
        reply = await asyncio.to_thread(
            self.store.complete_exchange,
            user_msg.id,
            done.text,
            user_tokens=user_msg.token_count,
            reply_tokens=done.completion_tokens,
            model=engine.info.name,
            cached=False,
            timings=timings,
            finish_reason=done.finish_reason,
        )
        if probe is not None and done.text.strip() and done.finish_reason in ("stop", "length"):
            try:
                await asyncio.to_thread(
                    self.cache.store,
                    probe,
                    done.text,
                    model=engine.info.name,  # type: ignore[union-attr]
                    prompt_tokens=done.prompt_tokens,
                    completion_tokens=done.completion_tokens,
                    finish_reason=done.finish_reason,
                    user_id=user_id,
                )
            except (StorageError, OperationalError) as exc:  # the reply is stored; only not cached
                self.cache.count_error()  # type: ignore[union-attr]
                log.warning("caching a reply failed (the reply itself is stored): %s", exc)
        if self.personal is not None and notes is not None:
            await asyncio.to_thread(
                self.personal.after_turn, user_id, session.id, text, user_msg.id, notes
            )
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
            user_id,
            session.id,
            done.prompt_tokens,
            done.completion_tokens,
            timings["total_ms"],
            built.history_used,
            built.history_dropped,
        )
        yield ChatResult(
            response=done.text,
            session_id=session.id,
            user_id=user_id,
            cached=False,
            model=engine.info.name,
            usage=Usage(done.prompt_tokens, done.completion_tokens),
            timings=timings,
            finish_reason=done.finish_reason,
            message_id=reply.id,
            extra={
                "route": route.to_dict(),
                "context": built.messages,  # the prompt as sent, for tests and debugging
                "memory_ids": [
                    r.memory.id for r in notes.memories[: built.memories_used] if not r.is_episode
                ]
                if notes
                else [],
                "memories_used": [
                    {
                        "id": r.memory.id,
                        "type": "episode" if r.is_episode else "fact",
                        "text": r.memory.text,
                        "score": round(r.score, 4),
                        "reasons": r.reasons,
                    }
                    for r in notes.memories[: built.memories_used]
                ]
                if notes
                else [],
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
            self.store.recent_messages, session.id, self.settings.history_messages
        )
        system = await asyncio.to_thread(self._system_prompt, user_id)
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

    def _system_prompt(self, user_id: str) -> str:
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

    async def _embed(self, text: str) -> Vector | None:
        """The message's vector (memoised by text in the embedder), or None without one."""
        if self.embedder is None:
            return None
        return await asyncio.to_thread(self.embedder.embed_one, text)

    async def _lookup(
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

    async def _serve_cached(
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

    def _validate(self, message: str) -> str:
        if not isinstance(message, str) or not message.strip():
            raise InputError("message must be a non-empty string", field="message")
        if len(message) > self.settings.max_message_chars:
            raise PayloadTooLarge(
                f"message is {len(message)} characters; the limit is "
                f"{self.settings.max_message_chars} (max_message_chars)",
                field="message",
            )
        return message.strip()

    def _fail(self, user_message_id: int, status: str, pieces: list[str], model: str) -> None:
        """Mark the exchange failed or interrupted (sync: may run while the generator closes)."""
        self.stats.record_error(interrupted=status == "interrupted")
        self.store.fail_exchange(
            user_message_id, status, "".join(pieces) or None, model=model, timings={}
        )
        log.warning("exchange %d ended %s after %d pieces", user_message_id, status, len(pieces))


def _title(message: str, limit: int = 60) -> str:
    """A session's title: its first message, cut at a word near `limit` characters."""
    line = " ".join(message.split())
    return line if len(line) <= limit else line[:limit].rsplit(" ", 1)[0] + "…"
