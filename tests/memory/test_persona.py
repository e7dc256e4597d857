"""Personas: traits into prompt and sampling, relationship bounds, Character Card V2 JSON/PNG."""

from __future__ import annotations

import base64
import json
import struct
import zlib

import pytest

from companion.errors import InputError, NotFound
from companion.persona import PersonaStore, persona_from
from companion.persona.card import (
    blank_png,
    from_card,
    load_card,
    read_png_card,
    to_card,
    write_png_card,
)
from companion.persona.model import Relationship, interacted, stage
from companion.persona.prompt import expand_macros, feedback, sampling, system_prompt
from companion.storage import Store

MAX = {
    "name": "Max",
    "description": "A cheerful sailor who loves the sea.",
    "traits": {"humor": 0.9, "playfulness": 0.9, "verbosity": 0.1, "formality": 0.1},
    "speaking_style": "short sentences, sea slang",
    "example_lines": ["Ahoy! Fair winds today?", "Ha, that's a whale of a tale!"],
}


def test_traits_shape_prompt_and_sampling() -> None:
    max_ = persona_from(MAX)
    prompt = system_prompt(max_)
    assert prompt.startswith("You are Max. A cheerful sailor")
    assert "You have a good sense of humor." in prompt
    assert "You keep replies very short." in prompt
    assert "You speak casually" in prompt
    assert '"Ahoy! Fair winds today?"' in prompt
    assert "warm" not in prompt  # a neutral trait says nothing
    tuned = sampling(max_, temperature=0.7, max_tokens=256)
    assert tuned["temperature"] > 0.7 and tuned["max_tokens"] < 256
    calm = persona_from({"name": "Sage", "traits": {"playfulness": 0.0, "humor": 0.1,
                                                     "verbosity": 1.0}})
    calm_tuned = sampling(calm, temperature=0.7, max_tokens=256)
    assert calm_tuned["temperature"] < 0.7 and calm_tuned["max_tokens"] > 256


def test_bad_personas_are_refused() -> None:
    with pytest.raises(InputError):
        persona_from({"name": "X", "traits": {"warmth": 1.5}})
    with pytest.raises(InputError):
        persona_from({"name": "X", "traits": {"charisma": 0.5}})
    with pytest.raises(InputError):
        persona_from({"description": "no name"})


def test_relationship_evolves_within_bounds() -> None:
    rel = Relationship("u", "max")
    assert stage(rel) == "new acquaintance"
    for _ in range(200):
        rel = interacted(rel, feedback("Thank you, you're great!"))
    assert rel.interactions == 200
    assert 0.9 < rel.familiarity <= 1.0 and rel.affinity == 1.0
    assert stage(rel) == "close friend"
    for _ in range(50):
        rel = interacted(rel, feedback("You're annoying."))
    assert rel.affinity == -1.0 and stage(rel) == "strained"
    assert feedback("What's the weather?") == 0.0


def test_store_select_and_relationship(store: Store) -> None:
    personas = PersonaStore(store, "You are Nova.")
    assert personas.active("alice")[0].is_default
    personas.create(persona_from(MAX))
    with pytest.raises(InputError):
        personas.create(persona_from(MAX))
    personas.select("alice", "max")
    persona, rel = personas.active("alice")
    assert persona.id == "max" and rel.interactions == 0
    personas.interacted("alice", "max", 1.0)
    assert personas.active("alice")[1].interactions == 1
    assert personas.active("bob")[0].is_default  # one user's choice is theirs alone
    changed = personas.update("max", {"traits": {"warmth": 0.9}})
    assert changed.traits["warmth"] == 0.9 and changed.traits["humor"] == 0.9
    personas.delete("max")
    assert personas.active("alice")[0].is_default
    with pytest.raises(NotFound):
        personas.get("max")


def test_card_json_round_trip() -> None:
    original = persona_from({**MAX, "greeting": "Ahoy, matey!", "scenario": "On a ship."})
    card = to_card(original)
    assert card["spec"] == "chara_card_v2" and card["data"]["first_mes"] == "Ahoy, matey!"
    assert "{{char}}: Ahoy! Fair winds today?" in card["data"]["mes_example"]
    back = from_card(json.loads(json.dumps(card)))
    assert back == original


def test_card_png_round_trip_keeps_the_image() -> None:
    card = to_card(persona_from(MAX))
    image = blank_png("Max")
    png = write_png_card(card, image)
    assert read_png_card(png) == card
    again = write_png_card(card, png)  # replacing, not stacking, the chunk
    assert again.count(b"tEXtchara") == 1
    assert again[:33] == image[:33]  # signature and IHDR untouched
    assert from_card(load_card(png)).name == "Max"


def sillytavern_png(card: dict[str, object]) -> bytes:
    """A PNG laid out as SillyTavern writes it: IHDR, IDAT, tEXt 'chara', IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    text = b"chara\0" + base64.b64encode(json.dumps(card).encode())
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0abc"))
            + chunk(b"tEXt", text) + chunk(b"IEND", b""))


def test_import_of_a_foreign_v2_card_and_a_v1_card() -> None:
    v2 = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {
        "name": "Seraphina", "description": "{{char}} is a guardian of the forest.",
        "personality": "gentle, caring", "scenario": "", "first_mes": "Hello, {{user}}.",
        "mes_example": "<START>\n{{user}}: Hi\n{{char}}: *smiles* Welcome, traveller.\n",
        "creator_notes": "", "system_prompt": "", "post_history_instructions": "",
        "alternate_greetings": [], "tags": ["fantasy"], "creator": "x",
        "character_version": "1", "extensions": {}}}
    persona = from_card(load_card(sillytavern_png(v2)))
    assert persona.id == "seraphina"
    assert persona.description == "{{char}} is a guardian of the forest."  # expanded at chat time
    assert persona.greeting == "Hello, {{user}}."
    assert expand_macros(persona.greeting, persona, "ana") == "Hello, ana."
    assert system_prompt(persona, None, "ana").startswith(
        "You are Seraphina. Seraphina is a guardian of the forest."
    )
    assert persona.example_lines == ("*smiles* Welcome, traveller.",)
    assert persona.speaking_style == "gentle, caring"
    v1 = {"name": "Old", "description": "A V1 card.", "personality": "", "first_mes": "Hi",
          "mes_example": "", "scenario": ""}
    assert from_card(v1).description == "A V1 card."


def test_broken_cards_fail_cleanly() -> None:
    png = write_png_card(to_card(persona_from(MAX)))
    with pytest.raises(InputError):
        load_card(png[:-20])  # truncated
    with pytest.raises(InputError):
        read_png_card(blank_png("x"))  # no chara chunk
    with pytest.raises(InputError):
        load_card(b"not a card")
    with pytest.raises(InputError):
        from_card({"spec": "chara_card_v2", "data": {}})
