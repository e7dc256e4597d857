"""Online backup and integrity check of the SQLite database (`companion db backup | check`).

Both work on a raw sqlite3 connection to the database file, so they run while a server is
writing to it: the backup reads one snapshot (a read transaction held across the page steps,
which WAL lets writers go on past) and never creates a missing database.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from companion.errors import InputError, NotFound

PAGES_PER_STEP = 256
COUNTED_TABLES = ("users", "sessions", "messages")


@dataclass(frozen=True)
class BackupResult:
    """What `companion db backup` wrote."""

    source: Path
    path: Path
    size_bytes: int
    pages: int
    seconds: float
    integrity: str


@dataclass
class CheckResult:
    """What `companion db check` found; ok when problems is empty."""

    path: Path
    revision: str | None = None
    head: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def sqlite_path(url: str) -> Path:
    """The file behind a SQLite url; a one-line error for other databases or in-memory ones."""
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        raise InputError("the database is PostgreSQL: companion db works on SQLite files only; "
                         "back PostgreSQL up with pg_dump", field="database_url")
    if backend != "sqlite":
        raise InputError(f"the database is {backend}, not SQLite: use that database's own tools",
                         field="database_url")
    database = parsed.database or ""
    if database in ("", ":memory:"):
        raise InputError("the database is in memory: there is no file to back up or check",
                         field="database_url")
    if database.startswith("file:"):
        database = database[len("file:"):].split("?", 1)[0]
    return Path(database).expanduser().resolve()


def _connect_existing(path: Path) -> sqlite3.Connection:
    """Open an existing database file (never create one), in autocommit mode."""
    if not path.exists():
        raise NotFound(f"no database at {path} (nothing to back up or check)", field="database_url")
    if not path.is_file():
        raise InputError(f"the database path {path} is not a file", field="database_url")
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=rw", uri=True, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=5000")
    except sqlite3.Error as exc:
        raise InputError(f"cannot open the database {path}: {exc}", field="database_url") from exc
    return conn


def _check_target(source: Path, target: Path, force: bool) -> Path:
    """The resolved backup path, or a one-line error saying why it cannot be written."""
    target = target.expanduser()
    parent = target.parent.resolve()
    if not parent.exists():
        raise InputError(f"the backup folder {parent} does not exist", field="path")
    if not parent.is_dir():
        raise InputError(f"{parent} is not a folder, so {target.name} cannot go in it",
                         field="path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"the backup folder {parent} is not writable", field="path")
    target = parent / target.name
    if target.is_dir():
        raise InputError(f"{target} is a folder; give the backup a file name", field="path")
    live = {source, Path(f"{source}-wal"), Path(f"{source}-shm"), Path(f"{source}-journal")}
    if target in live:
        raise InputError(f"{target} is the live database; back it up somewhere else", field="path")
    if target.exists() and not force:
        raise InputError(f"{target} already exists (use --force to replace it)", field="path")
    return target


def integrity(conn: sqlite3.Connection) -> list[str]:
    """PRAGMA integrity_check's complaints (empty when 'ok'), or the error it raised."""
    try:
        rows = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as exc:
        return [f"integrity_check failed: {exc}"]
    return [] if rows == ["ok"] else [f"integrity_check: {row}" for row in rows]


