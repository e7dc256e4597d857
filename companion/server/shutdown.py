"""Streams and server shutdown: on SIGTERM an open reply gets a grace period to finish, then it
is interrupted cleanly (its exchange marked interrupted, the client told so in a last event).

sse-starlette notices uvicorn's exit and sets the response's `shutdown_event`; `until_shutdown`
watches it between chat events. The grace periods nest: SHUTDOWN_GRACE_S (ours) <
sse-starlette's force-cancel period < uvicorn's timeout_graceful_shutdown (`companion serve`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import anyio
from fastapi import Request
from sse_starlette.sse import EventSourceResponse

SHUTDOWN_GRACE_S = 5.0  # an open reply may go on this long after SIGTERM (serve --shutdown-grace)
FORCE_CANCEL_EXTRA_S = 2.0  # then sse-starlette cancels what is left
UVICORN_EXTRA_S = 5  # and uvicorn cancels every task after grace + this (serve passes it)

INTERRUPTED_MESSAGE = (
    "the server is shutting down: this reply was interrupted and is stored as interrupted"
)

T = TypeVar("T")


class Interrupted:
    """Yielded once, last, by until_shutdown when it had to stop a stream."""


INTERRUPTED = Interrupted()


async def until_shutdown(
    stream: AsyncIterator[T], shutdown: anyio.Event, grace_s: float = SHUTDOWN_GRACE_S
) -> AsyncIterator[T | Interrupted]:
    """The events of `stream`; once `shutdown` is set, for `grace_s` more, then INTERRUPTED.

    Interrupting cancels the stream where it waits, which runs its own clean-up (the chat
    service marks the exchange interrupted) before INTERRUPTED is yielded.
    """
    stopping = asyncio.ensure_future(shutdown.wait())
    deadline: float | None = None
    loop = asyncio.get_running_loop()
    try:
        while True:
            step: asyncio.Future[Any] = asyncio.ensure_future(anext(stream))  # type: ignore[arg-type]
            try:
                if deadline is None:
                    await asyncio.wait({step, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    if shutdown.is_set():
                        deadline = loop.time() + grace_s
                if deadline is not None and not step.done():
                    await asyncio.wait({step}, timeout=max(0.0, deadline - loop.time()))
            finally:
                if not step.done():
                    step.cancel()
                    with contextlib.suppress(BaseException):
                        await step
            if step.cancelled():
                yield INTERRUPTED
                return
            try:
                event = step.result()
            except StopAsyncIteration:
                return
            yield event
    finally:
        stopping.cancel()
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()


def grace_of(request: Request) -> float:
    """The app's shutdown grace period (`companion serve --shutdown-grace`)."""
    return float(getattr(request.app.state, "shutdown_grace_s", SHUTDOWN_GRACE_S))


def event_source(
    content: AsyncIterator[Any], shutdown: anyio.Event, grace_s: float
) -> EventSourceResponse:
    """An SSE response whose generator watches `shutdown` (see until_shutdown)."""
    return EventSourceResponse(
        content, ping=15, shutdown_event=shutdown,
        shutdown_grace_period=grace_s + FORCE_CANCEL_EXTRA_S,
    )
