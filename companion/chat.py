"""The chat service (the spec's EnhancedLLMHandler): one turn from message to stored reply."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from companion.config import Settings
from companion.context import build_context
from companion.domain import ChatResult, GenerationOptions, Usage
from companion.errors import DeadlineExceeded, InputError, PayloadTooLarge
from companion.llm.base import Engine, GenerationDone, GenerationRequest
from companion.stats import PerformanceStats
from companion.storage import Store

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


class Companion:
    """Builds the context, generates, stores the exchange and keeps the figures."""

    def __init__(self, settings: Settings, store: Store, engine: Engine) -> None:
        self.settings = settings
        self.store = store
        self.engine = engine
        self.stats = PerformanceStats()

    def swap_engine(self, engine: Engine) -> Engine:
        """Serve new requests from `engine`; returns the old one for the caller to close."""
        old, self.engine = self.engine, engine
        return old

    async def chat(
        self, user_id: str | None, message: str, session_id: str | None = None, **options: Any
    ) -> ChatResult:
        """One complete reply (the streamed turn, collected)."""
        async for event in self.chat_stream(user_id, message, session_id, **options):
            if isinstance(event, ChatResult):
                return event
        raise AssertionError("chat_stream ended without a result")

    async def chat_stream(
        self, user_id: str | None, message: str, session_id: str | None = None, **options: Any
    ) -> AsyncIterator[str | ChatResult]:
        """Text pieces as they are generated, then the ChatResult.

        The user message is stored before generating; the reply after. If the stream is closed
        early, fails or passes its deadline, the user message (and any partial reply) is marked
        interrupted or failed, never left pending.
        """
        started = time.perf_counter()
        user_id = user_id or DEFAULT_USER
        text = self._validate(message)
        opts = options_from(self.settings, **options)
        engine = self.engine
        session = await asyncio.to_thread(
            self.store.create_session, user_id, session_id, _title(text)
        )
        history = await asyncio.to_thread(
            self.store.recent_messages, session.id, self.settings.history_messages
        )
        ctx_start = time.perf_counter()
        budget = engine.info.context_length - opts.max_tokens
        built = build_context(
            engine,
            system_prompt=self.settings.system_prompt,
            history=history,
            message=text,
            budget_tokens=budget,
        )
        context_ms = (time.perf_counter() - ctx_start) * 1000
        user_msg = await asyncio.to_thread(
            self.store.add_message, session.id, "user", text, status="pending",
            token_count=engine.count_tokens(text),
        )
        request = GenerationRequest(built.prompt_tokens, opts, session_key=session.id)
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
            **done.timings,
            "total_ms": round((time.perf_counter() - started) * 1000, 2),
        }
        reply = await asyncio.to_thread(
            self.store.complete_exchange, user_msg.id, done.text,
            user_tokens=user_msg.token_count, reply_tokens=done.completion_tokens,
            model=engine.info.name, cached=False, timings=timings,
        )
        self.stats.record_request(
            response_ms=timings["total_ms"],
            ttft_ms=timings.get("time_to_first_token_ms", 0.0),
            tokens_per_s=timings.get("tokens_per_second", 0.0),
            prompt=done.prompt_tokens,
            completion=done.completion_tokens,
        )
        log.info(
            "chat user=%s session=%s: %d prompt + %d reply tokens in %.0f ms (history %d, dropped %d)",
            user_id, session.id, done.prompt_tokens, done.completion_tokens, timings["total_ms"],
            built.history_used, built.history_dropped,
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
        )

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
        }

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
