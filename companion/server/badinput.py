"""Input no route can use, refused before any route sees it (422 with a JSON error body).

- A JSON body holding a lone UTF-16 surrogate (`"\\ud800"`): JSON allows the escape, Python
  decodes it, but such a string cannot be encoded as UTF-8, so SQLite, the tokenizer and the
  response could not take it. Checked here once for every route.
- A number too large for the C or SQLite integer it reaches (OverflowError): a handler turns
  it into 422 wherever a route forgot a bound.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def invalid_input(path: str, message: str, field: str | None = None) -> JSONResponse:
    """422 in the shape of the route's API: OpenAI's under /v1/, companion's elsewhere."""
    if path.startswith("/v1/"):
        body: dict[str, Any] = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": field,
                "code": "invalid_input",
            }
        }
    else:
        body = {"error": {"code": "invalid_input", "message": message}}
        if field:
            body["error"]["field"] = field
    return JSONResponse(body, status_code=422)


def lone_surrogate_field(body: bytes) -> str | None:
    """Where a JSON body holds a string with a lone surrogate ("" for the top level), or None
    when it holds none (or is no JSON: the route reports that)."""
    if not _SURROGATE_ESCAPE.search(body):
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return _find_surrogate(data, "")


def _find_surrogate(value: Any, where: str) -> str | None:
    if isinstance(value, str):
        return None if _encodable(value) else where
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)  # type: ignore[assignment]
    else:
        return None
    for key, item in items:
        name = f"{where}.{key}" if where else str(key)
        if isinstance(key, str) and not _encodable(key):
            return name
        found = _find_surrogate(item, name)
        if found is not None:
            return found
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class RejectUnencodableText:
    """422 for request bodies with a lone surrogate in a JSON string (see the module doc).

    The body is read whole (BodyLimit, outside this, bounds it) and handed on unchanged.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _WITH_BODY:
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
        field = lone_surrogate_field(body)
        if field is not None:
            response = invalid_input(
                scope["path"],
                f"{field or 'body'}: text holds a lone UTF-16 surrogate "
                "(an unpaired \\ud800-\\udfff escape), which is not valid Unicode",
                field or None,
            )
            await response(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def overflow_error(request: Request, exc: Exception) -> JSONResponse:
    """A number too large for the integer it is stored in: the caller's input, so 422."""
    return invalid_input(request.url.path, f"a number in the request is out of range ({exc})")
