"""HTTP routes: parse, call the runtime, format. No logic of their own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from companion.domain import ChatResult, Message, Session
from companion.errors import CompanionError, NotFound
from companion.limits import Limits
from companion.runtime import Runtime
from companion.server.schemas import (
    ChatRequest,
    ChatResponse,
    ErrorResponse,
    OpenSessionRequest,
    ReloadRequest,
    SessionBody,
    SessionMessages,
)
from companion.server.security import own_user
from companion.server.shutdown import (
    INTERRUPTED_MESSAGE,
    Interrupted,
    event_source,
    grace_of,
    until_shutdown,
)
from companion.turn import DEFAULT_USER

router = APIRouter()
T = TypeVar("T")

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (404, 413, 422, 429, 503, 504)
}


def runtime_of(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


@router.get("/healthz", tags=["meta"])
async def healthz(request: Request) -> Any:
    """Liveness and the loaded model; 503 with the reason once the model has stopped."""
    rt = runtime_of(request)
    body: dict[str, Any] = {
        "status": "ok",
        "model": rt.model_info.name,
        "model_size": rt.model_info.size,
    }
    reason = rt.companion.engine.down_reason
    if reason:
        return JSONResponse({**body, "status": "down", "reason": reason}, status_code=503)
    return body


@router.post("/api/v1/chat", response_model=ChatResponse, responses=ERRORS, tags=["chat"])
async def chat(body: ChatRequest, request: Request) -> Any:
    """One turn. With `"stream": true` the reply comes as Server-Sent Events:
    `token` events (`{"text": ...}`), then one `done` event with the full result."""
    user = own_user(request, body.user_id)
    stream = admitted_chat(
        request, user, body.message, body.session_id, use_cache=body.cache, **body.options()
    )
    return await reply_of(request, stream, body.stream)


async def reply_of(request: Request, stream: AsyncIterator[str | ChatResult], sse: bool) -> Any:
    """A chat stream as the response: the result's JSON, or Server-Sent Events."""
    if not sse:
        result = None
        async for event in stream:
            if isinstance(event, ChatResult):
                result = event
        assert result is not None
        return result.to_dict()
    first = await anext(stream)  # errors before the first token become plain HTTP errors
    shutdown = anyio.Event()  # set on SIGTERM: the reply gets a grace period, then is interrupted
    grace = grace_of(request)
    return event_source(_sse(first, until_shutdown(stream, shutdown, grace)), shutdown, grace)


def admitted_chat(
    request: Request, user_id: str | None, message: str, session_id: str | None, **options: Any
) -> AsyncIterator[str | ChatResult]:
    """The chat stream inside the user's rate and concurrency limits (429 when over them)."""
    stream = runtime_of(request).companion.chat_stream(user_id, message, session_id, **options)
    return admitted(request, user_id, stream)


def admitted(request: Request, user_id: str | None, stream: AsyncIterator[T]) -> AsyncIterator[T]:
    """Any stream (a chat turn, an OpenAI API turn or completion) inside the user's rate and
    concurrency limits (429 when over them). (A turn holds its session's lock itself, in
    Companion.in_turn.)"""
    limits: Limits = request.app.state.limits
    key = user_id or DEFAULT_USER
    ticket = limits.acquire(key)

    async def held() -> AsyncIterator[T]:
        try:
            async for event in stream:
                yield event
        finally:
            limits.release(key, ticket)
            await stream.aclose()  # type: ignore[attr-defined]

    return held()


async def _sse(
    first: str | ChatResult, stream: AsyncIterator[str | ChatResult | Interrupted]
) -> AsyncIterator[dict[str, str]]:
    """Format chat events as SSE; closing this generator closes (and interrupts) the turn.

    A reply cut short by shutdown ends with an `error` event of code `interrupted`.
    """
    try:
        yield _sse_event(first)
        async for event in stream:
            if isinstance(event, Interrupted):
                error = {"code": "interrupted", "message": INTERRUPTED_MESSAGE}
                yield {"event": "error", "data": json.dumps({"error": error})}
                break
            yield _sse_event(event)
    except CompanionError as exc:
        yield {"event": "error", "data": json.dumps({"error": exc.to_dict()})}
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


def _sse_event(event: str | ChatResult) -> dict[str, str]:
    if isinstance(event, ChatResult):
        return {"event": "done", "data": json.dumps(event.to_dict())}
    return {"event": "token", "data": json.dumps({"text": event})}


@router.get("/api/v1/stats", tags=["meta"])
async def stats(request: Request) -> dict[str, Any]:
    """get_performance_stats(): response times, cache, memory, tokens/s, model load (admin)."""
    return runtime_of(request).companion.get_performance_stats()


