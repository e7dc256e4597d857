"""POST /v1/completions (the legacy text completion API)."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Header, Request

from companion.llm.base import GenerationDone
from companion.openai_compat.completions import Completion
from companion.openai_compat.models import check_model
from companion.openai_compat.params import CompletionParams
from companion.server.routes import admitted, runtime_of
from companion.server.security import own_user
from companion.server.shutdown import event_source, grace_of

router = APIRouter(tags=["openai"])  # included in the /v1 router (openai_api.py)


@router.post("/completions")
async def completions(
    body: CompletionParams, request: Request, x_companion_user: str | None = Header(default=None)
) -> Any:
    """A prompt in, text out: the model's own continuation, without chat template or memory."""
    rt = runtime_of(request)
    check_model(rt, body.model)
    user = own_user(request, body.user or x_companion_user) or "default"
    run = Completion(body, rt.companion.engine, rt.settings, user)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        lines = admitted(request, user, run.chunks(include_usage))
        return event_source(lines, anyio.Event(), grace_of(request))
    dones: list[GenerationDone] = []
    async for event in admitted(request, user, run.events()):
        if isinstance(event, list):
            dones = event
    return run.result(dones)
