"""bench openai: the OpenAI API as clients use it, against a real `companion serve`.

- A 10-turn conversation sent whole by the client each turn (streamed, greedy): the prompt
  tokens of each turn, how much of each prompt the KV cache already held, and the time to first
  token at turn 10 against turn 1. `conversation_overhead_tokens` is what each turn's prompt
  grew by beyond the previous reply and the new user message (the chat template's markers):
  the same at every turn means the prompt grows only by the new turn. Run with memory and
  persona off (the client's messages exactly), on (companion's defaults), and on again for the
  same user's next conversation (`companion_returning_*`: memory recalls the first one).
- `size` tool-call requests (tool_choice required or a named function) and `size` json_schema
  requests with the tiny model: the share whose arguments / content parse as JSON and validate
  against the schema (jsonschema).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema

from companion.bench.cache_http import _start_server, free_port
from companion.bench.openai_cases import (
    LINES,
    LINES_RETURNING,
    SCHEMAS,
    TOOLS,
    schema_asks,
    tool_asks,
)
from companion.config import Settings

DEFAULT_SIZE = 50
CONCURRENCY = 4
TIMEOUT_S = 1800.0


async def _stream_turn(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    """One streamed turn: reply text, usage and the client's time to first token."""
    started, first, text, usage = time.perf_counter(), None, [], {}
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                continue
            chunk = json.loads(line[5:])
            for choice in chunk.get("choices", []):
                if choice["delta"].get("content"):
                    first = first or time.perf_counter()
                    text.append(choice["delta"]["content"])
            usage = chunk.get("usage") or usage
    ttft = ((first or time.perf_counter()) - started) * 1000
    return {"text": "".join(text), "usage": usage, "ttft_ms": ttft}


async def _count(client: httpx.AsyncClient, text: str) -> int:
    """Tokens of `text` for the loaded model (the server's /v1/completions usage)."""
    body = {"model": "companion", "prompt": text, "max_tokens": 1}
    resp = await client.post("/v1/completions", json=body)
    resp.raise_for_status()
    return int(resp.json()["usage"]["prompt_tokens"])


async def conversation(client: httpx.AsyncClient, user: str, extras: dict[str, Any],
                       lines: list[str] = LINES) -> dict[str, list[float]]:  # fmt: skip
    """Ten turns, each sending the whole conversation so far; figures per turn."""
    messages: list[dict[str, str]] = []
    out: dict[str, list[float]] = {"prompt": [], "reused": [], "ttft_ms": [], "overhead": []}
    last_completion = 0
    for line in lines:
        messages.append({"role": "user", "content": line})
        body = {"model": "companion", "messages": messages, "max_tokens": 16, "temperature": 0,
                "user": user, "companion": {**extras, "cache": False}}  # fmt: skip
        turn = await _stream_turn(client, body)
        prompt = int(turn["usage"]["prompt_tokens"])
        if out["prompt"]:
            grew = prompt - int(out["prompt"][-1])
            out["overhead"].append(grew - last_completion - await _count(client, line))
        out["prompt"].append(prompt)
        out["reused"].append(turn["usage"]["prompt_tokens_details"]["cached_tokens"])
        out["ttft_ms"].append(round(turn["ttft_ms"], 1))
        last_completion = int(turn["usage"]["completion_tokens"])
        messages.append({"role": "assistant", "content": turn["text"]})
    return out


def _median_turns(runs: list[dict[str, list[float]]], key: str) -> list[float]:
    return [round(statistics.median(r[key][i] for r in runs), 1) for i in range(len(runs[0][key]))]


async def conversations(client: httpx.AsyncClient, prefix: str, extras: dict[str, Any],
                        reps: int, lines: list[str] = LINES, user: str | None = None
                        ) -> dict[str, Any]:  # fmt: skip
    """`reps` conversations (separate users, or all by `user`), medians per turn."""
    runs = [await conversation(client, user or f"{prefix}-{i}", extras, lines)
            for i in range(reps)]  # fmt: skip
    ttft = _median_turns(runs, "ttft_ms")
    overhead = [o for r in runs for o in r["overhead"]]
    return {
        f"{prefix}_prompt_tokens": runs[0]["prompt"],
        f"{prefix}_reused_tokens": runs[0]["reused"],
        f"{prefix}_overhead_tokens_min": min(overhead),
        f"{prefix}_overhead_tokens_max": max(overhead),
        f"{prefix}_ttft_ms": ttft,
        f"{prefix}_ttft_turn1_ms": ttft[0],
        f"{prefix}_ttft_turn10_ms": ttft[-1],
        f"{prefix}_ttft_turn10_over_turn1": round(ttft[-1] / ttft[0], 3),
        # what the KV cache did not hold (what the turn prefilled): the noise-free side of TTFT
        f"{prefix}_prefilled_turn10_over_turn1": round(
            (runs[0]["prompt"][-1] - runs[0]["reused"][-1])
            / max(runs[0]["prompt"][0] - runs[0]["reused"][0], 1),
            3,
        ),
    }


