"""The shared backends beside SQLite in one bench run: a scratch schema on the given PostgreSQL
(migrated, dropped afterwards), and the `pg_` prefix of the figures measured there."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from companion.storage.store import create_store_engine, migrate_database

PREFIX = "pg_"


@contextmanager
def scratch_database(url: str) -> Iterator[str]:
    """A url whose tables live in a new schema of the database at `url`: migrated to head,
    dropped with everything in it at the end (the database's own tables are not touched)."""
    schema = f"companion_bench_{uuid.uuid4().hex[:10]}"
    engine = create_store_engine(url, pool_size=1, max_overflow=0)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public"))
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        scoped = sa.make_url(url).update_query_dict({"options": f"-csearch_path={schema},public"})
        scoped_url = scoped.render_as_string(hide_password=False)
        migrate_database(scoped_url)
        yield scoped_url
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        engine.dispose()


def prefixed(figures: dict[str, float]) -> dict[str, float]:
    """The figures of the shared backends, named pg_<name>."""
    return {PREFIX + name: value for name, value in figures.items()}
