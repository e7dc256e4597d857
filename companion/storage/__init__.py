"""Persistence: SQL tables, alembic migrations and the Store that the rest of companion uses."""

from __future__ import annotations

from companion.storage.schema import metadata
from companion.storage.store import (
    MIGRATIONS_DIR,
    Store,
    alembic_config,
    create_store_engine,
    open_store,
    store_for,
    upgrade_to_head,
)

__all__ = [
    "MIGRATIONS_DIR",
    "Store",
    "alembic_config",
    "create_store_engine",
    "metadata",
    "open_store",
    "store_for",
    "upgrade_to_head",
]
