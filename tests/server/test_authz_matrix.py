"""The authorization matrix: every operation of the OpenAPI schema x anonymous, the owner,
another user and an admin, against the rule companion/server/policy.py declares for it.

The real app (tiny model, real SQLite file, keys on) in process. Each role's expected outcome
is declared once per rule (EXPECTED); a role the rule lets through must get a 2xx from a valid
request (REQUESTS), so a pass means the route really ran. A route with no declared rule fails
here (and the app refuses to start).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from companion.auth import KeyStore, Unauthorized
from companion.errors import ConfigError
from companion.persona.avatars import save_avatar
from companion.persona.card import blank_png
from companion.persona.model import persona_from
from companion.report.job import record_latest, reports_dir
from companion.runtime import Runtime, open_runtime
from companion.server.access import RouteTable, authorize, check_policies
from companion.server.app import create_app
from companion.server.policy import (
    ADMIN,
    OWNER,
    PERSONA_READ,
    PERSONA_WRITE,
    POLICY,
    PUBLIC,
    USER,
    Rule,
    operation,
    rule_of,
)
from tests.conftest import keyed_settings, stop_report_run

OK = "2xx"
ROLES = ("anonymous", "other", "owner", "admin")  # the owner (and admin) may delete: last
# What each role gets under each rule: OK (the route runs), or the refusal's status.
EXPECTED: dict[Rule, dict[str, int | str]] = {
    PUBLIC: {"anonymous": OK, "owner": OK, "other": OK, "admin": OK},
    USER: {"anonymous": 401, "owner": OK, "other": OK, "admin": OK},
    OWNER: {"anonymous": 401, "owner": OK, "other": 403, "admin": OK},
    ADMIN: {"anonymous": 401, "owner": 403, "other": 403, "admin": OK},
    # another user's private persona does not exist for them
    PERSONA_READ: {"anonymous": 401, "owner": OK, "other": 404, "admin": OK},
    PERSONA_WRITE: {"anonymous": 401, "owner": OK, "other": 404, "admin": OK},
}

OWNER_ID, OTHER_ID = "alice", "bob"
SESSION, PERSONA = "s-alice", "alice-muse"
_n = itertools.count()


def _card() -> bytes:
    return json.dumps({"spec": "chara_card_v2", "data": {"name": f"Card {next(_n)}"}}).encode()


# A valid request for each operation that needs more than its path: a body (a function, so
# each call can differ) and query parameters. Other operations get a body built from the
# schema's required fields.
REQUESTS: dict[str, dict[str, Callable[[], Any]]] = {
    "POST /api/v1/chat": {"json": lambda: {"message": "Hello there!", "max_tokens": 2}},
    "POST /api/v1/sessions/{session_id}/open": {"json": lambda: {}},
    "POST /api/v1/models/reload": {"json": lambda: {}},
    "POST /api/v1/users/{user_id}/memories": {"json": lambda: {"text": f"Note {next(_n)}"}},
    "PATCH /api/v1/users/{user_id}/memories/{memory_id}": {"json": lambda: {"importance": 0.5}},
    "GET /api/v1/users/{user_id}/memories/search": {"params": lambda: {"q": "tea"}},
    "POST /api/v1/personas": {"json": lambda: {"name": f"Muse {next(_n)}"}},
    "POST /api/v1/personas/import": {"content": _card},
    "PATCH /api/v1/personas/{persona_id}": {"json": lambda: {"description": "Kind."}},
    "PUT /api/v1/users/{user_id}/persona": {"json": lambda: {"persona_id": PERSONA}},
    "POST /v1/chat/completions": {
        "json": lambda: {"messages": [{"role": "user", "content": "Hi!"}], "max_tokens": 2}
    },
    "POST /v1/embeddings": {"json": lambda: {"input": "hello"}},
    "POST /v1/completions": {"json": lambda: {"prompt": "Once upon", "max_tokens": 2}},
    "PATCH /api/v1/sessions/{session_id}": {"json": lambda: {"title": "Renamed"}},
    "GET /api/v1/users/{user_id}/search": {"params": lambda: {"q": "hello"}},
    "POST /api/v1/messages/{message_id}/regenerate": {"json": lambda: {"max_tokens": 2}},
    "POST /api/v1/messages/{message_id}/continue": {"json": lambda: {"max_tokens": 2}},
    "POST /api/v1/messages/{message_id}/edit": {"json": lambda: {"text": "Hi!", "max_tokens": 2}},
}


class World:
    """The runtime, the keys of each role and the owner's resources (made again as needed)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.keys = KeyStore(rt.store)
        self.key = {
            "owner": self.keys.create(OWNER_ID)[0],
            "other": self.keys.create(OTHER_ID)[0],
            "admin": self.keys.create("ops", admin=True)[0],
        }
        self.memory_id = self.reply_id = self.asked_id = 0

    def headers(self, role: str) -> dict[str, str]:
        return {} if role == "anonymous" else {"Authorization": f"Bearer {self.key[role]}"}

    def ensure(self) -> None:
        """The owner, their key, session, a memory and a private persona exist."""
        try:
            self.keys.verify(self.key["owner"])
        except Unauthorized:  # the owner was deleted (DELETE /users/{user_id})
            self.key["owner"] = self.keys.create(OWNER_ID)[0]
        store = self.rt.store
        store.create_session(OWNER_ID, SESSION, "matrix")
        asked = store.add_message(SESSION, "user", "Hello there", status="pending")
        self.reply_id = store.complete_exchange(
            asked.id,
            "Hi",
            user_tokens=2,
            reply_tokens=1,
            model="m",
            cached=False,
            timings={},
            finish_reason="length",
        ).id  # the last reply, cut at max_tokens: it may be regenerated and continued
        self.asked_id = asked.id
        personal = self.rt.companion.personal
        memory = personal.memory
        self.memory_id = memory.add(OWNER_ID, f"Alice drinks tea no. {next(_n)}").id
        personas = personal.personas
        if PERSONA not in {p.id for p in personas.all(OWNER_ID)}:
            personas.create(persona_from({"id": PERSONA, "name": "Muse"}), owner_id=OWNER_ID)
            save_avatar(store, PERSONA, blank_png("Muse"))

    def report(self) -> None:
        """A stored report for the report routes to show."""
        out = reports_dir(self.rt.settings) / "matrix"
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text("{}")
        (out / "report.html").write_text("<html></html>")
        record_latest(self.rt.settings, out)

    def path(self, template: str) -> str:
        message = self.asked_id if template.endswith("/edit") else self.reply_id
        return template.format(
            user_id=OWNER_ID,
            session_id=SESSION,
            persona_id=PERSONA,
            memory_id=self.memory_id,
            message_id=message,
            model_id=self.rt.model_info.name,
        )


