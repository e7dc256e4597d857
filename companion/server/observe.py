"""/metrics and the ASGI middleware that times every HTTP request by route."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from companion.server.routes import runtime_of
from companion.server.security import require_admin

router = APIRouter(tags=["meta"])


@router.get("/metrics", include_in_schema=True)
async def metrics(request: Request) -> Response:
    """Prometheus text format: HTTP, tokens, time to first token, cache, memory, engine, process."""
    require_admin(request)
    rt = runtime_of(request)
    m = rt.companion.stats.metrics
    m.model_load.set(rt.model_info.load_time_s)
    m.model_rss.set(rt.model_info.rss_added_mb * 2**20)
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)


class TimingMiddleware:
    """Counts requests by route template, method and status; times them to response start."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                _observe(scope, status["code"], time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            _observe(scope, 500, time.perf_counter() - started)
            raise


def _observe(scope: Scope, status: int, seconds: float) -> None:
    app: Any = scope.get("app")
    runtime = getattr(getattr(app, "state", None), "runtime", None)
    if runtime is None:
        return
    route = scope.get("route")
    path = getattr(route, "path", None) or "unmatched"
    m = runtime.companion.stats.metrics
    m.http_requests.labels(path, scope["method"], str(status)).inc()
    m.http_latency.labels(path, scope["method"]).observe(seconds)
