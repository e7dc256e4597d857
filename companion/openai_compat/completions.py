"""/v1/completions: a prompt in, text out (no chat template, no memory, no persona, nothing
stored), with n choices from one prefill, echo, stop, seed and the legacy logprobs shape.

The prompt is a text or the loaded model's token ids (as OpenAI's API and vLLM allow: what
another companion sends with `model_servers`). `prompt_cache_key` names the KV-cache sequence
the prompt goes to, so consecutive prompts of one conversation reuse their common prefix; the
usage's `prompt_tokens_details.cached_tokens` says how many prompt tokens were reused."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from companion.config import Settings
from companion.domain import Usage
from companion.llm.base import Engine, GenerationDone
from companion.openai_compat.format import usage_with_cache
from companion.openai_compat.params import (
    BadParameter,
    CompletionParams,
    check_refused,
    vocab_size,
)
from companion.openai_compat.turn import Piece, generate_choices
from companion.turn import options_from

REFUSED = {
    "suffix": "fill-in-the-middle (suffix) is not supported by the loaded model",
}
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for completions


def check(body: CompletionParams) -> str | list[int]:
    """The prompt (a text or token ids), or a 400 for what cannot be honoured."""
    check_refused(body, REFUSED)
    if body.suffix:
        raise BadParameter(f"suffix: {REFUSED['suffix']}", field="suffix")
    if body.best_of is not None and body.best_of != (body.n or 1):
        raise BadParameter("best_of: only equal to n (every choice is returned)", field="best_of")
    prompt = body.prompt
    if isinstance(prompt, str) or (prompt and all(isinstance(t, int) for t in prompt)):
        prompts: list[Any] = [prompt]
    else:
        prompts = list(prompt)
    if len(prompts) != 1 or not prompts[0]:
        raise BadParameter(
            "prompt: one non-empty text or list of token ids per request", field="prompt"
        )
    if not isinstance(prompts[0], str) and body.echo:
        raise BadParameter("echo: only with a text prompt", field="echo")
    return prompts[0]


def check_tokens(tokens: list[int], n_vocab: int) -> list[int]:
    """Token ids of the loaded model's vocabulary, or a 400 naming the first one that is not."""
    for t in tokens:
        if not 0 <= t < n_vocab:
            raise BadParameter(
                f"prompt: {t} is not a token id of the loaded model (0..{n_vocab - 1})",
                field="prompt",
            )
    return list(tokens)


def legacy_logprobs(done: GenerationDone, offset: int) -> dict[str, Any] | None:
    """The completions API's logprobs: tokens, their logprobs, top alternatives, offsets."""
    if done.logprobs is None:
        return None
    offsets, at = [], offset
    for entry in done.logprobs:
        offsets.append(at)
        at += len(entry.token)
    return {
        "tokens": [e.token for e in done.logprobs],
        "token_logprobs": [e.logprob for e in done.logprobs],
        "top_logprobs": [{t: lp for t, _, lp in e.top} for e in done.logprobs],
        "text_offset": offsets,
    }


class Completion:
    """One /v1/completions request against an engine."""

    def __init__(self, body: CompletionParams, engine: Engine, settings: Settings, user: str):
        self.body, self.engine, self.user = body, engine, user
        prompt = check(body)
        if isinstance(prompt, str):
            self.prompt, self.tokens = prompt, engine.tokenize(prompt)
        else:
            self.prompt, self.tokens = "", check_tokens(prompt, vocab_size(engine))
        # the KV-cache sequence: the client's conversation (as on /v1/chat/completions, so
        # a session's prefill and its turns meet there), else one per user
        self.key = body.prompt_cache_key or f"cmpl-{user}"
        seed = None if body.seed is None else body.seed & 0xFFFFFFFF
        self.opts = options_from(
            settings, max_tokens=body.max_tokens or DEFAULT_MAX_TOKENS, seed=seed,
            temperature=body.temperature, top_p=body.top_p, stop=body.stops(),
            presence_penalty=body.presence_penalty, frequency_penalty=body.frequency_penalty,
            repeat_penalty=1.0,
        )  # fmt: skip
        self.n = body.n or 1
        self.id, self.created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

    def events(self) -> AsyncIterator[Piece | list[GenerationDone]]:
        logprobs = self.body.logprobs
        return generate_choices(
            self.engine, self.tokens, self.opts, self.n, self.key, None, logprobs
        )

    def _head(self) -> str:
        return self.prompt if self.body.echo else ""

    def _finish(self, done: GenerationDone) -> str:
        return "length" if done.finish_reason == "length" else "stop"

    def result(self, dones: list[GenerationDone]) -> dict[str, Any]:
        """The whole text_completion."""
        head = self._head()
        choices = [
            {"index": i, "text": head + d.text, "logprobs": legacy_logprobs(d, len(head)),
             "finish_reason": self._finish(d)}
            for i, d in enumerate(dones)
        ]  # fmt: skip
        return {**self._frame(choices), "usage": self._usage(dones)}

    def _usage(self, dones: list[GenerationDone]) -> dict[str, Any]:
        usage = Usage(len(self.tokens), sum(d.completion_tokens for d in dones))
        return usage_with_cache(usage, dones[0] if dones else None)

    def _frame(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": "text_completion", "created": self.created,
                "model": self.engine.info.name, "choices": choices}  # fmt: skip

    async def chunks(self, include_usage: bool) -> AsyncIterator[str]:
        """SSE data lines: text pieces per choice, each choice's finish, usage, [DONE]."""
        if self.body.echo:
            for i in range(self.n):
                yield json.dumps(self._frame([self._choice(i, self.prompt)]))
        async for event in self.events():
            if isinstance(event, Piece):
                yield json.dumps(self._frame([self._choice(event.index, event.text)]))
                continue
            for i, done in enumerate(event):
                last = self._choice(i, "", self._finish(done))
                last["logprobs"] = legacy_logprobs(done, len(self._head()))
                yield json.dumps(self._frame([last]))
            if include_usage:
                yield json.dumps({**self._frame([]), "usage": self._usage(event)})
        yield "[DONE]"

    @staticmethod
    def _choice(i: int, text: str, finish: str | None = None) -> dict[str, Any]:
        return {"index": i, "text": text, "logprobs": None, "finish_reason": finish}
