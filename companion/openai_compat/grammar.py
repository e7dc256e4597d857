"""`response_format` and `tools` held to llama.cpp grammars (GBNF), and tool calls parsed back.

JSON schemas become GBNF through llama-cpp-python's converter (llama_cpp.llama_grammar). Two
changes make every reply parse: a JSON string never holds a raw control character (the
converter's `char` allows them; `json.loads` does not), and strings and arrays the schema
leaves unbounded are held to MAX_STRING characters and MAX_ITEMS items, so that a small
model's run-on string still closes (the reply still satisfies the client's schema). A
number with whole-number bounds is spelled out in the grammar (the converter bounds only
integers), so that a sampled 0-1 confidence cannot come out as 10.

A tool call is written `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`; the
grammar allows only the declared functions, each with arguments of its own schema.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from companion.openai_compat.params import BadParameter

MAX_STRING = 256  # characters of a string the schema leaves unbounded
MAX_ITEMS = 16  # items of an array the schema leaves unbounded
MAX_RANGE = 1000  # whole numbers between a number's bounds that the grammar spells out
MAX_PARALLEL_CALLS = 4
OPEN, CLOSE = "<tool_call>", "</tool_call>"
_JSON_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] | "\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F]{4})'
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _bounded(schema: Any) -> Any:
    """A copy of the schema with unbounded arrays bounded (strings: see schema_gbnf)."""
    if isinstance(schema, list):
        return [_bounded(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _bounded(v) for k, v in schema.items()}
    kind = out.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if "array" in kinds and "maxItems" not in out:
        out["maxItems"] = MAX_ITEMS
    return out


def _number_range(schema: dict[str, Any]) -> str | None:
    """GBNF for a "number" with whole-number bounds 0 <= minimum < maximum (up to MAX_RANGE
    apart): the converter holds integers to their bounds, not numbers. None: left as is."""
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if schema.get("type") != "number" or not all(
        isinstance(b, int | float) and not isinstance(b, bool) and float(b).is_integer()
        for b in (lo, hi)
    ):
        return None
    lo, hi = int(lo), int(hi)  # type: ignore[arg-type]
    if not 0 <= lo < hi or hi - lo > MAX_RANGE:
        return None
    below = " | ".join(f'"{n}"' for n in range(lo, hi))
    return f'(({below}) ("." [0-9]{{1,6}})? | "{hi}" ("." "0"{{1,6}})?)'


def _with_ranges(schema: Any, ranges: list[str]) -> Any:
    """A copy of the schema with each bounded number stood in for by a named const, whose GBNF
    goes to `ranges` (schema_gbnf puts it where the converter wrote the const)."""
    if isinstance(schema, list):
        return [_with_ranges(s, ranges) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if (rule := _number_range(schema)) is not None:
        ranges.append(rule)
        return {"const": f"__number_range_{len(ranges) - 1}__"}
    return {k: _with_ranges(v, ranges) for k, v in schema.items()}


def _remote_ref(schema: Any) -> bool:
    """Whether the schema refers to another document (which would be fetched: refused)."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if ref is not None and not (isinstance(ref, str) and ref.startswith("#")):
            return True
        return any(_remote_ref(v) for v in schema.values())
    return isinstance(schema, list) and any(_remote_ref(v) for v in schema)


def schema_gbnf(schema: dict[str, Any], param: str) -> str:
    """GBNF (root rule "root") for documents valid under `schema`; 400 naming `param` if the
    converter cannot read it."""
    if _remote_ref(schema):
        raise BadParameter(f"{param}: only local $ref (#/...) is supported", field=param)
    ranges: list[str] = []
    try:
        gbnf = json_schema_to_gbnf(
            json.dumps(_with_ranges(_bounded(copy.deepcopy(schema)), ranges))
        )
    except Exception as exc:  # the converter raises plain errors on what it cannot handle
        raise BadParameter(f"{param}: the JSON schema cannot be used: {exc}", field=param) from None
    gbnf = gbnf.replace("char*", f"char{{0,{MAX_STRING}}}")  # the unbounded strings' rule
    for i, rule in enumerate(ranges):
        gbnf = gbnf.replace(f'"\\"__number_range_{i}__\\""', rule)
    return re.sub(r"^char ::= .*$", lambda _: _JSON_CHAR, gbnf, count=1, flags=re.MULTILINE)


@dataclass(frozen=True)
class OutputFormat:
    """What the reply must be: a grammar (None: free text) and a line for the system prompt."""

    grammar: str | None = None
    instruction: str | None = None
    schema: dict[str, Any] | None = None


def response_format(value: dict[str, Any] | None) -> OutputFormat:
    """`response_format`: text, json_object (any JSON object) or json_schema."""
    kind = (value or {}).get("type", "text")
    if kind == "text":
        return OutputFormat()
    if kind == "json_object":
        return OutputFormat(JSON_GBNF, "Reply with one JSON object only.")
    if kind != "json_schema":
        raise BadParameter(
            f"response_format.type {kind!r}: use text, json_object or json_schema",
            field="response_format",
        )
    spec = (value or {}).get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
        raise BadParameter(
            "response_format.json_schema must be an object with a `schema` object",
            field="response_format",
        )
    schema = spec.get("schema") or {"type": "object"}
    note = f"Reply with JSON only, matching this JSON schema: {json.dumps(schema)}"
    return OutputFormat(schema_gbnf(schema, "response_format"), note, schema)


