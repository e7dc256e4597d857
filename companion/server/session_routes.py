"""HTTP routes for sessions beyond one turn (rename, delete, search) and the chat actions on a
stored message (regenerate, edit-and-resend, continue). Parse, check ownership, call, format."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from companion.chat_actions import ChatActions
from companion.domain import Session
from companion.errors import NotFound
from companion.server.personal_routes import USER, _user
from companion.server.schemas import INT64_MAX, INT64_MIN, ChatResponse, SessionBody
from companion.server.security import own_user, principal_of
from companion.storage import conversations as conv

router = APIRouter()
MessageId = Annotated[int, Path(ge=INT64_MIN, le=INT64_MAX)]


class SessionEdit(BaseModel):
    """PATCH /api/v1/sessions/{session_id}: a new title."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=255)


class ActionRequest(BaseModel):
    """POST /api/v1/messages/{id}/regenerate | continue: how to generate (stream: SSE)."""

    model_config = ConfigDict(extra="forbid")

    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)

    def options(self) -> dict[str, Any]:
        return self.model_dump(include={"max_tokens", "temperature", "seed"})


class EditRequest(ActionRequest):
    """POST /api/v1/messages/{id}/edit: the message's new text, answered again."""

    text: str = Field(min_length=1)


def _runtime(request: Request) -> Any:
    return request.app.state.runtime


async def _owned_session(request: Request, session_id: str) -> Session:
    """The session, if the caller may act for its user (404 / 403 otherwise)."""
    session = await asyncio.to_thread(_runtime(request).store.get_session, session_id)
    if session is None:
        raise NotFound(f"no session {session_id!r}", field="session_id")
    own_user(request, session.user_id)
    return session


@router.get("/api/v1/me", tags=["users"])
async def me(request: Request) -> dict[str, Any]:
    """Who the caller is: with auth on, the key's user and whether it is an admin key (the
    page's sign-in checks a key with it); with auth off, anyone may act for any user."""
    principal = principal_of(request)
    auth = bool(_runtime(request).settings.auth)
    return {"auth": auth, "user_id": principal.user_id if auth else None, "admin": principal.admin}


@router.patch("/api/v1/sessions/{session_id}", response_model=SessionBody, tags=["chat"])
async def rename_session(session_id: str, body: SessionEdit, request: Request) -> Any:
    """Give a session a new title."""
    await _owned_session(request, session_id)
    renamed = await asyncio.to_thread(
        conv.rename_session, _runtime(request).store, session_id, body.title
    )
    from companion.server.routes import _session

    return _session(renamed)


@router.delete("/api/v1/sessions/{session_id}", status_code=204, tags=["chat"])
async def delete_session(session_id: str, request: Request) -> Response:
    """Delete a session and every message in it (and the turns memory kept of it)."""
    session = await _owned_session(request, session_id)
    await asyncio.to_thread(conv.delete_session, _runtime(request).store, session_id)
    personal = _runtime(request).companion.personal
    if personal is not None and personal.memory is not None:
        await asyncio.to_thread(personal.memory.forget_session, session.user_id, session_id)
    return Response(status_code=204)


@router.get(USER + "/search", tags=["chat"])
async def search(
    user_id: str,
    request: Request,
    q: Annotated[str, Query(min_length=1, max_length=200)],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    """A user's messages matching every word of `q` (the last word as a prefix), best first.

    Each hit's `snippet` marks the matched words with \\u0002 ... \\u0003."""
    hits = await asyncio.to_thread(
        conv.search_messages, _runtime(request).store, _user(user_id), q, limit
    )
    return {"user_id": user_id, "query": q, "hits": [h.to_dict() for h in hits]}


async def _acting(request: Request, message_id: int) -> tuple[ChatActions, str]:
    """The actions service and the message's user, if the caller may act for that user."""
    actions = ChatActions(_runtime(request).companion)
    _, user_id = await asyncio.to_thread(actions.message_of, message_id)
    own_user(request, user_id)
    return actions, user_id


@router.post("/api/v1/messages/{message_id}/regenerate", response_model=ChatResponse, tags=["chat"])
async def regenerate(
    message_id: MessageId, request: Request, body: ActionRequest | None = None
) -> Any:
    """A new reply to the message this reply answers; the old one is kept as an alternative
    (same `alt_group`). Only a session's last reply."""
    from companion.server.routes import admitted, reply_of

    body = body or ActionRequest()
    actions, user_id = await _acting(request, message_id)
    stream = admitted(request, user_id, actions.regenerate(message_id, **body.options()))
    return await reply_of(request, stream, body.stream)


@router.post("/api/v1/messages/{message_id}/continue", response_model=ChatResponse, tags=["chat"])
async def continue_reply(
    message_id: MessageId, request: Request, body: ActionRequest | None = None
) -> Any:
    """More of a reply cut at max_tokens (finish_reason `length`) or stopped (`cancelled`),
    appended to it. Only a session's last reply."""
    from companion.server.routes import admitted, reply_of

    body = body or ActionRequest()
    actions, user_id = await _acting(request, message_id)
    stream = admitted(request, user_id, actions.continue_reply(message_id, **body.options()))
    return await reply_of(request, stream, body.stream)


@router.post("/api/v1/messages/{message_id}/edit", response_model=ChatResponse, tags=["chat"])
async def edit_message(message_id: MessageId, body: EditRequest, request: Request) -> Any:
    """Replace a message you sent and answer it again; the old message and what followed are
    kept (`active: false`) but leave the conversation."""
    from companion.server.routes import admitted, reply_of

    actions, user_id = await _acting(request, message_id)
    stream = admitted(request, user_id, actions.edit(message_id, body.text, **body.options()))
    return await reply_of(request, stream, body.stream)
