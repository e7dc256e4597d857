"""Enforcing policy.py's rules: the route table built at start-up and the router dependency.

create_app builds a RouteTable of every API endpoint (method, full path template, rule) and
refuses to start when an endpoint has no rule or does not run `authorize` (its router was
included without `dependencies=[Depends(authorize)]`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fastapi.routing
from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.routing import compile_path
from starlette.types import Scope

from companion.auth import Forbidden, Principal
from companion.errors import ConfigError
from companion.server.policy import Rule, operation, rule_of
from companion.server.security import authenticate, principal_of


@dataclass(frozen=True)
class Endpoint:
    """One method of one API route, with its full path template (as OpenAPI writes it:
    `{id}`, not `{id:path}`) and rule."""

    method: str
    path: str
    pattern: re.Pattern[str]
    route: APIRoute
    rule: Rule | None
    has_body: bool  # the route parses a JSON body (False: no body, or it reads raw bytes)
    guarded: bool  # `authorize` runs before the route


class RouteTable:
    """Every API endpoint of an app, built once at start-up (app.state.routes)."""

    def __init__(self, app: FastAPI) -> None:
        self.endpoints = [
            Endpoint(
                method,
                path_format,
                pattern,
                route,
                rule_of(method, path_format),
                route.body_field is not None,
                authorize in _calls(dependant),
            )
            for route, path, dependant in _api_routes(app)
            for pattern, path_format, _ in [compile_path(path)]
            for method in sorted(route.methods)
        ]

    def find(self, method: str, path: str, route: object = None) -> Endpoint | None:
        """The endpoint a request reaches (`route`: the one the router chose, when known)."""
        found = [
            e for e in self.endpoints if e.method == method and (route is None or e.route is route)
        ]
        if route is not None and len(found) == 1:
            return found[0]
        return next((e for e in found if e.pattern.match(path)), None)

    def undeclared(self) -> list[str]:
        """Every endpoint without a rule in POLICY."""
        return [operation(e.method, e.path) for e in self.endpoints if e.rule is None]

    def unguarded(self) -> list[str]:
        """Every endpoint that does not run `authorize`."""
        return [operation(e.method, e.path) for e in self.endpoints if not e.guarded]


def route_path(scope: Scope) -> str:
    """The path the router matches: the request's, less any root_path it is mounted under."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _api_routes(app: FastAPI) -> Iterator[tuple[APIRoute, str, Any]]:
    """Every API route with its full path and its dependency tree (FastAPI >= 0.160 keeps
    included routers nested)."""
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if contexts is None:  # an older FastAPI: app.routes is flat
        yield from ((r, r.path, r.dependant) for r in app.routes if isinstance(r, APIRoute))
        return
    for context in contexts(app.routes):
        if isinstance(context.original_route, APIRoute):
            yield context.original_route, context.path, context.dependant


def _calls(dependant: Any) -> set[Any]:
    """Every callable a route's dependency tree runs."""
    found: set[Any] = set()
    stack = list(dependant.dependencies)
    while stack:
        dep = stack.pop()
        found.add(dep.call)
        stack.extend(dep.dependencies)
    return found


async def authorize(request: Request) -> Principal:
    """The router dependency: authenticate as the route's rule asks, then apply the rule.

    A route without a declared rule is refused (fail closed; create_app also refuses to start)."""
    table: RouteTable = request.app.state.routes
    endpoint = table.find(request.method, route_path(request.scope), request.scope.get("route"))
    if endpoint is None or endpoint.rule is None:
        raise Forbidden(
            f"no authorization policy is declared for {request.method} {request.url.path}"
        )
    principal = await authenticate(request, anonymous=endpoint.rule.anonymous)
    await endpoint.rule.check(request, principal_of(request))
    return principal


def check_policies(app: FastAPI) -> RouteTable:
    """The app's route table; ConfigError when a route has no declared rule or is not guarded."""
    table = RouteTable(app)
    missing, open_routes = table.undeclared(), table.unguarded()
    if missing:
        raise ConfigError(
            "no authorization policy declared for "
            + ", ".join(missing)
            + ": add one line per route to POLICY in companion/server/policy.py"
        )
    if open_routes:
        raise ConfigError(
            "routes that skip authorization: "
            + ", ".join(open_routes)
            + ": include their router with dependencies=[Depends(authorize)]"
        )
    return table
