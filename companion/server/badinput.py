"""One body-parsing and error path for every route: bad input is a 4xx JSON error, never a 500.

- Every JSON request body is checked before any route sees it (JSONBodyCheck, with
  companion/jsonbody.py): strict UTF-8 (raw surrogate bytes such as `ED A0 80` are not),
  at most 64 levels of nesting, valid JSON, no lone `\\ud800` escapes. Each is 422.
- Unknown routes (404), wrong methods (405) and other HTTP errors get the same JSON shape.
- A number too large for the C or SQLite integer it reaches (OverflowError): 422.
- Anything else unexpected: 500 in that shape, with the traceback in the server log.

The shape is `{"error": {"code", "message", "field"?}}`, and OpenAI's
`{"error": {"message", "type", "param", "code"}}` for routes under /v1/.
"""

from __future__ import annotations

import logging
from email.message import Message as MimeHeader
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from companion.errors import InputError
from companion.jsonbody import parse_json, printable
from companion.server.access import route_path

log = logging.getLogger("companion.server")

_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


def error_response(
    path: str,
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error in the shape of the route's API: OpenAI's under /v1/, companion's elsewhere."""
    message = printable(message)
    if path.startswith("/v1/"):
        status = openai_status(status)
        kind = "invalid_request_error" if status < 500 else "server_error"
        body: dict[str, Any] = {
            "error": {"message": message, "type": kind, "param": field, "code": code}
        }
    else:
        body = {"error": {"code": code, "message": message}}
        if field:
            body["error"]["field"] = printable(field)
    return JSONResponse(body, status_code=status, headers=headers)


def openai_status(status: int) -> int:
    """The status OpenAI's API gives: a request it cannot use is a 400 there, never a 422 (the
    SDKs raise BadRequestError for it)."""
    return 400 if status == 422 else status


def invalid_input(path: str, message: str, field: str | None = None) -> JSONResponse:
    """422 invalid_input in the route's API's shape (400 under /v1/)."""
    return error_response(path, 422, "invalid_input", message, field)


def _parsed_as_json(scope: Scope) -> bool:
    """True when the route will parse the body as JSON: it declares a body model and the
    content type is JSON or absent (FastAPI's rule). Raw-body routes (card import) parse
    their own bytes."""
    table = getattr(getattr(scope.get("app"), "state", None), "routes", None)
    endpoint = table.find(scope["method"], route_path(scope)) if table is not None else None
    if endpoint is None or not endpoint.has_body:
        return False
    content_type = dict(scope["headers"]).get(b"content-type")
    if not content_type:
        return True
    header = MimeHeader()
    header["content-type"] = content_type.decode("latin-1")
    subtype = header.get_content_subtype()
    return header.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class JSONBodyCheck:
    """422 for a JSON request body that is not strict UTF-8, nests too deep, is not JSON or
    holds a lone surrogate (see the module doc). The body is read whole (BodyLimit, outside
    this, bounds it) and handed on unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in _WITH_BODY
            or not _parsed_as_json(scope)
        ):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body.strip():
            try:
                parse_json(body)
            except InputError as exc:
                await invalid_input(scope["path"], exc.message, exc.field)(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's HTTP errors (unknown route, wrong method, ...) in the documented shape."""
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if status == 404:
        message = f"no route {request.method} {request.url.path}"
    elif status == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    code = _HTTP_CODES.get(status, "internal_error" if status >= 500 else f"http_{status}")
    return error_response(request.url.path, status, code, message, headers=exc.headers)


async def overflow_error(request: Request, exc: Exception) -> JSONResponse:
    """A number too large for the integer it is stored in: the caller's input, so 422."""
    return invalid_input(request.url.path, f"a number in the request is out of range ({exc})")


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug: 500 in the documented shape; the traceback goes to the log, not the client."""
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(
        request.url.path, 500, "internal_error", "internal error; the server log has the details"
    )
