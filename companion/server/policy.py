"""Who may call each route, declared once: `POLICY` maps "METHOD /path/template" to a rule.

Adding a route? Add ONE line to `POLICY` below, e.g. `"POST /api/v1/things": USER,`.
The app refuses to start while a route has no line here (access.py enforces the rules), and
tests/server/test_authz_matrix.py
calls every operation of the OpenAPI schema as anonymous, the owner, another user and an admin
and checks the outcome against the route's rule.

    PUBLIC         anyone, no key needed (health checks)
    USER           any valid key; the request acts for the key's own user (a `user_id` it
                   names in the path, query or body must be its own)
    OWNER          the user named by the path's {user_id}, or who owns the path's {session_id}
                   or {message_id} (a session that does not exist yet may be created by anyone,
                   as their own)
    ADMIN          admin keys only (server-wide operations, every user's data at once)
    PERSONA_READ   a shared persona, or the caller's own private persona
    PERSONA_WRITE  the caller's own private persona; shared personas: admins only

An admin key passes every rule and may act for any user. Without auth (`auth = false`, which
only a loopback bind allows) every caller is an admin. Anonymous callers get 401 on every rule
but PUBLIC; a key that may not get 403.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from companion.auth import Forbidden, Principal
from companion.errors import NotFound
from companion.server.security import own_user
from companion.storage import Store
from companion.storage.conversations import get_message

Check = Callable[[Request, Principal], Awaitable[None]]


@dataclass(frozen=True)
class Rule:
    """One way of deciding who may call a route (see the module's notes)."""

    name: str
    anonymous: bool  # True: no key needed
    check: Check

    def __repr__(self) -> str:
        return self.name


async def _anyone(request: Request, principal: Principal) -> None:
    """Everyone passes (a `user_id` named in the path or query is checked by authenticate)."""


async def _admin(request: Request, principal: Principal) -> None:
    if not principal.admin:
        raise Forbidden("an admin API key is needed for this route")


async def _owner(request: Request, principal: Principal) -> None:
    """The path's user, or the owner of the path's session or message (when it exists)."""
    if principal.admin:
        return
    store = request.app.state.runtime.store
    owner = await asyncio.to_thread(_owner_of, store, request.path_params)
    if owner is not None:
        own_user(request, owner)


def _owner_of(store: Store, params: dict[str, Any]) -> str | None:
    """Who owns the path's {session_id} or {message_id}; None when neither names a stored one
    (the route then says 404 or 422)."""
    session_id = params.get("session_id")
    if session_id is None and "message_id" in params:
        try:
            session_id = get_message(store, int(params["message_id"])).session_id
        except (NotFound, ValueError, OverflowError):
            return None
    session = store.get_session(session_id) if isinstance(session_id, str) else None
    return session.user_id if session is not None else None


def _persona_check(write: bool) -> Check:
    async def check(request: Request, principal: Principal) -> None:
        persona_id = request.path_params.get("persona_id")
        personal = getattr(request.app.state.runtime.companion, "personal", None)
        if persona_id is None or principal.admin or personal is None:
            return
        await asyncio.to_thread(
            personal.personas.check_access, persona_id, principal.user_id, write
        )

    return check


PUBLIC = Rule("PUBLIC", True, _anyone)
USER = Rule("USER", False, _anyone)
OWNER = Rule("OWNER", False, _owner)
ADMIN = Rule("ADMIN", False, _admin)
PERSONA_READ = Rule("PERSONA_READ", False, _persona_check(write=False))
PERSONA_WRITE = Rule("PERSONA_WRITE", False, _persona_check(write=True))

USERS = "/api/v1/users/{user_id}"
PERSONA = "/api/v1/personas/{persona_id}"

# fmt: off
POLICY: dict[str, Rule] = {
    # meta
    "GET /": PUBLIC,  # the chat page (it asks for a key itself when auth is on)
    "GET /api/v1/me": USER,
    "GET /healthz": PUBLIC,
    "GET /api/v1/health": PUBLIC,
    "GET /metrics": ADMIN,
    "GET /api/v1/stats": ADMIN,
    "GET /api/v1/models": USER,
    "POST /api/v1/models/reload": ADMIN,
    # chat and sessions
    "POST /api/v1/chat": USER,
    "GET /api/v1/sessions": USER,
    "GET /api/v1/sessions/{session_id}/messages": OWNER,
    "POST /api/v1/sessions/{session_id}/open": OWNER,
    "PATCH /api/v1/sessions/{session_id}": OWNER,
    "DELETE /api/v1/sessions/{session_id}": OWNER,
    f"GET {USERS}/search": OWNER,
    "POST /api/v1/messages/{message_id}/regenerate": OWNER,
    "POST /api/v1/messages/{message_id}/continue": OWNER,
    "POST /api/v1/messages/{message_id}/edit": OWNER,
    # response cache
    "POST /api/v1/cache/cleanup": ADMIN,
    "DELETE /api/v1/cache": ADMIN,
    # memories
    f"GET {USERS}/memories": OWNER,
    f"POST {USERS}/memories": OWNER,
    f"GET {USERS}/memories/search": OWNER,
    f"GET {USERS}/memories/history": OWNER,
    f"PATCH {USERS}/memories/{{memory_id}}": OWNER,
    f"DELETE {USERS}/memories/{{memory_id}}": OWNER,
    "POST /api/v1/memories/cleanup": ADMIN,
    f"GET {USERS}/episodes": OWNER,
    # a user's data
    f"GET {USERS}/export": OWNER,
    f"DELETE {USERS}": OWNER,
    # personas: shared ones are the admins', private ones their creator's
    "GET /api/v1/personas": USER,
    "POST /api/v1/personas": USER,
    "POST /api/v1/personas/import": USER,
    f"GET {PERSONA}": PERSONA_READ,
    f"GET {PERSONA}/card": PERSONA_READ,
    f"GET {PERSONA}/avatar": PERSONA_READ,
    f"PATCH {PERSONA}": PERSONA_WRITE,
    f"DELETE {PERSONA}": PERSONA_WRITE,
    f"GET {USERS}/persona": OWNER,
    f"PUT {USERS}/persona": OWNER,
    # the performance report (issue 18)
    "GET /api/v1/report": USER,
    "GET /api/v1/report/html": USER,
    "GET /api/v1/report/run": USER,
    "POST /api/v1/report/run": ADMIN,
    # OpenAI-compatible API
    "GET /v1/models": USER,
    "GET /v1/models/{model_id}": USER,
    "POST /v1/completions": USER,
    "POST /v1/chat/completions": USER,
    "POST /v1/embeddings": USER,
}
# fmt: on


def operation(method: str, path: str) -> str:
    """The policy key of a route: `METHOD /path/template`."""
    return f"{method.upper()} {path}"


def rule_of(method: str, path: str) -> Rule | None:
    """The declared rule of a route, or None."""
    return POLICY.get(operation(method, path))
