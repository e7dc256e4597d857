"""Who may call what: API-key authentication, ownership checks, per-user limits, body size."""

from __future__ import annotations

import ipaddress

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from companion.auth import Forbidden, KeyStore, Principal, Unauthorized
from companion.config import Settings
from companion.errors import ConfigError

OPEN = Principal("*", admin=True)  # no-auth mode (loopback only): every caller may do everything
ANONYMOUS = Principal("~anonymous")  # no key, on a PUBLIC route with auth on: may act for nobody


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> None:
    """Refuse to serve a non-loopback address without API keys."""
    if not settings.auth and not is_loopback(settings.host):
        raise ConfigError(
            f"refusing to listen on {settings.host} without API keys: set auth = true "
            "(COMPANION_AUTH=1) and create keys with `companion keys create USER`",
            field="host",
        )


async def authenticate(request: Request, *, anonymous: bool = False) -> Principal:
    """The caller: a bearer key's user; everyone (admin) in no-auth mode; ANONYMOUS on an
    `anonymous` route (policy.py's PUBLIC) called without a key. Called by access.authorize.

    A `user_id` in the path or query must be the caller's own unless the key is an admin key.
    """
    runtime = request.app.state.runtime
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    has_key = scheme.lower() == "bearer" and bool(key.strip())
    if not runtime.settings.auth:
        principal = OPEN
    elif not has_key and not anonymous:
        raise Unauthorized("missing API key: send Authorization: Bearer <key>")
    elif not has_key:
        principal = ANONYMOUS
    else:
        try:
            principal = KeyStore(runtime.store).verify(key.strip())
        except Unauthorized:
            if not anonymous:
                raise
            principal = ANONYMOUS  # a stale key on a health check is no reason to refuse it
    request.state.principal = principal
    claimed = request.path_params.get("user_id") or request.query_params.get("user_id")
    if claimed is not None:
        own_user(request, claimed)
    return principal


def principal_of(request: Request) -> Principal:
    principal: Principal = getattr(request.state, "principal", OPEN)
    return principal


def own_user(request: Request, user_id: str | None) -> str | None:
    """The user a request acts for: its own, or any for admin / no-auth; else 403."""
    p = principal_of(request)
    if p.admin:
        return user_id
    if user_id is not None and user_id != p.user_id:
        raise Forbidden("this API key may only act for its own user", field="user_id")
    return p.user_id


def require_admin(request: Request) -> None:
    if not principal_of(request).admin:
        raise Forbidden("an admin API key is needed for this route")


class BodyLimit:
    """Rejects request bodies over `max_bytes` with 413 before the route reads them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _too_large(self.max_bytes)(scope, receive, send)
            return
        seen = 0

        async def counted() -> dict[str, object]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))  # type: ignore[arg-type]
            if seen > self.max_bytes:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLarge:
            await _too_large(self.max_bytes)(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(
        {
            "error": {
                "code": "too_large",
                "message": f"request body over {limit} bytes (max_body_bytes)",
            }
        },
        status_code=413,
    )
