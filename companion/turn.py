"""What every way of answering a turn shares: the turn's state, options, validation, titles and
the generate step. chat.py (the full turn), cached_turn.py (a new conversation's cache hit) and
chat_actions.py (regenerate, edit, continue) import this module; it imports none of them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from companion.cache import Probe
from companion.cache.base import CacheHit
from companion.config import Settings
from companion.context import BuiltContext
from companion.domain import GenerationOptions, Message, Session
from companion.embed.base import Vector
from companion.errors import CompanionError, DeadlineExceeded, InputError, PayloadTooLarge
from companion.llm.base import Engine, GenerationDone, GenerationRequest
from companion.llm.routing import Route
from companion.personal import TurnNotes
from companion.storage import Store
from companion.storage import conversations as conv

DEFAULT_USER = "default"
log = logging.getLogger("companion.turn")


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


def validate_message(settings: Settings, message: object) -> str:
    """The message, stripped; 422 when empty or not text, 413 past max_message_chars."""
    if not isinstance(message, str) or not message.strip():
        raise InputError("message must be a non-empty string", field="message")
    if len(message) > settings.max_message_chars:
        raise PayloadTooLarge(
            f"message is {len(message)} characters; the limit is "
            f"{settings.max_message_chars} (max_message_chars)",
            field="message",
        )
    return message.strip()


def title_of(message: str, limit: int = 60) -> str:
    """A session's title: its first message, cut at a word near `limit` characters."""
    line = " ".join(message.split())
    return line if len(line) <= limit else line[:limit].rsplit(" ", 1)[0] + "…"


@dataclass
class Turn:
    """One turn's state as it passes the steps (chat.py: validate, session, route, recall,
    context, cache, generate, store, learn); each step fills in its part."""

    user_id: str
    text: str  # validated
    session_id: str | None  # as asked (None: a new session)
    use_cache: bool
    options: dict[str, Any]  # the request's overrides (recall adds the persona's sampling)
    started: float = field(default_factory=time.perf_counter)
    route: Route | None = None  # route (or given by the caller)
    session: Session | None = None  # session
    history: list[Message] = field(default_factory=list)  # session
    vector: Vector | None = None  # recall (shared with the cache)
    notes: TurnNotes | None = None  # recall (persona, memories, summary)
    opts: GenerationOptions | None = None  # context
    built: BuiltContext | None = None  # context
    context_ms: float = 0.0  # context
    probe: Probe | None = None  # cache (None: caching off or bypassed)
    hit: CacheHit | None = None  # cache
    asked: Message | None = None  # generate: the stored user message
    done: GenerationDone | None = None  # generate
    timings: dict[str, float] = field(default_factory=dict)  # store

    @property
    def engine(self) -> Engine:
        """The routed engine."""
        assert self.route is not None, "the route step comes first"
        return self.route.engine


Settle = Callable[[str, list[str]], None]


Bound = Callable[[AsyncIterator[Any]], AsyncIterator[Any]]


@contextlib.asynccontextmanager
async def settling(
    deadline_s: float, settle: Settle, what: str = "reply"
) -> AsyncIterator[tuple[list[str], Bound]]:
    """A reply's generation within `deadline_s` (504 past it). Yields the list the body appends
    the text it sends to, and `bound`: the body reads its source through `bound(source)`, so that
    only the waits for the next piece are timed, in whichever task reads (an SSE response reads
    in a task of its own), never the body's sending of a piece. When it does not complete,
    `settle(status, pieces)` is called with status `interrupted` (closed early or past the
    deadline) or `failed` (the engine raised), so nothing stays pending. (`settle` is
    synchronous: it may run while the caller's generator closes.)"""
    pieces: list[str] = []
    until = asyncio.get_running_loop().time() + deadline_s

    async def bound(source: AsyncIterator[Any]) -> AsyncIterator[Any]:
        while True:
            try:
                async with asyncio.timeout_at(until):
                    item = await anext(source)
            except StopAsyncIteration:
                return
            yield item

    status = "interrupted"
    try:
        yield pieces, bound
        status = "complete"
    except TimeoutError:
        raise DeadlineExceeded(
            f"no complete {what} within request_timeout_s={deadline_s}"
        ) from None
    except Exception:
        status = "failed"
        raise
    finally:
        if status != "complete":
            settle(status, pieces)


async def generate(
    engine: Engine,
    request: GenerationRequest,
    deadline_s: float,
    settle: Settle,
    what: str = "reply",
) -> AsyncIterator[str | GenerationDone]:
    """The generate step: text pieces, then the GenerationDone, settled as `settling` says; a
    request that does not complete is cancelled in the engine."""

    def cancel_and_settle(status: str, pieces: list[str]) -> None:
        request.cancelled = True
        settle(status, pieces)

    async with settling(deadline_s, cancel_and_settle, what) as (pieces, bound):
        async for event in bound(engine.generate(request)):
            if not isinstance(event, GenerationDone):
                pieces.append(event)
            yield event


@contextlib.asynccontextmanager
async def admitted(
    engine: Engine, request: GenerationRequest, store: Store, created: str | None = None
) -> AsyncIterator[None]:
    """The block runs with `request` admitted by the engine (its place held: engine.admit).
    Refused (429 overloaded, 503), nothing of the turn stays: the session it created, if any
    (`created`, still empty: the message is stored inside the block), is deleted again."""
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(engine.admit(request))
        except CompanionError:
            if created is not None:
                try:
                    await asyncio.to_thread(conv.delete_session, store, created)
                except Exception:  # the refusal is the answer; an empty session is harmless
                    log.exception("deleting the refused turn's new session %s failed", created)
            raise
        yield
