"""`companion db copy`: every table of one database into another (SQLite -> PostgreSQL), checked.

The target is migrated to head first and must be empty; all rows go in one transaction, so a
failed copy leaves nothing behind. Row counts are compared table by table at the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from companion.errors import InputError, StorageError
from companion.storage.faults import storage_faults
from companion.storage.schema import metadata
from companion.storage.store import create_store_engine, open_store, upgrade_to_head

BATCH = 1000


@dataclass(frozen=True)
class CopyReport:
    """Rows copied per table, and how long it took."""

    source: str
    target: str
    counts: dict[str, int]
    seconds: float


def _counts(conn: Connection) -> dict[str, int]:
    """Rows per table of the schema."""
    return {
        t.name: int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
        for t in metadata.sorted_tables
    }


def _reset_sequences(conn: Connection) -> None:
    """PostgreSQL: move each serial id past the copied rows (new rows must not collide)."""
    if conn.dialect.name != "postgresql":
        return
    for table in metadata.sorted_tables:
        for column in table.primary_key.columns:
            if column.autoincrement is True or (
                column.autoincrement == "auto" and isinstance(column.type, sa.Integer)
            ):
                conn.execute(
                    sa.text(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column.name}'), "
                        f"coalesce(max({column.name}), 1), max({column.name}) IS NOT NULL) "
                        f"FROM {table.name}"
                    )
                )


def copy_database(source_url: str, target_url: str) -> CopyReport:
    """Copy every row from source_url into the empty database at target_url."""
    if sa.make_url(source_url) == sa.make_url(target_url):
        raise InputError("the source and the target are the same database", field="to")
    started = time.perf_counter()
    source = open_store(source_url)
    target = create_store_engine(target_url, pool_size=1, max_overflow=0)
    try:
        with storage_faults():
            upgrade_to_head(target)
            with source.reading() as src, target.begin() as dst:
                busy = {name: n for name, n in _counts(dst).items() if n}
                if busy:
                    raise InputError(
                        f"the target already holds rows ({busy}): copy into an empty database",
                        field="to",
                    )
                for table in metadata.sorted_tables:
                    _copy_table(src, dst, table)
                _reset_sequences(dst)
                want, got = _counts(src), _counts(dst)
                if want != got:
                    raise StorageError(
                        f"row counts differ after the copy (source {want}, "
                        f"target {got}); nothing was committed"
                    )
    finally:
        source.close()
        target.dispose()
    return CopyReport(
        source.url,
        target.url.render_as_string(hide_password=True),
        got,
        time.perf_counter() - started,
    )


def _copy_table(src: Connection, dst: Connection, table: sa.Table) -> None:
    """Stream one table's rows across in batches."""
    result = src.execute(sa.select(table)).mappings()
    while rows := result.fetchmany(BATCH):
        dst.execute(sa.insert(table), [dict(r) for r in rows])
