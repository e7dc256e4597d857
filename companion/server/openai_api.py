"""OpenAI-compatible routes: /v1/chat/completions, /v1/models (and /v1/embeddings when an
embedder is loaded). The `user` field (or X-Companion-User) selects the companion user, so
memory, persona and cache apply; companion keeps the conversation itself."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

import anyio
from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from companion.domain import ChatResult
from companion.errors import CompanionError, InputError, ModelError
from companion.server.routes import admitted_chat, runtime_of
from companion.server.security import own_user
from companion.server.shutdown import (
    INTERRUPTED_MESSAGE,
    Interrupted,
    event_source,
    grace_of,
    until_shutdown,
)

router = APIRouter(prefix="/v1", tags=["openai"])


class OAMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class OAChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = "companion"
    messages: list[OAMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=8192)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:@-]{1,64}$")


def openai_error(
    status: int, message: str, kind: str, param: str | None = None, code: str | None = None
) -> JSONResponse:
    """An error in OpenAI's shape."""
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": code}},
        status_code=status,
    )


def conversation_session(user: str, messages: list[OAMessage]) -> str:
    """A stable session per conversation: the user plus the conversation's first user message."""
    first = next((m.text() for m in messages if m.role == "user"), "")
    digest = hashlib.sha256(f"{user}\x00{first}".encode()).hexdigest()[:24]
    return f"oa-{digest}"


def _options(body: OAChatRequest) -> dict[str, Any]:
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    return {
        "max_tokens": body.max_completion_tokens or body.max_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "stop": stop,
        "seed": body.seed,
    }


@router.post("/chat/completions")
async def chat_completions(
    body: OAChatRequest,
    request: Request,
    x_companion_user: str | None = Header(default=None),
    x_session_id: str | None = Header(default=None),
) -> Any:
    """Chat completions; the last user message is the new turn."""
    user = own_user(request, body.user or x_companion_user) or "default"
    last = body.messages[-1]
    if last.role != "user" or not last.text().strip():
        raise InputError("the last message must be a non-empty user message", field="messages")
    session = x_session_id or conversation_session(user, body.messages)
    companion = runtime_of(request).companion
    route = await companion.route(user, last.text(), session)  # model switching: chosen up front
    stream = admitted_chat(request, user, last.text(), session, route=route, **_options(body))
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if not body.stream:
        result = None
        async for event in stream:
            if isinstance(event, ChatResult):
                result = event
        assert result is not None
        return _completion(cid, created, result)
    first = await anext(stream)
    shutdown = anyio.Event()  # set on SIGTERM: the reply gets a grace period, then is interrupted
    grace = grace_of(request)
    watched = until_shutdown(stream, shutdown, grace)
    chunks = _chunks(cid, created, first, watched, route.model)
    return event_source(chunks, shutdown, grace)


def _completion(cid: str, created: int, r: ChatResult) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": r.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": r.response},
                "finish_reason": _finish(r.finish_reason),
            }
        ],
        "usage": r.usage.to_dict(),
        "companion": {"session_id": r.session_id, "cached": r.cached, "timings": r.timings},
    }


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def _chunk(cid: str, created: int, model: str, delta: dict[str, Any], finish: str | None) -> str:
    return json.dumps(
        {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


async def _chunks(
    cid: str,
    created: int,
    first: str | ChatResult,
    stream: AsyncIterator[str | ChatResult | Interrupted],
    model: str,
) -> AsyncIterator[str]:
    """OpenAI stream chunks, ending with data: [DONE]."""
    yield _chunk(cid, created, model, {"role": "assistant", "content": ""}, None)
    try:
        event = first
        while True:
            if isinstance(event, ChatResult):
                yield _chunk(cid, created, event.model, {}, _finish(event.finish_reason))
                break
            yield _chunk(cid, created, model, {"content": event}, None)
            event = await anext(stream)
            if isinstance(event, Interrupted):
                error = {
                    "message": INTERRUPTED_MESSAGE,
                    "type": "server_error",
                    "param": None,
                    "code": "interrupted",
                }
                yield json.dumps({"error": error})
                break
    except CompanionError as exc:
        yield json.dumps(
            {
                "error": {
                    "message": exc.message,
                    "type": exc.code,
                    "param": exc.field,
                    "code": exc.code,
                }
            }
        )
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    yield "[DONE]"


class OAEmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    input: str | list[str] = Field(description="a text or a list of up to 256 texts")
    model: str = "companion-embed"
    encoding_format: Literal["float", "base64"] = "float"


@router.post("/embeddings")
async def embeddings(body: OAEmbeddingRequest, request: Request) -> dict[str, Any]:
    """Sentence embeddings from the model companion's cache and memory use."""
    embedder = runtime_of(request).companion.embedder
    if embedder is None:
        raise ModelError("no embedding model is loaded (caching and memory are off)")
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or len(texts) > 256 or any(not t.strip() for t in texts):
        raise InputError("input must be 1 to 256 non-empty texts", field="input")
    vectors = await asyncio.to_thread(embedder.embed, texts)
    tokens = sum(len(t.split()) for t in texts)
    return {
        "object": "list",
        "model": embedder.name,
        "data": [
            {"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
            for i, v in enumerate(vectors)
        ],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _encode(vector: Any, fmt: str) -> list[float] | str:
    """Floats, or (as the OpenAI SDK asks by default) base64 of little-endian float32."""
    if fmt == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    """The loaded model and every installed size."""
    rt = runtime_of(request)
    loaded = rt.model_info
    data = [{"id": loaded.name, "object": "model", "created": 0, "owned_by": "companion"}]
    data += [
        {"id": r["size"], "object": "model", "created": 0, "owned_by": "companion"}
        for r in rt.registry.rows()
        if r["installed"]
    ]
    return {"object": "list", "data": data}
