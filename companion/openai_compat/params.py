"""The request bodies of /v1/chat/completions and /v1/completions, and what each parameter of
OpenAI's API does here: honoured, or refused with a 400 that names it (never dropped)."""

from __future__ import annotations

from typing import Any, Literal

import llama_cpp
from pydantic import BaseModel, ConfigDict, Field

from companion.errors import InputError

ID_PATTERN = r"^[A-Za-z0-9_.:@-]{1,64}$"
MAX_N = 8
MAX_TOP_LOGPROBS = 20


class BadParameter(InputError):
    """A parameter OpenAI's API accepts that companion cannot honour, or a wrong value (400)."""

    status_code = 400
    code = "unsupported_parameter"


# Parameters of OpenAI's API companion does not offer: why, said in the 400.
REFUSED: dict[str, str] = {
    "audio": "audio output is not available (companion's models produce text only)",
    "functions": "`functions` is deprecated; send `tools` instead",
    "function_call": "`function_call` is deprecated; send `tool_choice` instead",
    "prediction": "predicted outputs are not supported",
    "reasoning_effort": "the loaded model is not a reasoning model",
    "verbosity": "the loaded model has no verbosity setting",
    "web_search_options": "web search is not available",
    "moderation": "moderation is not available",
    "prompt_cache_options": "prompt cache breakpoints are not supported (companion reuses any "
    "common prompt prefix by itself; `prompt_cache_key` names a conversation's cache)",
}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool | None = None
    include_obfuscation: bool | None = None  # no obfuscation padding is ever sent


class CompanionOptions(BaseModel):
    """`extra_body={"companion": {...}}`: companion's own switches for one request."""

    model_config = ConfigDict(extra="forbid")

    session_id: str | None = Field(
        default=None, pattern=ID_PATTERN, description="keep the conversation on the server"
    )
    memory: bool = Field(default=True, description="false: recall nothing, learn nothing")
    persona: bool = Field(default=True, description="false: only the client's system prompt")
    cache: bool = Field(default=True, description="false: neither read nor write the cache")


class OAMessage(BaseModel):
    """One message as OpenAI's API sends it."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class SamplingParams(BaseModel):
    """What /v1/chat/completions and /v1/completions share."""

    model_config = ConfigDict(extra="allow")

    model: str = "companion"
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int | None = Field(default=None, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = None  # any integer; its low 32 bits seed the sampler
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    user: str | None = Field(default=None, pattern=ID_PATTERN)
    companion: CompanionOptions | None = None

    def stops(self) -> list[str] | None:
        """`stop` as a list (at most 4, as OpenAI allows)."""
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        if stops is not None and len(stops) > 4:
            raise BadParameter("stop: at most 4 sequences", field="stop")
        return stops


class ChatParams(SamplingParams):
    """POST /v1/chat/completions."""

    messages: list[OAMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=8192)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    safety_identifier: str | None = Field(default=None, pattern=ID_PATTERN)
    prompt_cache_key: str | None = Field(default=None, max_length=200)
    prompt_cache_retention: Literal["in_memory", "in-memory"] | None = None
    service_tier: Literal["auto", "default"] | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    modalities: list[Literal["text"]] | None = None


class CompletionParams(SamplingParams):
    """POST /v1/completions (the legacy text completion)."""

    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        description="a text, or the loaded model's token ids (or a list of one of either)"
    )
    suffix: str | None = None
    echo: bool | None = None
    best_of: int | None = Field(default=None, ge=1, le=MAX_N)
    logprobs: int | None = Field(default=None, ge=0, le=5)
    prompt_cache_key: str | None = Field(
        default=None, max_length=200, description="the KV-cache sequence this prompt (re)uses"
    )


def check_refused(body: SamplingParams, refused: dict[str, str] = REFUSED) -> None:
    """400 for the first refused or unknown parameter (extra fields), naming it."""
    for name, value in (body.model_extra or {}).items():
        if name in refused:
            if value is None:
                continue
            raise BadParameter(f"{name}: {refused[name]}", field=name)
        raise BadParameter(f"unknown parameter {name!r}", field=name)
    if isinstance(body, ChatParams):
        _check_chat(body)


def _check_chat(body: ChatParams) -> None:
    """Values companion refuses among the parameters it knows."""
    if body.store is False:
        raise BadParameter(
            "store: companion keeps every exchange (its memory learns from it); for a turn "
            'that leaves no memory send extra_body={"companion": {"memory": false}}',
            field="store",
        )
    if body.metadata:
        raise BadParameter("metadata: stored completions are not offered", field="metadata")
    if body.top_logprobs is not None and not body.logprobs:
        raise BadParameter("top_logprobs needs logprobs: true", field="top_logprobs")


def vocab_size(engine: Any) -> int:
    """Tokens in the loaded model's vocabulary (what logit_bias ids may be)."""
    return int(llama_cpp.llama_vocab_n_tokens(engine.vocab))


def logit_bias(bias: dict[str, float] | None, n_vocab: int) -> tuple[tuple[int, float], ...]:
    """`logit_bias` as (token id, bias) pairs; ids are the loaded model's own token ids."""
    pairs = []
    for key, value in (bias or {}).items():
        if not key.isdigit() or int(key) >= n_vocab:
            raise BadParameter(
                f"logit_bias: {key!r} is not a token id of the loaded model (0..{n_vocab - 1})",
                field="logit_bias",
            )
        if not -100.0 <= value <= 100.0:
            raise BadParameter("logit_bias: biases are -100 to 100", field="logit_bias")
        pairs.append((int(key), float(value)))
    return tuple(sorted(pairs))