def _valid_call(reply: dict[str, Any], schemas: dict[str, Any]) -> bool:
    choice = reply["choices"][0]
    calls = choice["message"].get("tool_calls") or []
    if choice["finish_reason"] != "tool_calls" or not calls:
        return False
    for call in calls:
        try:
            arguments = json.loads(call["function"]["arguments"])
            jsonschema.validate(arguments, schemas[call["function"]["name"]])
        except (ValueError, KeyError, jsonschema.ValidationError):
            return False
    return True


def _valid_json(reply: dict[str, Any], schema: dict[str, Any]) -> bool:
    try:
        jsonschema.validate(json.loads(reply["choices"][0]["message"]["content"]), schema)
    except (ValueError, TypeError, jsonschema.ValidationError):
        return False
    return True


async def _structured(client: httpx.AsyncClient, size: int) -> dict[str, Any]:
    """`size` tool-call and `size` json_schema requests, CONCURRENCY at a time."""
    gate = asyncio.Semaphore(CONCURRENCY)
    params = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}

    async def post(body: dict[str, Any]) -> dict[str, Any]:
        async with gate:
            resp = await client.post("/v1/chat/completions", json=body)
            resp.raise_for_status()
            return dict(resp.json())

    started = time.perf_counter()
    tools = await asyncio.gather(*(post(b) for b in tool_asks(size)))
    tools_s = time.perf_counter() - started
    asks = schema_asks(size)
    started = time.perf_counter()
    docs = await asyncio.gather(*(post(b) for b, _ in asks))
    json_s = time.perf_counter() - started
    valid_calls = sum(_valid_call(r, params) for r in tools)
    valid_docs = sum(_valid_json(r, s) for r, (_, s) in zip(docs, asks, strict=True))
    return {
        "tool_call_requests": size,
        "tool_call_valid": valid_calls,
        "tool_call_valid_ratio": round(valid_calls / size, 4),
        "tool_call_seconds": round(tools_s, 1),
        "json_schema_requests": size,
        "json_schema_valid": valid_docs,
        "json_schema_valid_ratio": round(valid_docs / size, 4),
        "json_schema_seconds": round(json_s, 1),
        "schemas": len(SCHEMAS),
    }


async def _drive(url: str, size: int) -> dict[str, Any]:
    timeout = httpx.Timeout(TIMEOUT_S, connect=30.0)
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:
        exact = await conversations(client, "conversation", {"memory": False, "persona": False}, 1)
        companion = await conversations(client, "companion_mode", {}, 1)
        returning = await conversations(client, "companion_returning", {}, 1, LINES_RETURNING,
                                        user="companion_mode-0")  # fmt: skip
        structured = await _structured(client, size)
    return {**exact, **companion, **returning, **structured}


def run(settings: Settings, size: int | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """The figures against a fresh server (its own data dir) on a free loopback port."""
    size = size or DEFAULT_SIZE
    # a busy machine may take minutes per grammar-held reply: no deadline, no rate limit
    os.environ.update(COMPANION_REQUEST_TIMEOUT_S=str(TIMEOUT_S),
                      COMPANION_RATE_LIMIT_PER_MINUTE="100000",
                      COMPANION_MAX_CONCURRENT_PER_USER="64")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = _start_server(settings, Path(tmp), port)
        try:
            figures = asyncio.run(_drive(f"http://127.0.0.1:{port}", size))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    notes = {
        "conversation": "10 turns, whole conversation sent each turn, streamed, greedy, 16 "
        "tokens a reply; memory and persona off",
        "companion_mode": "the same with companion's memory and persona on (1 user)",
        "companion_returning": "that user's next conversation (other lines): memory recalls "
        "the first one",
        "prefilled_turn10_over_turn1": "prompt tokens the KV cache did not hold, turn 10 over "
        "turn 1 (TTFT's share that load does not blur)",
        "structured": f"tiny model, tool_choice required/named and json_schema, {CONCURRENCY} "
        "requests at a time; valid = parses as JSON and validates against the schema",
    }
    return figures, notes
