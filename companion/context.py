"""The prompt of one turn: persona first, then history, then the new message, inside the budget."""

from __future__ import annotations

from dataclasses import dataclass

from companion.domain import Message
from companion.errors import PayloadTooLarge
from companion.llm.base import Engine


@dataclass(frozen=True)
class BuiltContext:
    messages: list[dict[str, str]]
    prompt_tokens: list[int]
    history_used: int
    history_dropped: int


def build_context(
    engine: Engine,
    *,
    system_prompt: str,
    history: list[Message],
    message: str,
    budget_tokens: int,
) -> BuiltContext:
    """Keep the newest history that fits `budget_tokens`, measured on the rendered prompt.

    The system text and the new message always stay; the oldest turns go first. A trimmed
    history never starts with an assistant turn, so the model never sees an answer without its
    question.
    """
    turns = [{"role": m.role, "content": m.text} for m in history]
    head = [{"role": "system", "content": system_prompt}]
    tail = [{"role": "user", "content": message}]
    for start in range(len(turns) + 1):
        if start < len(turns) and turns[start]["role"] == "assistant":
            continue
        messages = head + turns[start:] + tail
        tokens = engine.tokenize(engine.render_chat(messages))
        if len(tokens) <= budget_tokens:
            return BuiltContext(messages, tokens, len(turns) - start, start)
    raise PayloadTooLarge(
        f"message is too long for the context: {len(tokens)} prompt tokens, "
        f"{budget_tokens} allowed (context_length - max_tokens)",
        field="message",
    )
