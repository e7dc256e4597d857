"""Keys: versioned content hashes, normalisation, scope decisions."""

from __future__ import annotations

import subprocess
import sys

from companion.cache.keys import (
    KEY_VERSION,
    canonical_json,
    decide_scope,
    make_key,
    normalise_message,
    refers_to_earlier,
)
from companion.domain import GenerationOptions

SYSTEM = [{"role": "system", "content": "You are Nova."}]


def _key(message: str, **changes: object) -> str:
    args: dict[str, object] = {
        "model": "m:abc",
        "persona": "p1",
        "options": GenerationOptions(),
        "scope": decide_scope("u", SYSTEM, message, history_used=0, personal=False),
        "message": message,
    }
    args.update(changes)
    return make_key(**args).key  # type: ignore[arg-type]


def test_key_is_versioned_and_ignores_only_whitespace_and_case() -> None:
    key = _key("How do I learn C++?")
    assert key.startswith(f"v{KEY_VERSION}:entry:")
    assert _key("  how do i   LEARN c++? ") == key
    assert _key("How do I learn C?") != key
    assert _key("How do I learn C++") != key  # punctuation is meaning
    assert normalise_message("A\tB\n c") == "a b c"


def test_key_covers_model_persona_options_and_scope() -> None:
    base = _key("hi there")
    assert _key("hi there", model="m:other") != base
    assert _key("hi there", persona="p2") != base
    assert _key("hi there", options=GenerationOptions(temperature=0.1)) != base
    assert _key("hi there", options=GenerationOptions(max_tokens=12)) != base
    user = decide_scope("u", SYSTEM, "hi there", history_used=0, personal=True)
    assert _key("hi there", scope=user) != base


def test_canonical_json_sorts_keys() -> None:
    assert canonical_json({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'


def test_keys_are_stable_across_processes() -> None:
    code = (
        "from companion.cache.keys import make_key, decide_scope;"
        "from companion.domain import GenerationOptions;"
        "s = decide_scope('u', [{'role': 'system', 'content': 'You are Nova.'}], 'Hi', "
        "history_used=0, personal=False);"
        "print(make_key(model='m:abc', persona='p1', options=GenerationOptions(), scope=s, "
        "message='Hi').key)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _key("Hi")


def test_scope_is_shared_only_without_anything_personal() -> None:
    shared = decide_scope("a", SYSTEM, "What is a good hobby?", history_used=0, personal=False)
    assert shared.kind == "shared" and shared.label == "shared"
    history = decide_scope("a", SYSTEM, "What is a good hobby?", history_used=2, personal=False)
    assert history.kind == "user" and history.label == "user:a"
    memories = decide_scope("a", SYSTEM, "What is a good hobby?", history_used=0, personal=True)
    assert memories.label == "user:a"
    refers = decide_scope("a", SYSTEM, "What did I just say?", history_used=0, personal=False)
    assert refers.label == "user:a"


def test_refers_to_earlier_turns() -> None:
    for text in (
        "What did I tell you earlier?",
        "Tell me more about that",
        "Why?",
        "Can you say it again?",
        "Do you remember my dog?",
        "and then?",
    ):
        assert refers_to_earlier(text), text
    for text in (
        "What is the capital of France?",
        "Give me three tips for sleeping better.",
        "How do I learn C++?",
    ):
        assert not refers_to_earlier(text), text
