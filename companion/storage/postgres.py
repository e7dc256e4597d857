"""PostgreSQL specifics: the engine's pool, the migration lock, pgvector and schema checks."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from companion.errors import ConfigError, StorageError

# pg_advisory_xact_lock key: every instance migrating the same database waits on this one.
MIGRATION_LOCK = 0x636F6D70  # "comp"
MIGRATE_HINT = "companion db migrate"


def normalise_url(url: sa.URL) -> sa.URL:
    """postgresql:// and postgres:// mean psycopg 3 (the driver companion ships with)."""
    if url.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        return url.set(drivername="postgresql+psycopg")
    return url


def engine_options(pool_size: int, max_overflow: int) -> dict[str, Any]:
    """A QueuePool of `pool_size` (+ `max_overflow` under bursts) connections. No ping before
    each use (it doubles a query's round trips): a connection found dead raises once (503
    database_unavailable), SQLAlchemy then drops the whole pool and reconnects on next use."""
    return {
        "pool_size": pool_size,
        "max_overflow": max_overflow,
        "pool_pre_ping": False,
        "pool_timeout": 10,
        "connect_args": {"connect_timeout": 3},
    }


def lock_for_migration(connection: Connection) -> None:
    """Hold the migration lock until this transaction ends: five instances started together
    migrate once (the others wait, then find the schema at head)."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})


def _script(script_location: str) -> ScriptDirectory:
    """The migrations this version of companion ships."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", script_location)
    return ScriptDirectory.from_config(config)


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at (None for an empty database)."""
    return MigrationContext.configure(connection).get_current_revision()


def _vector_state(conn: Connection) -> str:
    """'created', 'available' (installed on the server, not in this database) or 'missing'."""
    if conn.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'vector'")).first():
        return "created"
    available = sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
    return "available" if conn.execute(available).first() else "missing"


def check_ready(engine: Engine, script_location: str) -> None:
    """Refuse to serve a PostgreSQL database without pgvector or with a schema behind (one
    line that names the fix)."""
    with engine.connect() as conn:
        vector = _vector_state(conn)
        revision = current_revision(conn)
    url = engine.url.render_as_string(hide_password=True)
    if vector == "missing":
        raise ConfigError(
            f"PostgreSQL at {url} has no pgvector: install the extension on the "
            "server, then run CREATE EXTENSION vector",
            field="database_url",
        )
    script = _script(script_location)
    head = script.get_current_head()
    known = {r.revision for r in script.walk_revisions()}
    if revision is not None and revision not in known:
        raise StorageError(
            f"the database {url} is at revision {revision}, newer than this "
            f"version of companion knows ({head}): upgrade companion"
        )
    if revision != head:
        raise ConfigError(
            f"the database schema is at revision {revision or 'none'}, this "
            f"version needs {head}: run `{MIGRATE_HINT}`",
            field="database_url",
        )
    if vector != "created":
        raise ConfigError(
            f"PostgreSQL at {url} lacks the pgvector extension: run "
            "CREATE EXTENSION vector (as a superuser)",
            field="database_url",
        )
