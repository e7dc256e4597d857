"""Tool calls read back from the model's text (pure logic: openai_compat/grammar.parse_calls)."""

from __future__ import annotations

import json

from companion.openai_compat.grammar import parse_calls


def call(name: str, arguments: dict[str, object]) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def test_calls_and_the_text_around_them() -> None:
    text = "Sure. " + call("set_timer", {"minutes": 5}) + "\n" + call("get_time", {})
    content, calls = parse_calls(text)
    assert content == "Sure."
    assert [c["function"]["name"] for c in calls] == ["set_timer", "get_time"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"minutes": 5}


def test_an_argument_holding_the_closing_tag_is_read_whole() -> None:
    content, calls = parse_calls(call("note", {"text": "a </tool_call> b"}))
    assert content is None
    assert json.loads(calls[0]["function"]["arguments"]) == {"text": "a </tool_call> b"}


def test_a_call_cut_short_stays_text_and_the_complete_ones_count() -> None:
    cut = '<tool_call>{"name": "set_timer", "arguments": {"label": "tea'
    assert parse_calls(cut) == (cut, [])
    content, calls = parse_calls(call("get_time", {}) + "\n" + cut)
    assert [c["function"]["name"] for c in calls] == ["get_time"] and content == cut
    assert parse_calls("") == (None, [])