@router.post("/api/v1/cache/cleanup", tags=["cache"])
async def cache_cleanup(request: Request) -> dict[str, Any]:
    """cleanup_expired_cache() now: drop expired entries; returns how many (admin)."""
    cache = runtime_of(request).companion.cache
    removed = await asyncio.to_thread(cache.cleanup_expired_cache) if cache else 0
    return {"removed": removed}


@router.delete("/api/v1/cache", tags=["cache"])
async def cache_clear(request: Request, scope: str | None = None) -> dict[str, Any]:
    """Drop every cached reply, or one scope's (`shared`, `user:<id>`) (admin)."""
    cache = runtime_of(request).companion.cache
    removed = await asyncio.to_thread(cache.clear, scope) if cache else 0
    return {"removed": removed}


@router.get("/api/v1/sessions", response_model=list[SessionBody], tags=["chat"])
async def sessions(
    request: Request,
    user_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Any:
    """A user's sessions, newest first."""
    user_id = own_user(request, user_id) or DEFAULT_USER
    store = runtime_of(request).store
    found = await asyncio.to_thread(store.list_sessions, user_id, limit)
    return [_session(s) for s in found]


@router.get(
    "/api/v1/sessions/{session_id}/messages",
    response_model=SessionMessages,
    responses=ERRORS,
    tags=["chat"],
)
async def session_messages(
    session_id: str,
    request: Request,
    limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
) -> Any:
    """Every message of a session, oldest first, with status, tokens and timings."""
    store = runtime_of(request).store
    session = await asyncio.to_thread(store.get_session, session_id)
    if session is None:
        raise NotFound(f"no session {session_id!r}", field="session_id")
    own_user(request, session.user_id)
    msgs = await asyncio.to_thread(store.list_messages, session_id, limit, offset)
    return {
        "session_id": session.id,
        "user_id": session.user_id,
        "messages": [_message(m) for m in msgs],
    }


@router.post("/api/v1/sessions/{session_id}/open", responses=ERRORS, tags=["chat"])
async def open_session(
    session_id: str, request: Request, body: OpenSessionRequest | None = None
) -> dict[str, Any]:
    """Prefill the session's context (persona, history) so its first reply starts at once.
    An existing session is opened for its owner (policy.py lets only them, or an admin, in)."""
    user_id = own_user(request, body.user_id if body is not None else None)
    if body is None or body.user_id is None:
        session = await asyncio.to_thread(runtime_of(request).store.get_session, session_id)
        user_id = session.user_id if session is not None else user_id
    return await runtime_of(request).companion.open_session(user_id, session_id)


@router.get("/api/v1/models", tags=["models"])
async def models(request: Request) -> dict[str, Any]:
    """Installed and absent sizes, the loaded model and why it was chosen."""
    rt = runtime_of(request)
    return {
        "loaded": rt.model_info.to_dict(),
        "tier": rt.plan.selection.tier,
        "reason": rt.plan.selection.reason,
        "offload": {"n_gpu_layers": rt.plan.offload.n_gpu_layers, "reason": rt.plan.offload.reason},
        "routing": {"enabled": rt.companion.router is not None, "reason": rt.routing.reason},
        "models": rt.registry.rows(),
    }


@router.post("/api/v1/models/reload", responses=ERRORS, tags=["models"])
async def reload_model(body: ReloadRequest, request: Request) -> dict[str, Any]:
    """Force a reload, optionally of another size; requests in flight finish on the old model."""
    info = await asyncio.to_thread(runtime_of(request).reload_model, body.size)
    return {"loaded": info.to_dict()}


def _session(s: Session) -> dict[str, Any]:
    return {
        "id": s.id,
        "user_id": s.user_id,
        "title": s.title,
        "created_at": s.created_at.isoformat(),
        "updated_at": s.updated_at.isoformat(),
    }


def _message(m: Message) -> dict[str, Any]:
    return {
        "finish_reason": m.finish_reason,
        "active": m.active,
        "alt_group": m.alt_group,
        "id": m.id,
        "role": m.role,
        "text": m.text,
        "status": m.status,
        "token_count": m.token_count,
        "cached": m.cached,
        "model": m.model,
        "timings": m.timings,
        "created_at": m.created_at.isoformat(),
        "reply_to": m.reply_to,
    }


# Memory, persona and user-data routes live in their own module; served under this router.
from companion.server.personal_routes import router as personal_router  # noqa: E402
from companion.server.session_routes import router as session_router  # noqa: E402

router.include_router(personal_router)
router.include_router(session_router)
