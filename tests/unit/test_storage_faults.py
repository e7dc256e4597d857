"""Database faults in words, on real SQLite files: a read-only database refuses writes with a
503 StorageError and keeps its data; an SQL mistake stays a bug (not mapped to a fault)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from companion.errors import StorageError, StorageFull
from companion.storage import Store, create_store_engine, open_store
from companion.storage.faults import storage_error


def test_a_read_only_database_refuses_writes_with_503_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "companion.db"
    store = open_store(f"sqlite:///{path}")
    store.create_session("ann", "s1", "first")
    store.add_message("s1", "user", "hello")
    store.close()
    read_only = Store(create_store_engine(f"sqlite:///file:{path}?mode=ro&uri=true"))
    try:
        with pytest.raises(StorageError) as refused:
            read_only.add_message("s1", "user", "lost?")
        assert not isinstance(refused.value, StorageFull)
        assert refused.value.status_code == 503 and refused.value.code == "storage_unavailable"
        assert "read-only" in refused.value.message and "not saved" in refused.value.message
        assert [m.text for m in read_only.list_messages("s1")] == ["hello"]
    finally:
        read_only.close()


def test_sqlite_result_codes_map_to_faults_and_sql_mistakes_do_not(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db")
    with pytest.raises(sqlite3.OperationalError) as mistake:
        conn.execute("SELEC 1")
    assert storage_error(mistake.value) is None
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(sa.exc.OperationalError) as wrapped, engine.connect() as c:
        c.execute(sa.text("SELECT * FROM no_such_table"))
    assert storage_error(wrapped.value) is None
    engine.dispose()
    full = storage_error(sqlite3.OperationalError("database or disk is full"))
    assert isinstance(full, StorageFull) and full.status_code == 507
    io = storage_error(sqlite3.OperationalError("disk I/O error"))
    assert io is not None and io.status_code == 503 and "disk failed" in io.message
    locked = storage_error(sqlite3.OperationalError("database is locked"))
    assert locked is not None and "locked" in locked.message and "retry" in locked.message
