"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

ID_PATTERN = r"^[A-Za-z0-9_.:@-]{1,64}$"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # what SQLite can store: larger ids and offsets get 422


class ChatRequest(BaseModel):
    """POST /api/v1/chat. Only `message` is required; sampling fields override the settings."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, description="what the user says")
    user_id: str | None = Field(default=None, pattern=ID_PATTERN)
    session_id: str | None = Field(default=None, pattern=ID_PATTERN)
    stream: bool = False
    cache: bool = Field(default=True, description="false: neither read nor write the cache")
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0, le=1000)
    repeat_penalty: float | None = Field(default=None, gt=0.0, le=3.0)
    stop: list[str] | None = Field(default=None, max_length=8)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)

    def options(self) -> dict[str, Any]:
        return self.model_dump(
            include={
                "max_tokens",
                "temperature",
                "top_p",
                "top_k",
                "repeat_penalty",
                "stop",
                "seed",
            }
        )


class UsageBody(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatResponse(BaseModel):
    response: str
    session_id: str
    user_id: str
    cached: bool
    model: str
    usage: UsageBody
    timings: dict[str, float]
    finish_reason: str
    message_id: int | None
    memories_used: list[dict[str, Any]] = []
    route: dict[str, Any] | None = None  # model switching: model, size, role, reasons


class MessageBody(BaseModel):
    id: int
    role: str
    text: str
    status: str
    token_count: int | None
    cached: bool
    model: str | None
    timings: dict[str, float]
    created_at: str
    finish_reason: str | None = None  # stop | length | cancelled (stopped) | error
    active: bool = True  # false: replaced by a regenerate or an edit (kept)
    alt_group: int | None = None  # the replies to one message share it
    reply_to: int | None = None  # an assistant message: the id of the user message it answers


class SessionMessages(BaseModel):
    session_id: str
    user_id: str
    messages: list[MessageBody]


class SessionBody(BaseModel):
    id: str
    user_id: str
    title: str | None
    created_at: str
    updated_at: str


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: str | None = Field(
        default=None, description="tiny|base|small|medium|large; none = configured"
    )


class OpenSessionRequest(BaseModel):
    """POST /api/v1/sessions/{session_id}/open: whose session (default user when absent)."""

    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(default=None, pattern=ID_PATTERN)


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


# Memory and persona (issue 5)


class MemoryCreate(BaseModel):
    """POST /api/v1/users/{user_id}/memories: store a fact as given."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=1000)
    importance: float = Field(default=0.9, ge=0.0, le=1.0)
    topics: list[str] = Field(default_factory=list, max_length=16)


class MemoryEdit(BaseModel):
    """PATCH /api/v1/users/{user_id}/memories/{id}: change what is given."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(default=None, min_length=1, max_length=1000)
    importance: float | None = Field(default=None, ge=0.0, le=1.0)
    topics: list[str] | None = Field(default=None, max_length=16)


class PersonaBody(BaseModel):
    """A persona: name, description, traits 0..1, speaking style, example lines."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    name: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=4000)
    traits: dict[str, float] | None = None
    speaking_style: str | None = Field(default=None, max_length=1000)
    example_lines: list[str] | None = Field(default=None, max_length=8)
    greeting: str | None = Field(default=None, max_length=1000)
    scenario: str | None = Field(default=None, max_length=2000)
    system_prompt: str | None = Field(default=None, max_length=4000)
    tags: list[str] | None = Field(default=None, max_length=16)

    def fields(self) -> dict[str, Any]:
        """The fields that were given."""
        return self.model_dump(exclude_none=True)


class PersonaSelect(BaseModel):
    """PUT /api/v1/users/{user_id}/persona."""

    model_config = ConfigDict(extra="forbid")

    persona_id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
