"""The shared backends beside SQLite in one bench run: a scratch database on the given
PostgreSQL server (migrated, dropped afterwards), and the `pg_` prefix of the figures."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from companion.storage.store import migrate_database, postgres

PREFIX = "pg_"


@contextmanager
def scratch_database(url: str) -> Iterator[str]:
    """The url of a new database on the server of `url` (the role needs CREATEDB), migrated to
    head and dropped at the end; the database of `url` itself is not touched."""
    name = f"companion_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(
        postgres.normalise_url(sa.make_url(url)),
        isolation_level="AUTOCOMMIT",
        poolclass=sa.pool.NullPool,
    )
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        scratch = postgres.normalise_url(sa.make_url(url)).set(database=name)
        scratch_url = scratch.render_as_string(hide_password=False)
        migrate_database(scratch_url)
        yield scratch_url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def prefixed(figures: dict[str, float]) -> dict[str, float]:
    """The figures of the shared backends, named pg_<name>."""
    return {PREFIX + name: value for name, value in figures.items()}