@dataclass(frozen=True)
class Tools:
    """The functions the model may call this turn, and how it must answer."""

    functions: dict[str, dict[str, Any]]  # name -> parameters schema
    descriptions: list[dict[str, Any]]
    choice: str  # auto | required | <a function's name>
    parallel: bool

    def instruction(self) -> str:
        """The system prompt's lines about the functions."""
        must = {"auto": "Call a function only when it helps; otherwise reply in plain text.",
                "required": "You must call one of these functions."}.get(
            self.choice, f"You must call the function {self.choice}.")  # fmt: skip
        lines = [
            "You can call these functions. To call one, reply with only:",
            f'{OPEN}{{"name": <function name>, "arguments": <arguments as JSON>}}{CLOSE}',
            must,
            "Functions:",
        ]
        lines += [json.dumps(d, ensure_ascii=False) for d in self.descriptions]
        return "\n".join(lines)

    def grammar(self) -> str:
        """Tool calls only (required, named), or plain text not starting with "<" (auto)."""
        names = [self.choice] if self.choice in self.functions else list(self.functions)
        alternatives = [
            {
                "type": "object",
                "properties": {"name": {"const": n}, "arguments": self.functions[n]},
                "required": ["name", "arguments"],
            }
            for n in names
        ]
        schema = alternatives[0] if len(alternatives) == 1 else {"oneOf": alternatives}
        call = schema_gbnf(schema, "tools").replace("root ::=", "call ::=", 1)
        more = f'("\\n" tool-call){{0,{MAX_PARALLEL_CALLS - 1}}}' if self.parallel else ""
        rules = [
            f"calls ::= tool-call {more}",
            f'tool-call ::= "{OPEN}" call "{CLOSE}"',
            "text ::= [^<\\x00] [^\\x00]*",
            "root ::= calls | text" if self.choice == "auto" else "root ::= calls",
        ]
        return "\n".join(rules) + "\n" + call


def tools_of(
    tools: list[dict[str, Any]] | None, choice: str | dict[str, Any] | None, parallel: bool | None
) -> Tools | None:
    """`tools` and `tool_choice` checked; None when no function may be called this turn."""
    if not tools:
        if choice not in (None, "none", "auto"):
            raise BadParameter("tool_choice needs tools", field="tool_choice")
        return None
    functions: dict[str, dict[str, Any]] = {}
    descriptions = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if tool.get("type") == "function" else None
        if not isinstance(fn, dict) or not _NAME.match(str(fn.get("name", ""))):
            raise BadParameter(
                f"tools[{i}]: only function tools with a name of letters, digits, _ or -",
                field="tools",
            )
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        functions[fn["name"]] = params
        descriptions.append(
            {"name": fn["name"], "description": fn.get("description", ""), "parameters": params}
        )
    name = _choice(choice, functions)
    if name == "none":
        return None
    return Tools(functions, descriptions, name, parallel is not False)


def _choice(choice: str | dict[str, Any] | None, functions: dict[str, Any]) -> str:
    """auto | none | required | the named function."""
    if choice is None or choice in ("auto", "none", "required"):
        return str(choice or "auto")
    named = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    if named not in functions:
        raise BadParameter(
            f"tool_choice: {named or choice!r} is not one of the tools", field="tool_choice"
        )
    return str(named)


def parse_calls(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """(content outside the calls or None, tool_calls in OpenAI's shape). Each call's JSON is
    read as JSON (an argument may itself hold the closing tag); a call cut short (max_tokens)
    or malformed ends the calls, and the text from it on stays content."""
    decoder = json.JSONDecoder()
    calls: list[dict[str, Any]] = []
    rest: list[str] = []
    at = 0
    while (start := text.find(OPEN, at)) != -1:
        body = start + len(OPEN)
        body += len(text[body:]) - len(text[body:].lstrip())
        try:
            call, end = decoder.raw_decode(text, body)
        except ValueError:
            break
        after = text[end:].lstrip()
        if not (after.startswith(CLOSE) and isinstance(call, dict)
                and isinstance(call.get("name"), str) and "arguments" in call):  # fmt: skip
            break
        rest.append(text[at:start])
        at = len(text) - len(after) + len(CLOSE)
        calls.append(
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {
                    "name": call["name"],
                    "arguments": json.dumps(call["arguments"], ensure_ascii=False),
                },
            }
        )
    if not calls:
        return (text or None), []
    content = ("".join(rest) + text[at:]).strip()
    return (content or None), calls


def render_calls(calls: list[dict[str, Any]]) -> str:
    """An assistant message's tool_calls as the model writes them (for the history)."""
    parts = []
    for call in calls:
        fn = call.get("function")
        fn = fn if isinstance(fn, dict) else {}
        try:
            arguments = json.loads(str(fn.get("arguments") or "{}"))
        except json.JSONDecodeError:
            arguments = fn.get("arguments")
        parts.append(f"{OPEN}{json.dumps({'name': fn.get('name'), 'arguments': arguments})}{CLOSE}")
    return "\n".join(parts)
