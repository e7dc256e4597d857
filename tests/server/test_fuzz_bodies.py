"""Byte-level fuzz of request bodies on every operation of the OpenAPI schema (hypothesis).

Whatever bytes arrive (random bytes, invalid or surrogate UTF-8, JSON nested thousands deep,
truncated JSON, JSON of any shape, with any content type), no operation answers 5xx, and every
4xx carries the documented error shape: `{"error": {"code", "message", "field"?}}`, or
OpenAI's `{"error": {"message", "type", "param", "code"}}` under /v1/.

The real app (tiny model, real SQLite file) in process, as an admin so the bodies reach every
route; replies are held to 2 tokens. The examples are bounded and derandomized.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from companion.auth import KeyStore
from companion.runtime import open_runtime
from companion.server.app import create_app
from tests.conftest import keyed_settings, stop_report_run

EXAMPLES = 15  # per operation
# path parameters: a user and resources that exist nowhere, so nothing real is changed
PATH_VALUES = {
    "user_id": "fuzz",
    "session_id": "fuzz-session",
    "memory_id": "1",
    "persona_id": "fuzz-persona",
    "message_id": "999999",
    "model_id": "fuzz-model",
}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str, list]]:
    data = Path(tmp_path_factory.mktemp("fuzz")) / "data"
    config = keyed_settings(data)
    rt = open_runtime(config)
    admin = KeyStore(rt.store).create("ops", admin=True)[0]
    app: FastAPI = create_app(config, rt)
    ops = [
        (method.upper(), path.format(**PATH_VALUES))
        for path, item in app.openapi()["paths"].items()
        for method in item
    ]
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, admin, ops
    rt.close()


# text that may hold lone surrogates (category Cs), which JSON can carry but UTF-8 cannot
_text = st.text(st.characters(categories=["Cs", "Lu", "Ll", "Nd", "Zs", "Cc", "So"]), max_size=20)
_scalars = st.none() | st.booleans() | st.integers() | st.floats() | _text
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)
# keys the routes know, so some bodies get past the first field check
_KEYS = [
    "message",
    "user_id",
    "session_id",
    "max_tokens",
    "stream",
    "text",
    "importance",
    "topics",
    "name",
    "traits",
    "tags",
    "persona_id",
    "messages",
    "input",
    "size",
    "system_prompt",
    "example_lines",
    "extensions",
    "data",
    "spec",
]
_shaped = st.dictionaries(st.sampled_from(_KEYS), _json, max_size=5)


def _nested(depth: int, opener: str) -> bytes:
    """`[[[...]]]` or `{"a":{"a":...1}}`, `depth` levels deep."""
    if opener == "[":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def _mutate(data: bytes, cut: int, insert: bytes) -> bytes:
    at = cut % (len(data) + 1)
    return data[:at] + insert + data[at:]


_BAD_BYTES = st.sampled_from(
    [
        b"\xed\xa0\x80",
        b"\xed\xbf\xbf",
        b"\xff",
        b"\xc0\xaf",
        b"\x00",
        b'"\\ud800"',
        b"\\udfff",
        b"NaN",
        b"1e400",
        b"\xef\xbb\xbf",
    ]
)


def _encoded(value: Any, escape: bool) -> bytes:
    """JSON bytes; a lone surrogate goes as a `\\ud800` escape or as raw bytes (ED A0 80)."""
    return json.dumps(value, ensure_ascii=escape).encode("utf-8", "surrogatepass")


_bodies = st.one_of(
    st.binary(max_size=200),
    st.builds(_encoded, _json, st.booleans()),
    st.builds(_encoded, _shaped, st.booleans()),
    st.builds(
        _mutate, st.builds(_encoded, _shaped, st.booleans()), st.integers(0, 400), _BAD_BYTES
    ),
    st.builds(_nested, st.sampled_from([65, 1000, 5000, 100_000]), st.sampled_from(["[", "{"])),
    st.builds(_encoded, _shaped, st.booleans()).map(lambda b: b[: len(b) // 2]),  # truncated
)
# on every operation, whatever is drawn: the attacker's bodies (raw surrogate bytes, 1,000
# levels of nesting, invalid UTF-8) and an escaped lone surrogate
KNOWN = [
    b'{"message": "\xed\xa0\x80", "text": "\xed\xa0\x80", "name": "\xed\xa0\x80"}',
    _nested(1000, "["),
    _nested(1000, "{"),
    b'{"message": "\xff\xfe", "input": "x"}',
    b'{"message": "\\ud800", "input": "\\udfff", "text": "\\ud800"}',
]
_content_types = st.sampled_from(
    [
        None,
        "application/json",
        "text/plain",
        "image/png",
        "application/x-www-form-urlencoded",
        "application/ld+json",
    ]
)


def check_error_shape(path: str, resp: Any) -> None:
    """A 4xx answer is JSON in the route's API's documented error shape."""
    assert resp.headers["content-type"].startswith("application/json"), resp.text
    body = resp.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"], error
    if path.startswith("/v1/"):
        assert set(error) == {"message", "type", "param", "code"}, error
    else:
        assert isinstance(error["code"], str) and set(error) <= {"code", "message", "field"}, error


def fuzz(client: TestClient, admin: str, method: str, path: str) -> None:
    """EXAMPLES bodies to one operation; AssertionError on a 5xx or a malformed error."""

    @given(body=_bodies, content_type=_content_types)
    @example(body=KNOWN[0], content_type="application/json")
    @example(body=KNOWN[1], content_type="application/json")
    @example(body=KNOWN[2], content_type=None)
    @example(body=KNOWN[3], content_type="application/json")
    @example(body=KNOWN[4], content_type="application/json")
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(body: bytes, content_type: str | None) -> None:
        headers = {"Authorization": f"Bearer {admin}"}
        if content_type:
            headers["content-type"] = content_type
        resp = client.request(method, path, content=body, headers=headers)
        stop_report_run(client.app)  # an admin may start one: it is not to run here
        assert resp.status_code < 500, (body[:80], resp.text[:300])
        if resp.status_code >= 400:
            check_error_shape(path, resp)

    run()


def test_no_body_makes_a_5xx_or_an_undocumented_error(
    fuzzed: tuple[TestClient, str, list[tuple[str, str]]],
) -> None:
    client, admin, ops = fuzzed
    failures: list[str] = []
    for method, path in ops:
        try:
            fuzz(client, admin, method, path)
        except Exception as exc:  # every operation's failures (hypothesis may group them)
            failures.append(f"{method} {path}: {exc}")
    assert len(ops) >= 30
    assert not failures, "\n\n".join(failures)
