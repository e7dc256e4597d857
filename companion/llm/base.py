"""What the chat service needs from a model runtime: the Engine protocol and its records."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from companion.domain import GenerationOptions


@dataclass
class GenerationRequest:
    """One generation: a tokenized prompt and its own sampling settings."""

    prompt_tokens: list[int]
    options: GenerationOptions
    session_key: str | None = None
    cancelled: bool = False
    grammar: str | None = None  # GBNF text (root rule "root"): only what it allows is sampled
    logprobs: int | None = None  # report each token's log-probability and this many alternatives
    user: str | None = None  # whose request: free slots are shared fairly across users
    route_key: str | None = None  # model_servers: the session it serves (else session_key)
    server: str | None = None  # model_servers: the server its admission reserved (admit)


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its text, bytes, log-probability and the best alternatives."""

    token: str
    bytes: tuple[int, ...]
    logprob: float
    top: tuple[tuple[str, tuple[int, ...], float], ...] = ()


@dataclass
class GenerationDone:
    """The last event of every stream: the text and the figures of the run."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # stop | length | cancelled
    timings: dict[str, float] = field(default_factory=dict)
    logprobs: list[TokenLogprob] | None = None  # when the request asked for them
    server: str | None = None  # the model server that generated it (model_servers set)


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded, from where, and what it cost."""

    name: str
    size: str
    path: str
    context_length: int
    context_limit: int
    n_gpu_layers: int
    load_time_s: float
    rss_added_mb: float
    file_size_mb: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Engine(Protocol):
    """Owns a model; turns prompts into token streams."""

    @property
    def info(self) -> ModelInfo: ...

    def render_chat(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str: ...

    def tokenize(self, text: str) -> list[int]: ...

    def count_tokens(self, text: str) -> int: ...

    def admit(self, request: GenerationRequest) -> AbstractContextManager[None]:
        """Raise Overloaded (429 with Retry-After) now when `request` would not be served within
        request_timeout_s, before the caller stores anything; inside the block it holds its
        place (model_servers: a reserved server), so a flood cannot all pass at once."""
        ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[str | GenerationDone]: ...

    async def prefill(self, prompt_tokens: list[int], session_key: str) -> GenerationDone:
        """Cache a session's prompt so far before its next message (no-op without a KV cache)."""
        ...

    def stats(self) -> dict[str, float]: ...

    @property
    def down_reason(self) -> str | None:
        """Why the engine takes no requests (its thread stopped, or closed); None if serving."""
        ...

    def check_serving(self) -> None:
        """Raise ModelDown now if the engine takes no requests."""
        ...

    def close(self) -> None: ...