def foreign_key_problems(conn: sqlite3.Connection) -> list[str]:
    """PRAGMA foreign_key_check's rows as 'table rowid N -> parent' lines."""
    try:
        rows = conn.execute("PRAGMA foreign_key_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return [f"foreign_key_check failed: {exc}"]
    return [f"foreign_key_check: {table} row {rowid} points to a missing {parent} row"
            for table, rowid, parent, _fkid in rows]


def _fsync_dir(folder: Path) -> None:
    """Make a rename in folder durable (best effort where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _temp_file(folder: Path, name: str) -> Iterator[Path]:
    """A fresh empty file in folder, removed on the way out unless it was renamed away."""
    try:
        fd, raw = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    except OSError as exc:
        raise InputError(f"cannot write in the backup folder {folder}: {exc.strerror}",
                         field="path") from exc
    os.close(fd)
    tmp = Path(raw)
    try:
        yield tmp
    finally:
        for leftover in (tmp, Path(f"{tmp}-journal"), Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)


def backup_sqlite(url: str, target: Path, *, force: bool = False,
                  pages_per_step: int = PAGES_PER_STEP) -> BackupResult:
    """Copy the live SQLite database at url to target: consistent, verified, atomic.

    The copy is one snapshot: the source holds a read transaction from before the first page
    to after the last, so rows committed before the call are all in it and concurrent writers
    (the server) neither block nor restart the copy. The pages go to a temporary file beside
    target, which is switched to a single-file journal, checked with integrity_check, fsynced
    and renamed into place; on any failure the temporary file is removed.
    """
    source = sqlite_path(url)
    src = _connect_existing(source)
    try:
        target = _check_target(source, target, force)
        started = time.perf_counter()
        with _temp_file(target.parent, target.name) as tmp:
            dst = sqlite3.connect(tmp, isolation_level=None)
            try:
                src.execute("BEGIN")
                src.execute("SELECT count(*) FROM sqlite_master").fetchone()  # pin the snapshot
                src.backup(dst, pages=pages_per_step)
                src.execute("COMMIT")
                dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
                pages = int(dst.execute("PRAGMA page_count").fetchone()[0])
                problems = integrity(dst) + foreign_key_problems(dst)
            except sqlite3.Error as exc:
                raise InputError(f"the backup failed: {exc}", field="path") from exc
            finally:
                dst.close()
            if problems:
                raise InputError(f"the backup copy failed its check ({problems[0]}); "
                                 "nothing was written", field="path")
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            try:
                if force:
                    os.replace(tmp, target)
                else:  # link fails if the target appeared meanwhile: never overwrite by accident
                    os.link(tmp, target)
            except FileExistsError as exc:
                raise InputError(f"{target} already exists (use --force to replace it)",
                                 field="path") from exc
            except OSError as exc:
                raise InputError(f"cannot write {target}: {exc.strerror}", field="path") from exc
            _fsync_dir(target.parent)
        seconds = time.perf_counter() - started
    finally:
        src.close()
    return BackupResult(source=source, path=target, size_bytes=target.stat().st_size,
                        pages=pages, seconds=seconds, integrity="ok")


def _head_revision() -> str | None:
    """The newest alembic revision shipped with this version of companion."""
    from alembic.script import ScriptDirectory

    from companion.storage.store import alembic_config

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def check_sqlite(url: str) -> CheckResult:
    """integrity_check and foreign_key_check, plus the schema revision and row counts."""
    path = sqlite_path(url)
    conn = _connect_existing(path)
    result = CheckResult(path=path, head=_head_revision())
    try:
        result.problems = integrity(conn)
        if result.problems and result.problems[0].startswith("integrity_check failed"):
            return result  # not readable as a database at all: nothing more to ask
        result.problems += foreign_key_problems(conn)
        try:
            tables = {row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "alembic_version" in tables:
                row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
                result.revision = None if row is None else str(row[0])
            for table in COUNTED_TABLES:
                if table in tables:
                    result.counts[table] = int(
                        conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            if "messages" in tables:
                for status in ("pending", "interrupted"):  # pending: a turn running, or a
                    # server that stopped mid-turn (its next start marks them interrupted)
                    result.counts[f"{status} messages"] = int(conn.execute(
                        "SELECT count(*) FROM messages WHERE status = ?", (status,)
                    ).fetchone()[0])
        except sqlite3.DatabaseError as exc:
            result.problems.append(f"reading the tables failed: {exc}")
        if result.revision is None and not result.problems:
            result.problems.append("no alembic_version table: not a companion database")
    finally:
        conn.close()
    return result
