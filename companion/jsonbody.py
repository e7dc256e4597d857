"""JSON from untrusted bytes, checked: strict UTF-8, bounded nesting, no lone surrogates.

Python's `json.loads(bytes)` decodes with `surrogatepass` (raw `ED A0 80` becomes a lone
surrogate), recurses once per nesting level (about 1,000 levels raise RecursionError), and
accepts `"\\ud800"` escapes: text that SQLite, the tokenizer and every response then fail on.
Every request body (server/badinput.py) and every character card (persona/card.py) is parsed
here, so each of these is a clear InputError (422) instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

from companion.errors import InputError

MAX_DEPTH = 64  # arrays and objects inside each other; API bodies need fewer than 10
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def parse_json(raw: bytes | str, *, what: str = "request body", field: str | None = None) -> Any:
    """The JSON value of `raw`; InputError naming `what` (and `field`) when it is not usable."""
    text = decode_utf8(raw, what=what, field=field) if isinstance(raw, bytes) else raw
    if too_deep(text):
        raise InputError(
            f"{what} nests arrays or objects deeper than {MAX_DEPTH} levels", field=field
        )
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InputError(f"{what} is not valid JSON ({exc})", field=field) from None
    if _SURROGATE_ESCAPE.search(text):
        where = lone_surrogate_at(value)
        if where is not None:
            name = ".".join(p for p in (field, where) if p) or None
            raise InputError(
                f"{name or what}: text holds a lone UTF-16 surrogate (an unpaired "
                "\\ud800-\\udfff escape), which is not valid Unicode",
                field=name,
            )
    return value


def decode_utf8(raw: bytes, *, what: str = "request body", field: str | None = None) -> str:
    """Strict UTF-8 (a leading BOM dropped); InputError with the first bad byte's offset."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{what} is not valid UTF-8 (bad byte at offset {exc.start})", field=field
        ) from None


def too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """True when arrays/objects nest deeper than `limit` (brackets in strings do not count)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub('""', text)):
        depth += 1 if match.group() in "[{" else -1
        if depth > limit:
            return True
    return False


def lone_surrogate_at(value: Any) -> str | None:
    """The dotted path of the first string (or key) holding a lone surrogate ("" for the top
    level), or None. Iterative, so any depth json.loads returned is safe."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if not encodable(item):
                return where
            continue
        if isinstance(item, dict):
            pairs: Any = item.items()
        elif isinstance(item, list):
            pairs = enumerate(item)
        else:
            continue
        for key, child in reversed(list(pairs)):
            name = f"{where}.{printable(str(key))}" if where else printable(str(key))
            if isinstance(key, str) and not encodable(key):
                return name
            stack.append((name, child))
    return None


def printable(text: str) -> str:
    """`text` with any lone surrogate written as a `\\udXXX` escape (safe to echo back)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def encodable(text: str) -> bool:
    """True when `text` can be written as UTF-8 (holds no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
