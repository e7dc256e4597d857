"""`companion db migrate | copy` and start-up checks on a real PostgreSQL (bundled pgvector), and
on the machine's own PostgreSQL 15, which has no pgvector."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from companion.cli import cli
from companion.errors import CompanionError
from companion.storage import open_store
from tests.servers import Postgres, count_rows

SYSTEM_PG = os.environ.get(
    "COMPANION_TEST_PLAIN_PG", "postgresql+psycopg://postgres@127.0.0.1:5432"
)


def run(data_dir: Path, *args: str, url: str | None = None) -> Result:
    env = {"COMPANION_DATABASE_URL": url} if url else {}
    result = CliRunner(env=env).invoke(cli, ["--data-dir", str(data_dir), *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def test_config_show_masks_passwords(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPANION_DATABASE_URL", "postgresql+psycopg://app:s3cret@db:5432/c")
    monkeypatch.setenv("COMPANION_REDIS_URL", "redis://:hunter2@cache:6379/0")
    out = run(tmp_path, "config", "show").output
    assert "s3cret" not in out and "hunter2" not in out
    assert 'database_url = "postgresql+psycopg://app:***@db:5432/c"' in out
    assert 'redis_url = "redis://:***@cache:6379/0"' in out


def test_a_schema_behind_is_refused_until_db_migrate(tmp_path: Path, pg_server: Postgres) -> None:
    url = pg_server.empty()
    with pytest.raises(CompanionError, match="run `companion db migrate`"):
        open_store(url)
    first = run(tmp_path, "db", "migrate", url=url)
    assert first.exit_code == 0, first.output
    assert "migrated from revision none to" in first.output
    again = run(tmp_path, "db", "migrate", url=url)
    assert "already at revision" in again.output
    open_store(url).close()  # now it serves


def test_db_copy_moves_every_row_and_checks_counts(tmp_path: Path, pg_server: Postgres) -> None:
    source = open_store(f"sqlite:///{tmp_path / 'data' / 'companion.db'}")
    for n in range(3):
        session = source.create_session(f"user-{n}")
        for i in range(4):
            source.add_message(session.id, "user", f"message {i} of {n}")
    source.close()
    target = pg_server.empty()
    result = run(tmp_path / "data", "db", "copy", "--to", target)
    assert result.exit_code == 0, result.output
    assert "row counts match" in result.output
    assert count_rows(target, "messages") == 12 and count_rows(target, "users") == 3
    store = open_store(target)  # migrated by the copy; new ids follow the copied ones
    try:
        session = store.list_sessions("user-0")[0]
        added = store.add_message(session.id, "user", "after the copy")
        assert added.id == 13
    finally:
        store.close()
    refused = run(tmp_path / "data", "db", "copy", "--to", target)
    assert refused.exit_code == 1 and "already holds rows" in refused.output


def _plain_pg_database() -> str:
    """A new database on the machine's PostgreSQL 15 (no pgvector), or skip when absent."""
    engine = sa.create_engine(f"{SYSTEM_PG}/postgres", isolation_level="AUTOCOMMIT")
    name = f"companion_t_{uuid.uuid4().hex[:10]}"
    try:
        with engine.connect() as conn:
            if conn.execute(
                sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
            ).first():
                pytest.skip("this PostgreSQL has pgvector")
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
    except sa.exc.OperationalError:
        pytest.skip(f"no plain PostgreSQL at {SYSTEM_PG}")
    finally:
        engine.dispose()
    return f"{SYSTEM_PG}/{name}"


def test_a_server_without_pgvector_gets_a_clear_error(tmp_path: Path) -> None:
    url = _plain_pg_database()
    with pytest.raises(CompanionError, match="CREATE EXTENSION vector"):
        open_store(url)
    result = run(tmp_path, "db", "migrate", url=url)
    assert result.exit_code == 1
    assert "CREATE EXTENSION vector" in result.output
    assert count_rows(url, "pg_tables WHERE schemaname = 'public'") == 0  # nothing half-made
