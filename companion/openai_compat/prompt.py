"""The client's messages as the prompt: their system prompt after companion's persona, their
turns in order, companion's memory notes just before the last message (prefix-stable: the
next call of the conversation shares everything up to there, so its KV cache is reused)."""

from __future__ import annotations

from dataclasses import dataclass

from companion.openai_compat.grammar import OutputFormat, Tools, render_calls
from companion.openai_compat.params import BadParameter, OAMessage

TEXT_PARTS = ("text", "input_text", "refusal")


def content_text(message: OAMessage, index: int, vision: bool) -> str:
    """A message's text; image, audio and file parts are refused (400) on a text-only model."""
    if not isinstance(message.content, list):
        return message.content or ""
    texts = []
    for j, part in enumerate(message.content):
        kind = part.get("type")
        if kind in TEXT_PARTS:
            texts.append(str(part.get(kind if kind == "refusal" else "text") or ""))
        elif kind == "image_url" and vision:
            raise BadParameter("image parts are not read yet", field=f"messages[{index}]")
        else:
            what = "image" if kind == "image_url" else repr(kind)
            raise BadParameter(
                f"messages[{index}].content[{j}]: {what} parts need a vision model; the loaded "
                "model reads text only",
                field=f"messages[{index}].content",
            )
    return "".join(texts)


def client_messages(messages: list[OAMessage], vision: bool = False) -> list[dict[str, str]]:
    """The client's messages as chat-template turns: developer -> system, an assistant's
    tool calls written out as the model writes them, tool results as `tool` turns."""
    turns = []
    for i, m in enumerate(messages):
        if m.role == "function":
            raise BadParameter(
                f"messages[{i}]: the `function` role is deprecated; send `tool` messages",
                field=f"messages[{i}].role",
            )
        text = content_text(m, i, vision)
        if m.role == "assistant" and m.tool_calls:
            text = "\n".join(t for t in (text, render_calls(m.tool_calls)) if t)
        role = "system" if m.role == "developer" else m.role
        turns.append({"role": role, "content": text})
    return turns


@dataclass(frozen=True)
class Layout:
    """The prompt's parts before fitting: head (one system message), turns, the last message."""

    head: list[dict[str, str]]
    turns: list[dict[str, str]]
    tail: list[dict[str, str]]


def layout(
    turns: list[dict[str, str]],
    persona_prompt: str | None,
    output: OutputFormat,
    tools: Tools | None,
) -> Layout:
    """One system message (persona, the client's leading system messages, the reply's format
    and the tools), then the client's turns, then its last message."""
    lead = 0
    while lead < len(turns) - 1 and turns[lead]["role"] == "system":
        lead += 1
    parts = [persona_prompt, *(t["content"] for t in turns[:lead]), output.instruction]
    parts.append(tools.instruction() if tools is not None else None)
    system = "\n\n".join(p for p in parts if p)
    head = [{"role": "system", "content": system}] if system else []
    return Layout(head, turns[lead:-1], turns[-1:])
