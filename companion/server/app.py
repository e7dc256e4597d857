"""create_app: the FastAPI application, its lifespan and its error handlers."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from companion import __version__
from companion.config import Settings
from companion.errors import CompanionError
from companion.jsonbody import printable
from companion.runtime import Runtime, open_runtime
from companion.server.access import authorize, check_policies
from companion.server.badinput import (
    JSONBodyCheck,
    http_error,
    openai_status,
    overflow_error,
    unexpected_error,
)
from companion.server.observe import TimingMiddleware
from companion.server.observe import router as observe_router
from companion.server.openai_api import openai_error, openai_http_error
from companion.server.openai_api import router as openai_router
from companion.server.report_routes import router as report_router
from companion.server.routes import router
from companion.server.security import BodyLimit
from companion.storage.faults import storage_error

log = logging.getLogger("companion.server")

STATIC = Path(__file__).parent / "static"


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    """The app; it opens its own runtime at start-up unless one is given (tests share one)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        app.state.runtime = runtime or await asyncio.to_thread(open_runtime, settings)
        app.state.limits = app.state.runtime.shared.limits  # Redis with redis_url: all instances
        companion = app.state.runtime.companion
        companion.stats.metrics.watch_engine(lambda: companion.engine.stats())
        companion.stats.metrics.watch_routing(
            lambda: companion.router.stats(companion.engine) if companion.router else {}
        )
        log.info(
            "serving %s on http://%s:%d",
            app.state.runtime.model_info.name,
            settings.host,
            settings.port,
        )
        companion.stats.loop_lag.start()  # event-loop lag, in /api/v1/stats
        try:
            yield
        finally:
            await companion.settle()  # replies sent but not yet cached or learned from
            await companion.stats.loop_lag.stop()
            if getattr(app.state, "report_job", None) is not None:
                await asyncio.to_thread(app.state.report_job.stop)
            if owned:
                await asyncio.to_thread(app.state.runtime.close)

    app = FastAPI(
        title="companion",
        version=__version__,
        description="A self-hosted AI companion: local LLM, memory, personality.",
        lifespan=lifespan,
    )
    secured = [Depends(authorize)]  # every route's rule: companion/server/policy.py
    app.include_router(router, dependencies=secured)
    app.include_router(openai_router, dependencies=secured)
    app.include_router(observe_router, dependencies=secured)
    app.include_router(report_router, dependencies=secured)
    app.add_middleware(JSONBodyCheck)  # inside BodyLimit: reads a bounded body
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(TimingMiddleware)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_api_route("/", _index, include_in_schema=False, dependencies=secured)
    app.add_exception_handler(CompanionError, _companion_error)
    app.add_exception_handler(OperationalError, _database_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(OverflowError, overflow_error)  # a number too big: 422
    app.add_exception_handler(StarletteHTTPException, _http_error)  # 404, 405 ...: JSON
    app.add_exception_handler(Exception, unexpected_error)  # a bug: 500 JSON, traceback logged
    app.state.routes = check_policies(app)  # every route has a rule, or the app does not start
    return app


async def _index() -> FileResponse:
    """The chat page (no build step: plain HTML, CSS and JS)."""
    return FileResponse(STATIC / "index.html")


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if field:
        body["field"] = field
    return {"error": body}


def _is_openai(request: Request) -> bool:
    return request.url.path.startswith("/v1/")


async def _companion_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CompanionError)
    if exc.status_code >= 500:
        log.warning(
            "%s %s -> %d %s: %s",
            request.method,
            request.url.path,
            exc.status_code,
            exc.code,
            exc.message,
        )
    retry = getattr(exc, "retry_after_s", None)  # Overloaded, DatabaseUnavailable
    headers = {"Retry-After": str(retry)} if retry is not None else None
    if _is_openai(request):
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        resp = openai_error(openai_status(exc.status_code), exc.message, kind, exc.field, exc.code)
        resp.headers.update(headers or {})
        return resp
    return JSONResponse({"error": exc.to_dict()}, status_code=exc.status_code, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Any:
    """Starlette's own errors (no such route, wrong method): OpenAI's shape under /v1."""
    assert isinstance(exc, StarletteHTTPException)
    if _is_openai(request):
        return openai_http_error(request, exc)
    return await http_error(request, exc)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """A database fault outside the Store (full, read-only, locked, I/O) as 507/503 JSON."""
    error = storage_error(exc)
    if error is None:
        raise exc  # not a fault but a bug: the usual 500, traceback in the log
    return await _companion_error(request, error)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    field = ".".join(loc) or None
    if first.get("type") == "json_invalid":
        message, field = "request body is not valid JSON", None
    else:
        message = f"{field or 'body'}: {first.get('msg')}"
    if _is_openai(request):
        return openai_error(400, message, "invalid_request_error", field, "invalid_value")
    body = error_body("invalid_input", printable(message), field and printable(field))
    # NaN and Infinity (which Python's JSON accepts) go back as strings: JSON has no such numbers;
    # text that cannot be UTF-8 (a lone surrogate) goes back as '?'
    echoed = json.dumps(errors, default=str, ensure_ascii=False).encode("utf-8", "replace")
    body["detail"] = json.loads(echoed, parse_constant=str)
    return JSONResponse(body, status_code=422)
