"""The persona (who the companion is) and the relationship it has with each user."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from companion.errors import InputError
from companion.jsonbody import encodable

# Each trait runs from 0 to 1; 0.5 is neutral (says nothing in the prompt, changes no sampling).
TRAITS = ("warmth", "humor", "formality", "verbosity", "curiosity", "playfulness", "empathy",
          "assertiveness")
DEFAULT_ID = "default"
MAX_EXAMPLES = 8
ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Persona:
    """A character: name, description, traits, speaking style and example lines."""

    id: str
    name: str
    description: str = ""
    traits: dict[str, float] = field(default_factory=dict)
    speaking_style: str = ""
    example_lines: tuple[str, ...] = ()
    greeting: str = ""
    scenario: str = ""
    system_prompt: str | None = None  # a verbatim prompt (the default persona: the setting)
    tags: tuple[str, ...] = ()
    owner_id: str | None = None  # None: shared (admins manage it); else private to that user

    @property
    def is_default(self) -> bool:
        """True for the built-in persona that renders the `system_prompt` setting."""
        return self.id == DEFAULT_ID

    def trait(self, name: str) -> float:
        """A trait's value, 0.5 (neutral) when unset."""
        return self.traits.get(name, 0.5)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (what the personas table stores)."""
        data = asdict(self)
        data["example_lines"] = list(self.example_lines)
        data["tags"] = list(self.tags)
        return data


def slug(name: str) -> str:
    """An id made from a name: lower case, dashes."""
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:64]
    return text or "persona"


def _traits(value: Any) -> dict[str, float]:
    """Validated traits: known names, numbers in [0, 1]."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError("traits must be an object of name: 0..1", field="traits")
    out: dict[str, float] = {}
    for name, number in value.items():
        if name not in TRAITS:
            raise InputError(f"unknown trait {name!r}; known: {', '.join(TRAITS)}",
                             field="traits")
        if not isinstance(number, int | float) or not 0.0 <= float(number) <= 1.0:
            raise InputError(f"trait {name} must be a number from 0 to 1", field="traits")
        out[name] = float(number)
    return out


# What a persona's fields may hold, however the persona arrives (API body, card, CLI, row)
LIMITS = {"name": 255, "description": 4000, "speaking_style": 1000, "greeting": 1000,
          "scenario": 2000, "system_prompt": 4000}
MAX_LINE = 1000  # characters per example line
MAX_TAGS, MAX_TAG = 16, 64


def _checked(value: str, key: str, limit: int) -> str:
    """A string within its limit that can be stored as UTF-8 (no lone surrogate)."""
    if len(value) > limit:
        raise InputError(f"{key} must be a string of at most {limit} characters", field=key)
    if not encodable(value):
        raise InputError(f"{key} holds a lone UTF-16 surrogate, which is not valid Unicode",
                         field=key)
    return value


def _text(data: dict[str, Any], key: str) -> str:
    """A string field (None: empty), checked for type and length."""
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(f"{key} must be a string of at most {LIMITS[key]} characters",
                         field=key)
    return _checked(value, key, LIMITS[key]).strip()


def _strings(data: dict[str, Any], key: str, most: int, limit: int) -> tuple[str, ...]:
    """A list of at most `most` strings of at most `limit` characters (blank ones dropped)."""
    value = data.get(key)
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(isinstance(x, str) for x in value):
        raise InputError(f"{key} must be a list of strings", field=key)
    if len(value) > most:
        raise InputError(f"{key} may hold at most {most} items", field=key)
    return tuple(_checked(x, key, limit).strip() for x in value if x.strip())


def persona_from(data: dict[str, Any], *, persona_id: str | None = None) -> Persona:
    """Build and validate a Persona from a JSON-like dict: the one check every persona passes
    (API bodies, character cards, the CLI, stored rows): types, lengths, valid Unicode."""
    name = _text(data, "name")
    if not name:
        raise InputError("a persona needs a name", field="name")
    pid = persona_id or data.get("id") or slug(name)
    if not isinstance(pid, str) or not ID_RE.match(pid):
        raise InputError("id must be 1-64 of a-z, 0-9, '_', '.', '-'", field="id")
    owner = data.get("owner_id")
    return Persona(
        id=pid, name=name, description=_text(data, "description"),
        traits=_traits(data.get("traits")), speaking_style=_text(data, "speaking_style"),
        example_lines=_strings(data, "example_lines", MAX_EXAMPLES, MAX_LINE),
        greeting=_text(data, "greeting"), scenario=_text(data, "scenario"),
        system_prompt=_text(data, "system_prompt") or None,
        tags=_strings(data, "tags", MAX_TAGS, MAX_TAG),
        owner_id=owner if isinstance(owner, str) else None,
    )


def edited(persona: Persona, changes: dict[str, Any]) -> Persona:
    """The persona with `changes` applied (traits merge; None values are ignored)."""
    data = persona.to_dict()
    for key, value in changes.items():
        if value is None:
            continue
        data[key] = {**data["traits"], **value} if key == "traits" else value
    return persona_from(data, persona_id=persona.id)


def default_persona(system_prompt: str) -> Persona:
    """The built-in persona: Nova, speaking through the configured system prompt."""
    return Persona(
        id=DEFAULT_ID, name="Nova",
        description="A warm and curious companion.",
        traits={"warmth": 0.8, "curiosity": 0.7, "verbosity": 0.35},
        speaking_style="friendly, natural, short replies unless asked for more",
        system_prompt=system_prompt,
    )


@dataclass(frozen=True)
class Relationship:
    """How one user and one persona stand: familiarity 0..1, affinity -1..1."""

    user_id: str
    persona_id: str
    familiarity: float = 0.0
    affinity: float = 0.0
    interactions: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, with the stage in words."""
        return {**asdict(self), "stage": stage(self)}


FAMILIARITY_STEP = 0.03  # of the distance left to 1, per exchange: fast at first, then slow
AFFINITY_STEP = 0.1  # per explicit feedback
AFFINITY_DRIFT = 0.005  # per ordinary exchange


def interacted(rel: Relationship, feedback: float = 0.0) -> Relationship:
    """The relationship after one exchange; `feedback` in [-1, 1] (thanks, complaints)."""
    familiarity = rel.familiarity + FAMILIARITY_STEP * (1.0 - rel.familiarity)
    step = AFFINITY_STEP * max(-1.0, min(1.0, feedback)) if feedback else AFFINITY_DRIFT
    affinity = max(-1.0, min(1.0, rel.affinity + step))
    return replace(rel, familiarity=min(1.0, familiarity), affinity=affinity,
                   interactions=rel.interactions + 1)


def stage(rel: Relationship) -> str:
    """The relationship in words, in coarse steps so the prompt changes rarely."""
    if rel.affinity <= -0.3:
        return "strained"
    if rel.familiarity < 0.15:
        return "new acquaintance"
    if rel.familiarity < 0.5:
        return "acquaintance"
    return "close friend" if rel.affinity >= 0.3 else "friend"
