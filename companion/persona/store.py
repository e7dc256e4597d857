"""Personas and relationships in SQL: create, edit, select per user, and track the relationship."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from companion.auth import Forbidden
from companion.errors import InputError, NotFound
from companion.persona.avatars import drop_avatar, save_avatar
from companion.persona.card import PNG_SIGNATURE, from_card, load_card
from companion.persona.model import (
    DEFAULT_ID,
    Persona,
    Relationship,
    default_persona,
    edited,
    interacted,
    persona_from,
)
from companion.storage import Store
from companion.storage.schema import personas, relationships


def _persona(data: dict[str, Any], owner_id: str | None) -> Persona:
    """A stored row's persona; the row's owner column is what counts."""
    return replace(persona_from(dict(data)), owner_id=owner_id)


def _now() -> datetime:
    """The clock of persona rows."""
    return datetime.now(UTC)


class PersonaStore:
    """The personas, which one each user talks to, and how each relationship stands."""

    def __init__(self, store: Store, system_prompt: str) -> None:
        """`system_prompt` is what the built-in default persona says."""
        self.store = store
        self.default = default_persona(system_prompt)

    def all(self, viewer: str | None = None) -> list[Persona]:
        """The default persona, then the stored ones by name: the shared ones and `viewer`'s
        private ones (every persona when `viewer` is None: admins, the CLI)."""
        query = sa.select(personas.c.data, personas.c.owner_id).order_by(personas.c.name)
        if viewer is not None:
            query = query.where(sa.or_(personas.c.owner_id.is_(None),
                                       personas.c.owner_id == viewer))
        with self.store.reading() as conn:
            rows = conn.execute(query).all()
        return [self.default, *(_persona(r.data, r.owner_id) for r in rows)]

    def get(self, persona_id: str) -> Persona:
        """One persona (NotFound when absent)."""
        if persona_id == DEFAULT_ID:
            return self.default
        query = sa.select(personas.c.data, personas.c.owner_id).where(personas.c.id == persona_id)
        with self.store.reading() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise NotFound(f"no persona {persona_id!r}", field="persona_id")
        return _persona(row.data, row.owner_id)

    def check_access(self, persona_id: str, user_id: str, write: bool) -> None:
        """Whether `user_id` (no admin) may see, or change, a persona: their own private one,
        or (only to see) a shared one. Another user's private persona is NotFound, as if it
        did not exist; changing a shared one is Forbidden. An absent persona passes (the route
        says 404)."""
        try:
            persona = self.get(persona_id)
        except NotFound:
            return
        if persona.owner_id is None:
            if write:
                raise Forbidden("shared personas are managed by admins; create a private "
                                "persona of your own (POST /api/v1/personas)")
        elif persona.owner_id != user_id:
            raise NotFound(f"no persona {persona_id!r}", field="persona_id")

    def create(self, persona: Persona, owner_id: str | None = None) -> Persona:
        """Store a new persona, shared (`owner_id` None) or private to `owner_id` (InputError if
        the id is taken)."""
        if persona.id == DEFAULT_ID:
            raise InputError("'default' is the built-in persona; choose another id", field="id")
        persona = replace(persona, owner_id=owner_id)
        if owner_id is not None:
            self.store.ensure_user(owner_id)
        now = _now()
        try:
            with self.store.writing() as conn:
                conn.execute(sa.insert(personas).values(
                    id=persona.id, name=persona.name, data=persona.to_dict(), created_at=now,
                    updated_at=now, owner_id=owner_id))
        except IntegrityError as exc:
            raise InputError(f"persona {persona.id!r} exists already", field="id") from exc
        return persona

    def update(self, persona_id: str, changes: dict[str, Any]) -> Persona:
        """Apply `changes` to a stored persona (the default follows the system_prompt setting)."""
        if persona_id == DEFAULT_ID:
            raise InputError("the default persona is the system_prompt setting; create a new "
                             "persona to change traits", field="persona_id")
        new = edited(self.get(persona_id), changes)
        with self.store.writing() as conn:
            conn.execute(sa.update(personas).where(personas.c.id == persona_id).values(
                name=new.name, data=new.to_dict(), updated_at=_now()))
        return new

    def delete(self, persona_id: str) -> None:
        """Remove a stored persona; users who had it selected go back to the default."""
        if persona_id == DEFAULT_ID:
            raise InputError("the built-in persona cannot be deleted (it is the system_prompt "
                             "setting)", field="persona_id")
        self.get(persona_id)
        with self.store.writing() as conn:
            conn.execute(sa.delete(personas).where(personas.c.id == persona_id))
            conn.execute(sa.delete(relationships)
                         .where(relationships.c.persona_id == persona_id))
        drop_avatar(self.store, persona_id)

    def import_card(self, raw: bytes, persona_id: str | None = None,
                    on_conflict: str = "refuse", owner_id: str | None = None) -> Persona:
        """A persona from a Character Card V2 file (JSON or PNG; a PNG is kept as its avatar),
        shared (`owner_id` None) or private to `owner_id`, like create().

        When the id is taken: `refuse` (InputError), `overwrite` it (only a persona the
        importer may change: check_access), or `rename` (a free id and "Name (2)")."""
        card = from_card(load_card(raw), persona_id)
        if card.id == DEFAULT_ID or self._exists(card.id):
            if on_conflict == "overwrite" and card.id != DEFAULT_ID:
                if owner_id is not None:
                    self._may_overwrite(card.id, owner_id)
                made = self._replace(card)
            elif on_conflict in ("rename", "overwrite"):
                made = self.create(self._renamed(card), owner_id)
            else:
                raise InputError(f"persona {card.id!r} exists already: import again with "
                                 "overwrite or rename", field="id")
        else:
            made = self.create(card, owner_id)
        if raw.startswith(PNG_SIGNATURE):
            save_avatar(self.store, made.id, raw)
        return made

    def _replace(self, persona: Persona) -> Persona:
        """Write every field of a stored persona anew (an overwriting import); its owner stays."""
        persona = replace(persona, owner_id=self.get(persona.id).owner_id)
        with self.store.writing() as conn:
            conn.execute(sa.update(personas).where(personas.c.id == persona.id).values(
                name=persona.name, data=persona.to_dict(), updated_at=_now()))
        return persona

    def _may_overwrite(self, persona_id: str, user_id: str) -> None:
        """Forbidden unless `user_id` may change the stored persona (see check_access)."""
        try:
            self.check_access(persona_id, user_id, write=True)
        except NotFound:
            raise Forbidden(f"persona {persona_id!r} exists and is not yours: import with "
                            "on_conflict=rename", field="id") from None

    def _exists(self, persona_id: str) -> bool:
        """Whether a stored persona has this id."""
        with self.store.reading() as conn:
            found = conn.execute(sa.select(personas.c.id).where(personas.c.id == persona_id))
            return found.first() is not None

    def _renamed(self, persona: Persona) -> Persona:
        """The persona under the first free id of `id-2`, `id-3`, ... and "Name (n)"."""
        n = 2
        while self._exists(f"{persona.id[:60]}-{n}"):
            n += 1
        data = {**persona.to_dict(), "name": f"{persona.name} ({n})"}
        return persona_from(data, persona_id=f"{persona.id[:60]}-{n}")

    # users

    def select(self, user_id: str, persona_id: str) -> Relationship:
        """Make `persona_id` the one `user_id` talks to; its relationship carries on.
        Another user's private persona is NotFound, whoever asks."""
        owner = self.get(persona_id).owner_id
        if owner is not None and owner != user_id:
            raise NotFound(f"no persona {persona_id!r}", field="persona_id")
        self.store.ensure_user(user_id)
        with self.store.writing() as conn:
            conn.execute(sa.update(relationships).where(relationships.c.user_id == user_id)
                         .values(active=False))
            rel = self._relationship(conn, user_id, persona_id)
            self._save(conn, rel, active=True)
        return rel

    def active(self, user_id: str) -> tuple[Persona, Relationship]:
        """The persona a user talks to (default when none chosen) and their relationship."""
        query = sa.select(relationships).where(relationships.c.user_id == user_id,
                                               relationships.c.active.is_(True))
        with self.store.reading() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            return self.default, Relationship(user_id, DEFAULT_ID)
        rel = Relationship(user_id, row["persona_id"], float(row["familiarity"]),
                           float(row["affinity"]), int(row["interactions"]))
        try:
            return self.get(rel.persona_id), rel
        except NotFound:
            return self.default, Relationship(user_id, DEFAULT_ID)

    def interacted(self, user_id: str, persona_id: str, feedback: float = 0.0) -> Relationship:
        """Record one exchange (and any feedback in it); returns the new state."""
        with self.store.writing() as conn:
            rel = interacted(self._relationship(conn, user_id, persona_id), feedback)
            self._save(conn, rel, active=None)
        return rel

    def relationships(self, user_id: str) -> list[dict[str, Any]]:
        """Every relationship of a user (for export)."""
        with self.store.reading() as conn:
            rows = conn.execute(sa.select(relationships)
                                .where(relationships.c.user_id == user_id)).mappings().all()
        return [{**dict(r), "updated_at": r["updated_at"].isoformat()} for r in rows]

    @staticmethod
    def _relationship(conn: Connection, user_id: str, persona_id: str) -> Relationship:
        """The stored relationship, or a fresh one."""
        row = conn.execute(sa.select(relationships).where(
            relationships.c.user_id == user_id, relationships.c.persona_id == persona_id)
        ).mappings().first()
        if row is None:
            return Relationship(user_id, persona_id)
        return Relationship(user_id, persona_id, float(row["familiarity"]),
                            float(row["affinity"]), int(row["interactions"]))

    @staticmethod
    def _save(conn: Connection, rel: Relationship, active: bool | None) -> None:
        """Upsert a relationship row (`active` None keeps the flag as it is)."""
        values = {"familiarity": rel.familiarity, "affinity": rel.affinity,
                  "interactions": rel.interactions, "updated_at": _now()}
        if active is not None:
            values["active"] = active
        done = conn.execute(sa.update(relationships).where(
            relationships.c.user_id == rel.user_id,
            relationships.c.persona_id == rel.persona_id).values(**values))
        if done.rowcount == 0:
            conn.execute(sa.insert(relationships).values(
                user_id=rel.user_id, persona_id=rel.persona_id, active=bool(active), **{
                    k: v for k, v in values.items() if k != "active"}))

