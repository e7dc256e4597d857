"""Plain records passed between the parts (no behaviour, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]
# pending: stored, reply not yet produced; complete: done; failed: generation raised;
# interrupted: the client left, the deadline passed or the process stopped mid-generation.
MessageStatus = Literal["pending", "complete", "failed", "interrupted"]


@dataclass(frozen=True)
class User:
    id: str
    created_at: datetime


@dataclass(frozen=True)
class Session:
    id: str
    user_id: str
    title: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Message:
    id: int
    session_id: str
    role: Role
    text: str
    status: MessageStatus
    token_count: int | None
    cached: bool
    model: str | None
    timings: dict[str, float]
    created_at: datetime
    finish_reason: str | None = None  # stop | length | cancelled (None: not recorded)
    active: bool = True  # False once a regenerate or an edit replaced it (kept, not in prompts)
    alt_group: int | None = None  # the replies to one message share it (regenerate)
    reply_to: int | None = None  # an assistant message: the id of the user message it answers


@dataclass(frozen=True)
class GenerationOptions:
    """Sampling settings for one request; every field changes the output."""

    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    repeat_penalty: float = 1.1
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0  # OpenAI's: subtracted once from every token already generated
    frequency_penalty: float = 0.0  # OpenAI's: subtracted per occurrence
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias) added to the logits


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass
class ChatResult:
    response: str
    session_id: str
    user_id: str
    cached: bool
    model: str
    usage: Usage
    timings: dict[str, float]
    finish_reason: str
    message_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "response": self.response,
            "session_id": self.session_id,
            "user_id": self.user_id,
            "cached": self.cached,
            "model": self.model,
            "usage": self.usage.to_dict(),
            "timings": self.timings,
            "finish_reason": self.finish_reason,
            "message_id": self.message_id,
            "memories_used": self.extra.get("memories_used", []),
            "route": self.extra.get("route"),  # model switching: which model and why
        }
