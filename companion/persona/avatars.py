"""Persona avatars: the image of an imported PNG character card, kept beside the persona."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from companion.storage import Store
from companion.storage.schema import persona_avatars

MAX_AVATAR_BYTES = 4 << 20


def save_avatar(store: Store, persona_id: str, png: bytes) -> None:
    """Keep (or replace) a persona's avatar."""
    with store.writing() as conn:
        conn.execute(sa.delete(persona_avatars).where(persona_avatars.c.persona_id == persona_id))
        conn.execute(
            sa.insert(persona_avatars).values(
                persona_id=persona_id, png=png[:MAX_AVATAR_BYTES], updated_at=datetime.now(UTC)
            )
        )


def avatar(store: Store, persona_id: str) -> bytes | None:
    """A persona's avatar PNG, or None."""
    query = sa.select(persona_avatars.c.png).where(persona_avatars.c.persona_id == persona_id)
    with store.reading() as conn:
        found = conn.execute(query).scalar_one_or_none()
    return bytes(found) if found is not None else None


def with_avatars(store: Store) -> set[str]:
    """The ids of the personas that have an avatar."""
    with store.reading() as conn:
        return set(conn.execute(sa.select(persona_avatars.c.persona_id)).scalars())


def drop_avatar(store: Store, persona_id: str) -> None:
    """Forget a persona's avatar (when the persona is deleted)."""
    with store.writing() as conn:
        conn.execute(sa.delete(persona_avatars).where(persona_avatars.c.persona_id == persona_id))
