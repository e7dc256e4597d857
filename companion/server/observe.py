"""/metrics, /api/v1/health and the ASGI middleware that times every HTTP request by route."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from companion.errors import StorageError
from companion.runtime import Runtime
from companion.server.routes import runtime_of

router = APIRouter(tags=["meta"])


@router.get("/metrics", include_in_schema=True)
async def metrics(request: Request) -> Response:
    """Prometheus text format: HTTP, tokens, time to first token, cache, memory, engine, process."""
    rt = runtime_of(request)
    m = rt.companion.stats.metrics
    m.model_load.set(rt.model_info.load_time_s)
    m.model_rss.set(rt.model_info.rss_added_mb * 2**20)
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/v1/health")
async def health(request: Request) -> JSONResponse:
    """Readiness (no key needed): the model engines and the database; 503 when one is down."""
    report = await asyncio.to_thread(health_report, runtime_of(request))
    return JSONResponse(report, status_code=503 if report["status"] == "down" else 200)


def health_report(rt: Runtime) -> dict[str, Any]:
    """Whether each engine takes requests and the database answers, with the reasons."""
    engines = {"model": rt.companion.engine}
    if rt.companion.router is not None:
        engines["small_model"] = rt.companion.router.small
    checks: dict[str, dict[str, Any]] = {}
    for part, engine in engines.items():
        reason = getattr(engine, "down_reason", None)
        checks[part] = {"name": engine.info.name, "status": "down" if reason else "ok"}
        if hasattr(engine, "servers"):  # model_servers: each one's state (remote.py)
            checks[part]["servers"] = engine.servers()
            if reason:
                checks[part]["reason"] = reason
            continue
        if reason:
            checks[part]["reason"] = (
                f"the model stopped ({reason}); restart the server or "
                "reload the model (POST /api/v1/models/reload)"
            )
    try:
        with rt.store.reading() as conn:
            conn.execute(sa.text("SELECT 1"))
        checks["database"] = {"status": "ok"}
    except StorageError as exc:
        checks["database"] = {"status": "down", "reason": exc.message}
    with contextlib.suppress(OSError):  # the data dir may be gone: the report says the rest
        checks["database"]["disk_free_mb"] = shutil.disk_usage(rt.settings.data_dir).free // 2**20
    # Redis degraded is not down: replies are still served (cache misses, per-instance limits)
    checks["redis"] = rt.shared.health()
    bad = [(part, c) for part, c in checks.items() if c["status"] not in ("ok", "off")]
    problems = [f"{part}: {c['reason']}" for part, c in bad]
    down = any(c["status"] == "down" for _, c in bad)
    status = "down" if down else "degraded" if problems else "ok"
    return {"status": status, "redis": checks["redis"]["status"], "problems": problems,
            "checks": checks}


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
