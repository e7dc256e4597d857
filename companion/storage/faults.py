"""Database failures in words: the one place that turns them into StorageError / StorageFull.

SQLite reports a full disk (or a database at its max_page_count), a read-only file, a disk I/O
error and a lock held past busy_timeout as OperationalError. Each write runs in one transaction,
so a refused write is rolled back whole: the data stored before it stays intact. Other
OperationalErrors (a missing table, an SQL mistake) are bugs, not faults: they stay as they are.
PostgreSQL unreachable (psycopg's OperationalError) is DatabaseUnavailable: 503 with Retry-After;
the pool pings connections before use, so serving resumes by itself once the server is back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import OperationalError

from companion.errors import DatabaseUnavailable, StorageError, StorageFull

_INTACT = "the data stored before is intact"

# SQLite primary result codes (the low byte of the extended code)
_BUSY, _LOCKED, _READONLY, _IOERR, _FULL, _CANTOPEN = 5, 6, 8, 10, 13, 14

_BY_TEXT = (  # for drivers or messages without an error code
    ("disk is full", _FULL),
    ("readonly database", _READONLY),
    ("read-only", _READONLY),
    ("disk i/o error", _IOERR),
    ("database is locked", _BUSY),
    ("database table is locked", _LOCKED),
    ("unable to open database file", _CANTOPEN),
)


def _code(exc: BaseException) -> tuple[int | None, str]:
    """The SQLite primary result code (None if unknown) and the driver's message."""
    orig = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's exception
    text = str(orig)
    code = getattr(orig, "sqlite_errorcode", None) if isinstance(orig, sqlite3.Error) else None
    if isinstance(code, int):
        return code & 0xFF, text
    lowered = text.lower()
    return next((c for needle, c in _BY_TEXT if needle in lowered), None), text


def _server_down(exc: BaseException) -> DatabaseUnavailable | None:
    """PostgreSQL unreachable, restarting or out of connections (psycopg's OperationalError)."""
    orig = getattr(exc, "orig", None) or exc
    if type(orig).__module__.split(".")[0] != "psycopg":
        return None
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return DatabaseUnavailable(
        f"the database server is unavailable ({first}); nothing was changed: retry shortly"
    )


def storage_error(exc: BaseException) -> StorageError | None:
    """The StorageError for a database fault, or None when `exc` is not one."""
    down = _server_down(exc)
    if down is not None:
        return down
    code, text = _code(exc)
    if code == _FULL:
        return StorageFull(
            f"the database is full ({text}): this change was not saved; {_INTACT}. "
            "Free disk space (or raise the database size limit), then retry"
        )
    if code == _READONLY:
        return StorageError(
            f"the database is read-only ({text}): this change was not saved; {_INTACT}. "
            "Check the permissions and the mount of the data directory"
        )
    if code == _IOERR:
        return StorageError(
            f"the disk failed while using the database ({text}): this change was not saved; "
            f"{_INTACT}. Check the disk, then retry"
        )
    if code in (_BUSY, _LOCKED):
        return StorageError(
            f"the database stayed locked by another connection or process ({text}); "
            "nothing was changed: retry shortly"
        )
    if code == _CANTOPEN:
        return StorageError(
            f"the database file cannot be opened ({text}): check that the data directory "
            "exists, is writable and the disk is mounted"
        )
    return None


@contextmanager
def storage_faults() -> Iterator[None]:
    """Raise a database fault met inside the block as its StorageError (others unchanged)."""
    try:
        yield
    except OperationalError as exc:
        error = storage_error(exc)
        if error is None:
            raise
        raise error from exc
