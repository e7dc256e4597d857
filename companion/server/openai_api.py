"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/models(/{id}) and
/v1/embeddings (when an embedder is loaded).

Two modes. By default the request's `messages` are the conversation, as with OpenAI; companion
adds its persona and the user's memories around them (`companion.persona` / `.memory` false
turn them off). With `X-Session-Id` (or `companion.session_id`) the server keeps the history:
only the client's system messages and its last message are read, the rest comes from the
session. The `user` field (or `safety_identifier`, or X-Companion-User) names the companion
user. Every parameter of OpenAI's API is honoured or refused with a 400 naming it.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from typing import Any, Literal

import anyio
import numpy as np
from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from companion.errors import GenerationError, InputError, ModelError
from companion.llm.sampling import check_grammar
from companion.openai_compat.format import ChunkWriter, chunks, completion, error_body
from companion.openai_compat.grammar import response_format, tools_of
from companion.openai_compat.models import ModelNotFound, check_model, model_ids
from companion.openai_compat.params import (
    BadParameter,
    ChatParams,
    check_refused,
    logit_bias,
    vocab_size,
)
from companion.openai_compat.prompt import client_messages
from companion.openai_compat.turn import ClientRequest, ClientTurns, TurnResult
from companion.runtime import Runtime
from companion.server.routes import admitted, runtime_of
from companion.server.security import own_user
from companion.server.shutdown import event_source, grace_of, until_shutdown

router = APIRouter(prefix="/v1", tags=["openai"])


def openai_error(
    status: int, message: str, kind: str, param: str | None = None, code: str | None = None
) -> JSONResponse:
    """An error in OpenAI's shape."""
    return JSONResponse(error_body(message, kind, param, code), status_code=status)


def openai_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """A routing error under /v1 (unknown route 404, wrong method 405) in OpenAI's shape."""
    if exc.status_code == 404:
        message = f"Unknown request URL: {request.method} {request.url.path}"
        code: str | None = "unknown_url"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
        code = "method_not_allowed"
    else:
        message, code = str(exc.detail), None
    response = openai_error(exc.status_code, message, "invalid_request_error", None, code)
    response.headers.update(exc.headers or {})
    return response


def chat_request(body: ChatParams, rt: Runtime, user: str, session_id: str | None) -> ClientRequest:
    """OpenAI's parameters as a ClientRequest (400 for what cannot be honoured)."""
    check_refused(body)
    check_model(rt, body.model)
    engine = rt.companion.engine
    extras = body.companion
    tools = tools_of(body.tools, body.tool_choice, body.parallel_tool_calls)
    output = response_format(body.response_format)
    if tools is not None and output.grammar:
        raise BadParameter("send either tools or a JSON response_format", field="response_format")
    messages = client_messages(body.messages)
    grammar = tools.grammar() if tools is not None else output.grammar
    if grammar:
        try:
            check_grammar(engine.vocab, grammar)
        except GenerationError as exc:
            field = "tools" if tools is not None else "response_format"
            raise BadParameter(f"{field}: {exc.message}", field=field) from None
    options = {
        "max_tokens": body.max_completion_tokens or body.max_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "stop": body.stops(),
        "seed": None if body.seed is None else body.seed & 0xFFFFFFFF,
        "presence_penalty": body.presence_penalty,
        "frequency_penalty": body.frequency_penalty,
        "logit_bias": logit_bias(body.logit_bias, vocab_size(engine)) if body.logit_bias else None,
    }
    return ClientRequest(
        user_id=user,
        messages=messages,
        options={k: v for k, v in options.items() if v is not None},
        n=body.n or 1,
        logprobs=(body.top_logprobs or 0) if body.logprobs else None,
        output=output,
        tools=tools,
        memory=extras.memory if extras else True,
        persona=extras.persona if extras else True,
        use_cache=extras.cache if extras else True,
        grammar=grammar,
        kv_key=body.prompt_cache_key,
        session_id=session_id,
    )


@router.post("/chat/completions")
async def chat_completions(
    body: ChatParams,
    request: Request,
    x_companion_user: str | None = Header(default=None),
    x_session_id: str | None = Header(default=None),
    cache_control: str | None = Header(default=None),
) -> Any:
    """Chat completions: the messages are the conversation (unless a session is named)."""
    rt = runtime_of(request)
    user = own_user(request, body.user or body.safety_identifier or x_companion_user) or "default"
    session = x_session_id or (body.companion.session_id if body.companion else None)
    turn = chat_request(body, rt, user, session)
    if cache_control and any(
        d.strip() in ("no-cache", "no-store") for d in cache_control.lower().split(",")
    ):
        turn.use_cache = False
    last = turn.messages[-1]
    if last["role"] == "assistant" or not last["content"].strip():
        raise InputError(
            "the last message must be a non-empty user, tool or system message",
            field="messages",
        )
    stream = admitted(request, user, ClientTurns(rt.companion).stream(turn))
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    tools = turn.tools is not None
    if not body.stream:
        result = None
        async for event in stream:
            if isinstance(event, TurnResult):
                result = event
        assert result is not None
        return completion(cid, created, result, tools)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    writer = ChunkWriter(cid, created, rt.model_info.name, turn.n, tools, include_usage)
    first = await anext(stream)  # errors before the first token are plain HTTP errors
    shutdown = anyio.Event()  # set on SIGTERM: the reply gets a grace period, then is interrupted
    grace = grace_of(request)
    watched = until_shutdown(stream, shutdown, grace)
    return event_source(chunks(writer, first, watched), shutdown, grace)


class OAEmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str | list[str] = Field(description="a text or a list of up to 256 texts")
    model: str = "companion-embed"
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, description="truncate and renormalise")
    user: str | None = None


@router.post("/embeddings")
async def embeddings(body: OAEmbeddingRequest, request: Request) -> dict[str, Any]:
    """Sentence embeddings from the model companion's cache and memory use."""
    embedder = runtime_of(request).companion.embedder
    if embedder is None:
        raise ModelError("no embedding model is loaded (caching and memory are off)")
    if body.model not in ("companion-embed", embedder.name):
        raise ModelNotFound(
            f"The embedding model {body.model!r} does not exist; use companion-embed",
            field="model",
        )
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or len(texts) > 256 or any(not t.strip() for t in texts):
        raise BadParameter("input must be 1 to 256 non-empty texts", field="input")
    if body.dimensions is not None and body.dimensions > embedder.dim:
        raise BadParameter(
            f"dimensions: at most {embedder.dim} for {embedder.name}", field="dimensions"
        )
    vectors = await asyncio.to_thread(embedder.embed, texts)
    if body.dimensions is not None and body.dimensions < embedder.dim:
        cut = vectors[:, : body.dimensions]
        vectors = cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)
    inner = getattr(embedder, "inner", embedder)  # the model behind a memo
    counter = getattr(inner, "count_tokens", None)
    if counter is None:
        raise ModelError(f"{embedder.name} cannot count its tokens")
    tokens = await asyncio.to_thread(counter, texts)
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


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "companion"}


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    """The loaded model and every installed size."""
    rt = runtime_of(request)
    ids = [i for i in model_ids(rt) if i != "companion"]
    return {"object": "list", "data": [_model(i) for i in ids]}


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    """One model (404 model_not_found when companion does not serve it)."""
    check_model(runtime_of(request), model_id)
    return _model(model_id)


# /v1/completions lives in its own module; served under this router.
from companion.server.openai_completions import router as completions_router  # noqa: E402

router.include_router(completions_router)
