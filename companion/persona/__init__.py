"""Personality: the persona, its prompt and sampling, character cards, relationships (issue 5)."""

from __future__ import annotations

from companion.persona.model import DEFAULT_ID, TRAITS, Persona, Relationship, persona_from
from companion.persona.store import PersonaStore

__all__ = ["DEFAULT_ID", "TRAITS", "Persona", "PersonaStore", "Relationship", "persona_from"]