@pytest.fixture(scope="module")
def app_and_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FastAPI, World]]:
    data = Path(tmp_path_factory.mktemp("matrix")) / "data"
    settings = keyed_settings(data)
    rt = open_runtime(settings)
    world = World(rt)
    world.report()
    yield create_app(settings, rt), world
    rt.close()


def operations(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, OpenAPI operation) of every operation in the schema."""
    return [
        (method.upper(), path, op)
        for path, item in app.openapi()["paths"].items()
        for method, op in item.items()
    ]


def test_every_operation_in_the_schema_has_a_declared_rule(
    app_and_world: tuple[FastAPI, World],
) -> None:
    app, _ = app_and_world
    ops = {operation(m, p) for m, p, _ in operations(app)}
    missing = sorted(op for op in ops if rule_of(*op.split(" ", 1)) is None)
    assert not missing, f"declare a rule in companion/server/policy.py for: {missing}"
    served = {operation(e.method, e.path) for e in RouteTable(app).endpoints}
    assert not set(POLICY) - served, f"rules for routes that do not exist: {set(POLICY) - served}"
    assert len(ops) >= 30


def test_an_app_with_an_undeclared_or_unguarded_route_does_not_start(
    app_and_world: tuple[FastAPI, World],
) -> None:
    app, _ = app_and_world
    extra = FastAPI()
    extra.router.routes.extend(app.routes)

    @extra.post("/api/v1/undeclared", dependencies=[Depends(authorize)])
    async def undeclared() -> dict[str, str]:
        return {}

    with pytest.raises(ConfigError, match="POST /api/v1/undeclared"):
        check_policies(extra)
    unguarded = FastAPI()

    @unguarded.get("/api/v1/stats")  # declared, but nothing runs authorize before it
    async def stats() -> dict[str, str]:
        return {}

    with pytest.raises(ConfigError, match="skip authorization: GET /api/v1/stats"):
        check_policies(unguarded)


def _request(spec: dict[str, Any], method: str, path: str, op: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of a valid call to the operation."""
    given = REQUESTS.get(operation(method, path))
    if given is not None:
        return {name: make() for name, make in given.items()}
    body = op.get("requestBody", {}).get("content", {}).get("application/json")
    return {"json": _example(spec, body["schema"])} if body else {}


def _example(spec: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A minimal value of a JSON schema (required fields only) for operations not in REQUESTS."""
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {k: _example(spec, props[k]) for k in schema.get("required", [])}
    return {"string": "x", "integer": 1, "number": 0.5, "boolean": False, "array": []}.get(
        kind or "string"
    )


def _outcome(status: int) -> int | str:
    return OK if 200 <= status < 300 else status


@pytest.mark.timeout(1200)  # ~20 two-token replies: seconds, unless the CPU is shared 10 ways
def test_every_operation_under_every_role(app_and_world: tuple[FastAPI, World]) -> None:
    app, world = app_and_world
    spec = app.openapi()
    wrong: list[str] = []
    with TestClient(app, raise_server_exceptions=False) as client:
        for method, path, op in operations(app):
            rule = rule_of(method, path)
            assert rule is not None, f"no rule for {method} {path}"
            for role in ROLES:
                world.ensure()
                resp = client.request(
                    method,
                    world.path(path),
                    headers=world.headers(role),
                    **_request(spec, method, path, op),
                )
                stop_report_run(app)  # an admin may start one: it is not to run here
                got, want = _outcome(resp.status_code), EXPECTED[rule][role]
                if got != want:
                    wrong.append(
                        f"{method} {path} [{rule}] as {role}: {resp.status_code} "
                        f"(expected {want}) {resp.text[:160]}"
                    )
                elif got != OK:
                    assert "error" in resp.json(), resp.text
    assert not wrong, "\n".join(wrong)
