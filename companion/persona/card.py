"""SillyTavern Character Card V2: to and from JSON, and inside a PNG's `chara` tEXt chunk.

The card's own fields carry name, description, personality (our speaking style), scenario,
greeting and example dialogue; our traits travel in `data.extensions.companion`, which other
tools keep untouched. V1 cards (the fields at the top level) are read too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import struct
import zlib
from typing import Any

from companion.errors import InputError
from companion.jsonbody import parse_json
from companion.persona.model import MAX_EXAMPLES, Persona, persona_from

SPEC = "chara_card_v2"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CARD_KEYWORDS = (b"chara", b"ccv3")  # V2 first; a V3 card's chunk as a fallback
MAX_CARD_BYTES = 4 << 20
_EXAMPLE = re.compile(r"^\s*(?:\{\{char\}\}|<BOT>|(?P<name>[^:\n]{1,40})):\s*(?P<line>.+)$",
                      re.MULTILINE)


def to_card(persona: Persona) -> dict[str, Any]:
    """The persona as a Character Card V2 dict."""
    examples = "".join(f"<START>\n{{{{char}}}}: {line}\n" for line in persona.example_lines)
    return {
        "spec": SPEC,
        "spec_version": "2.0",
        "data": {
            "name": persona.name,
            "description": persona.description,
            "personality": persona.speaking_style,
            "scenario": persona.scenario,
            "first_mes": persona.greeting,
            "mes_example": examples,
            "creator_notes": "Exported by companion.",
            "system_prompt": persona.system_prompt or "",
            "post_history_instructions": "",
            "alternate_greetings": [],
            "tags": list(persona.tags),
            "creator": "companion",
            "character_version": "1",
            "extensions": {"companion": {"id": persona.id, "traits": dict(persona.traits)}},
        },
    }


def _macros(text: str, name: str) -> str:
    """A card's text as stored: macros such as {{char}} and {{user}} stay, for chat time
    (persona/prompt.py expand_macros), so one card greets each user by their own name."""
    return text


def _examples(mes_example: str, name: str) -> list[str]:
    """The character's lines from a card's example dialogue."""
    lines = []
    for m in _EXAMPLE.finditer(mes_example):
        speaker = (m["name"] or "").strip()
        if not speaker or speaker == name:
            lines.append(_macros(m["line"].strip(), name))
    return lines


def _card_text(data: dict[str, Any], key: str, name: str) -> str:
    """A card's text field as stored (_macros; "" when absent); InputError if not text."""
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(f"card field data.{key} must be a string", field=f"card.data.{key}")
    return _macros(value, name)


def _card_object(value: Any, where: str) -> dict[str, Any]:
    """A card's object field ({} when absent); InputError if it is not an object."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"card field {where} must be an object", field=f"card.{where}")
    return value


def from_card(card: dict[str, Any], persona_id: str | None = None) -> Persona:
    """A Persona from a V2 (or V1) card dict, through the same validation as the API's
    personas (persona_from): wrong types and over-long fields are refused, not cut."""
    if not isinstance(card, dict):
        raise InputError("a character card must be a JSON object", field="card")
    data = card.get("data") if card.get("spec") in (SPEC, "chara_card_v3") else card
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise InputError("not a character card: no data.name", field="card")
    name = data["name"].strip()
    extensions = _card_object(data.get("extensions"), "data.extensions")
    ours = _card_object(extensions.get("companion"), "data.extensions.companion")
    return persona_from(
        {
            "name": name,
            "description": _card_text(data, "description", name),
            "speaking_style": _card_text(data, "personality", name),
            "scenario": _card_text(data, "scenario", name),
            "greeting": _card_text(data, "first_mes", name),
            "example_lines": _examples(_card_text(data, "mes_example", name), name)[:MAX_EXAMPLES],
            "system_prompt": _card_text(data, "system_prompt", name) or None,
            "traits": ours.get("traits") or {},
            "tags": data.get("tags") or [],
        },
        persona_id=persona_id or ours.get("id"),
    )


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk; InputError on a broken file."""
    if not png.startswith(PNG_SIGNATURE):
        raise InputError("not a PNG file", field="card")
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos + 12 <= len(png):
        (length,) = struct.unpack(">I", png[pos:pos + 4])
        kind, data = png[pos + 4:pos + 8], png[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length:pos + 12 + length] or b"\0\0\0\0")
        if len(data) != length or zlib.crc32(kind + data) != crc:
            raise InputError("PNG chunk is truncated or corrupt", field="card")
        chunks.append((kind, data))
        pos += 12 + length
        if kind == b"IEND":
            return chunks
    raise InputError("PNG file has no IEND chunk", field="card")


def _chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def read_png_card(png: bytes) -> dict[str, Any]:
    """The card JSON held in a PNG's `chara` (or `ccv3`) tEXt chunk."""
    found: dict[bytes, bytes] = {}
    for kind, data in _chunks(png):
        if kind == b"tEXt" and b"\0" in data:
            keyword, _, text = data.partition(b"\0")
            found.setdefault(keyword.lower(), text)
    for keyword in CARD_KEYWORDS:
        if keyword in found:
            what = f"the PNG's {keyword.decode()} chunk"
            try:
                raw = base64.b64decode(found[keyword], validate=False)
            except (binascii.Error, ValueError) as exc:
                raise InputError(f"{what} is not base64 JSON", field="card") from exc
            return _object(parse_json(raw, what=what, field="card"))
    raise InputError("the PNG holds no character card (no 'chara' text chunk)", field="card")


def write_png_card(card: dict[str, Any], png: bytes | None = None) -> bytes:
    """`png` (or a small generated image) with the card in a `chara` tEXt chunk before IEND."""
    text = base64.b64encode(json.dumps(card, ensure_ascii=False).encode("utf-8"))
    name = str((card.get("data") or {}).get("name", ""))
    kept = [(k, d) for k, d in _chunks(png or blank_png(name))
            if not (k == b"tEXt" and d.partition(b"\0")[0].lower() in CARD_KEYWORDS)]
    body = b"".join(_chunk(k, d) for k, d in kept if k != b"IEND")
    return PNG_SIGNATURE + body + _chunk(b"tEXt", b"chara\0" + text) + _chunk(b"IEND", b"")


def blank_png(name: str, size: int = 64) -> bytes:
    """A plain square in a colour drawn from the name (for cards exported without an image)."""
    r, g, b = hashlib.sha256(name.encode()).digest()[:3]
    row = b"\0" + bytes((r, g, b)) * size
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (PNG_SIGNATURE + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(row * size)) + _chunk(b"IEND", b""))


def load_card(raw: bytes) -> dict[str, Any]:
    """A card from file bytes: a PNG with a chunk, or JSON."""
    if len(raw) > MAX_CARD_BYTES:
        raise InputError("character card file is too large", field="card")
    if raw.startswith(PNG_SIGNATURE):
        return read_png_card(raw)
    return _object(parse_json(raw, what="a character card (JSON or a PNG)", field="card"))


def _object(card: Any) -> dict[str, Any]:
    """The card as a dict; InputError when the JSON is not an object."""
    if not isinstance(card, dict):
        raise InputError("a character card must be a JSON object", field="card")
    return card
