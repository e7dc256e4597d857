"""bench openai's structured part: its greedy requests (every schema, every tool) answered by the
real server validate under the bench's own checks, and those checks reject what is not valid."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from companion.bench.openai_api import _valid_call, _valid_json
from companion.bench.openai_cases import SCHEMAS, TOOLS, schema_asks, tool_asks

PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def _reply(content: str | None, calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    finish = "tool_calls" if calls else "stop"
    message = {"role": "assistant", "content": content, "tool_calls": calls}
    return {"choices": [{"index": 0, "finish_reason": finish, "message": message}]}


def _call(name: str, arguments: str) -> dict[str, Any]:
    return {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}


def test_the_checks_reject_what_does_not_validate() -> None:
    _, schema = SCHEMAS[0]
    assert not _valid_json(_reply("not json"), schema)
    assert not _valid_json(_reply(None), schema)
    assert not _valid_json(_reply("{}"), schema) or not schema.get("required")
    name = TOOLS[0]["function"]["name"]
    assert not _valid_call(_reply("plain text"), PARAMS)  # no call at all
    assert not _valid_call(_reply(None, [_call(name, "{not json")]), PARAMS)
    assert not _valid_call(_reply(None, [_call("no_such_tool", "{}")]), PARAMS)
    required = TOOLS[0]["function"]["parameters"].get("required")
    if required:
        assert not _valid_call(_reply(None, [_call(name, "{}")]), PARAMS)
    cut = _reply(None, [_call(name, "{}")])
    cut["choices"][0]["finish_reason"] = "length"
    assert not _valid_call(cut, PARAMS)


def test_the_greedy_structured_requests_validate_on_the_real_server(client: TestClient) -> None:
    asks = schema_asks(len(SCHEMAS))  # the greedy ones: one per schema; the first and the last
    for body, schema in (asks[0], asks[-1]):  # (a bounded number) keep the suite's time down
        assert body["temperature"] == 0
        resp = client.post("/v1/chat/completions", json=body)
        assert resp.status_code == 200, resp.text
        reply = resp.json()
        assert _valid_json(reply, schema), reply["choices"][0]["message"]["content"]
        json.loads(reply["choices"][0]["message"]["content"])
    for body in tool_asks(2):  # greedy: a required call and a named one
        assert body["temperature"] == 0
        resp = client.post("/v1/chat/completions", json=body)
        assert resp.status_code == 200, resp.text
        assert _valid_call(resp.json(), PARAMS), resp.json()["choices"][0]
