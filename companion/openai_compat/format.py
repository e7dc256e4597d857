"""OpenAI's response shapes: chat completions and their stream chunks, tool calls, logprobs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from companion.domain import Usage
from companion.errors import CompanionError
from companion.llm.base import GenerationDone
from companion.openai_compat.grammar import OPEN, parse_calls
from companion.openai_compat.turn import Piece, TurnResult, logprob_content
from companion.server.shutdown import INTERRUPTED_MESSAGE, Interrupted


def error_body(message: str, kind: str, param: str | None, code: str | None) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _finish(done: GenerationDone, calls: list[dict[str, Any]]) -> str:
    if calls:
        return "tool_calls"
    return "length" if done.finish_reason == "length" else "stop"


def _message(done: GenerationDone, tools: bool) -> tuple[dict[str, Any], str]:
    """The assistant message of one choice, and its finish_reason."""
    content, calls = parse_calls(done.text) if tools else (done.text, [])
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    return message, _finish(done, calls)


def logprobs(done: GenerationDone) -> dict[str, Any] | None:
    """A choice's `logprobs` (None unless asked for)."""
    content = logprob_content(done.logprobs)
    return {"content": content, "refusal": None} if content is not None else None


def usage_with_cache(usage: Usage, first: GenerationDone | None) -> dict[str, Any]:
    """Token counts, with the prompt tokens the KV cache already held for the first choice
    (None: nothing generated, e.g. a cached reply)."""
    reused = int(first.timings.get("reused_tokens", 0)) if first is not None else 0
    return {**usage.to_dict(), "prompt_tokens_details": {"cached_tokens": reused}}


def usage(result: TurnResult) -> dict[str, Any]:
    """A turn's usage (usage_with_cache)."""
    return usage_with_cache(result.usage, None if result.cached else result.choices[0])


def completion(cid: str, created: int, result: TurnResult, tools: bool) -> dict[str, Any]:
    """A whole chat.completion."""
    choices = []
    for i, done in enumerate(result.choices):
        message, finish = _message(done, tools)
        choices.append(
            {"index": i, "message": message, "logprobs": logprobs(done), "finish_reason": finish}
        )
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": result.model,
        "choices": choices,
        "usage": usage(result),
        "service_tier": "default",
        "system_fingerprint": None,
        "companion": companion_part(result),
    }


def companion_part(result: TurnResult) -> dict[str, Any]:
    """companion's own fields: the session the exchange is kept in, cache and memory."""
    return {
        "session_id": result.session_id,
        "cached": result.cached,
        "learned": result.learned,
        "timings": result.timings,
    }


class ChunkWriter:
    """Stream chunks of one chat completion (every choice), ending with data: [DONE]."""

    def __init__(self, cid: str, created: int, model: str, n: int, tools: bool, usage: bool):
        self.cid, self.created, self.model = cid, created, model
        self.n, self.tools, self.include_usage = n, tools, usage
        self.held = [""] * n  # tool-call text waits for the end of its choice
        self.streaming = [not tools] * n

    def chunk(self, index: int, delta: dict[str, Any], finish: str | None = None,
              logprobs: Any = None) -> str:  # fmt: skip
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return self._wrap([choice])

    def _wrap(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        return json.dumps(
            {"id": self.cid, "object": "chat.completion.chunk", "created": self.created,
             "model": self.model, "system_fingerprint": None, "choices": choices, **extra}
        )  # fmt: skip

    def piece(self, piece: Piece) -> list[str]:
        """Chunks for a piece of text (held while it may be the start of a tool call)."""
        i = piece.index
        self.model = piece.model or self.model  # the routed model, not the service's main one
        if self.streaming[i]:
            return [self.chunk(i, {"content": piece.text})]
        self.held[i] += piece.text
        start = self.held[i].lstrip()
        if start and not OPEN.startswith(start[: len(OPEN)]) and not start.startswith(OPEN):
            self.streaming[i], text, self.held[i] = True, self.held[i], ""
            return [self.chunk(i, {"content": text})]
        return []

    def end(self, result: TurnResult) -> list[str]:
        """The held text or tool calls, each choice's finish, then usage when asked."""
        out = []
        for i, done in enumerate(result.choices):
            calls: list[dict[str, Any]] = []
            if self.held[i]:
                content, calls = parse_calls(self.held[i])
                if content:
                    out.append(self.chunk(i, {"content": content}))
                if calls:
                    deltas = [{"index": k, **c} for k, c in enumerate(calls)]
                    out.append(self.chunk(i, {"tool_calls": deltas}))
            out.append(self.chunk(i, {}, _finish(done, calls), logprobs(done)))
        if self.include_usage:
            out.append(self._wrap([], usage=usage(result)))
        return out


async def chunks(
    writer: ChunkWriter,
    first: Piece | TurnResult,
    stream: AsyncIterator[Piece | TurnResult | Interrupted],
) -> AsyncIterator[str]:
    """The SSE data lines of a streamed chat completion."""
    writer.model = getattr(first, "model", "") or writer.model
    for i in range(writer.n):
        yield writer.chunk(i, {"role": "assistant", "content": ""})
    try:
        event: Any = first
        while True:
            if isinstance(event, TurnResult):
                writer.model = event.model
                for line in writer.end(event):
                    yield line
                break
            if isinstance(event, Interrupted):
                yield json.dumps(
                    error_body(INTERRUPTED_MESSAGE, "server_error", None, "interrupted")
                )
                break
            for line in writer.piece(event):
                yield line
            event = await anext(stream)
    except CompanionError as exc:
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        yield json.dumps(error_body(exc.message, kind, exc.field, exc.code))
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    yield "[DONE]"
