"""The Store: users, sessions and messages in SQL; one writer at a time, concurrent reads."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast, get_args

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool

from companion.config import Settings
from companion.domain import Message, MessageStatus, Role, Session, User
from companion.errors import InputError, NotFound
from companion.storage import postgres
from companion.storage.faults import storage_faults
from companion.storage.schema import ID_LENGTH, messages, sessions, users

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
ROLES: tuple[str, ...] = get_args(Role)
STATUSES: tuple[str, ...] = get_args(MessageStatus)
FailureStatus = Literal["failed", "interrupted"]
FAILURE_STATUSES: tuple[str, ...] = get_args(FailureStatus)


def _now() -> datetime:
    """The current time in UTC; the one clock every row uses."""
    return datetime.now(UTC)


def _is_memory_sqlite(url: sa.URL) -> bool:
    """True for sqlite:// and sqlite:///:memory:, which live in one connection only."""
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def _check_id(value: object, field: str) -> str:
    """Reject ids that are not short non-empty strings, before they reach the database."""
    if not isinstance(value, str) or not value.strip() or len(value) > ID_LENGTH:
        message = f"{field} must be a non-empty string of at most {ID_LENGTH} characters"
        raise InputError(message, field=field)
    return value


def _check_choice(value: object, allowed: tuple[str, ...], field: str) -> str:
    """Reject a role or status outside the allowed set."""
    if value not in allowed:
        raise InputError(f"{field} must be one of {', '.join(allowed)}; got {value!r}", field=field)
    return cast(str, value)


def _clean_timings(timings: Mapping[str, float] | None) -> dict[str, float]:
    """Copy timings into a JSON-safe dict of floats."""
    try:
        return {str(k): float(v) for k, v in (timings or {}).items()}
    except (TypeError, ValueError) as exc:
        raise InputError("timings must map names to numbers", field="timings") from exc


def _user(row: RowMapping) -> User:
    """Turn a users row into a User."""
    return User(id=row["id"], created_at=row["created_at"])


def _session(row: RowMapping) -> Session:
    """Turn a sessions row into a Session."""
    return Session(id=row["id"], user_id=row["user_id"], title=row["title"],
                   created_at=row["created_at"], updated_at=row["updated_at"])


def _message(row: Mapping[str, Any]) -> Message:
    """Turn a messages row (or the values just inserted) into a Message."""
    return Message(
        id=int(row["id"]), session_id=row["session_id"], role=cast(Role, row["role"]),
        text=row["text"], status=cast(MessageStatus, row["status"]),
        token_count=row["token_count"], cached=bool(row["cached"]), model=row["model"],
        timings=dict(row["timings"] or {}), created_at=row["created_at"],
        finish_reason=row.get("finish_reason"), active=bool(row.get("active", True)),
        alt_group=row.get("alt_group"), reply_to=row.get("reply_to"),
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Set WAL, foreign keys, a busy timeout and NORMAL sync on every new SQLite connection."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def create_store_engine(url: str, pool_size: int = 10, max_overflow: int = 10) -> Engine:
    """Build the engine for url; for SQLite, make the file's folder and add the pragmas; for
    PostgreSQL, a pool of pool_size (+ max_overflow) psycopg 3 connections."""
    parsed = postgres.normalise_url(sa.make_url(url))
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        kwargs = postgres.engine_options(pool_size, max_overflow)
    elif parsed.get_backend_name() == "sqlite":
        if _is_memory_sqlite(parsed):
            kwargs = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
        elif parsed.database and not parsed.database.startswith("file:"):
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed, **kwargs)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def alembic_config(url: str | None = None) -> Config:
    """An alembic Config built in code, pointing at the migrations shipped in this package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_to_head(engine: Engine) -> None:
    """Run `alembic upgrade head` on one connection of engine, committed at the end (on
    PostgreSQL under an advisory lock, so instances started together migrate once)."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        postgres.lock_for_migration(connection)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def migrate_database(url: str) -> tuple[str | None, str | None]:
    """`companion db migrate`: upgrade to head; return the revisions before and after."""
    engine = create_store_engine(url, pool_size=1, max_overflow=0)
    try:
        with storage_faults():
            with engine.connect() as conn:
                before = postgres.current_revision(conn)
            upgrade_to_head(engine)
            with engine.connect() as conn:
                return before, postgres.current_revision(conn)
    finally:
        engine.dispose()


def open_store(url: str, *, pool_size: int = 10, max_overflow: int = 10,
               migrate: bool | None = None) -> Store:
    """Open the database at url and wrap it in a Store.

    `migrate`: upgrade the schema first; None means yes for SQLite (the embedded default
    creates and upgrades its own file) and no for PostgreSQL, where a schema behind is refused
    with one line naming `companion db migrate` (run once per upgrade, not by every instance).
    """
    engine = create_store_engine(url, pool_size, max_overflow)
    try:
        with storage_faults():
            if migrate or (migrate is None and engine.dialect.name != "postgresql"):
                upgrade_to_head(engine)
            if engine.dialect.name == "postgresql":
                postgres.check_ready(engine, str(MIGRATIONS_DIR))
    except BaseException:
        engine.dispose()
        raise
    return Store(engine)


def store_for(settings: Settings, migrate: bool | None = None) -> Store:
    """The Store of the configured database_url, with its pool settings."""
    return open_store(settings.db_url, pool_size=settings.db_pool_size,
                      max_overflow=settings.db_max_overflow, migrate=migrate)


def history_start(count: int, limit: int, step: int) -> int:
    """Where the prompt's history starts among a session's `count` messages: the last `limit`,
    the start moved on `step` messages at a time (step 0 or 1: the last `limit` exactly).
    Between two moves the window only grows at its end, so each turn's prompt begins with the
    whole prompt and reply of the turn before (a model server's KV cache holds them)."""
    if count <= limit:
        return 0
    if step <= 1:
        return count - limit
    return (count - limit) // step * step


class Store:
    """Sync data access over one engine: writes serialised by a lock, reads run concurrently."""

    def __init__(self, engine: Engine) -> None:
        """Wrap a migrated engine; open_store is the usual way to get one."""
        self._engine = engine
        self._write_lock = threading.Lock()
        # An in-memory SQLite database is a single shared connection: serialise reads too.
        self._read_guard: AbstractContextManager[Any] = (
            self._write_lock if _is_memory_sqlite(engine.url) else nullcontext()
        )

    @property
    def url(self) -> str:
        """The database url, password hidden (safe to log or show)."""
        return self._engine.url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        """The SQL dialect name, e.g. 'sqlite' or 'postgresql'."""
        return self._engine.dialect.name

    @property
    def engine(self) -> Engine:
        """The underlying engine, for health checks and tests."""
        return self._engine

    def close(self) -> None:
        """Release every pooled connection."""
        self._engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction at a time (committed on exit, rolled back on error).

        A full disk, a read-only file, an I/O error or a lock past busy_timeout comes out as
        StorageError (StorageFull for a full disk); the transaction is rolled back whole.
        """
        with storage_faults(), self._write_lock, self._engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A read-only connection; reads do not wait for the writer (WAL)."""
        with storage_faults(), self._read_guard, self._engine.connect() as conn:
            yield conn

    def writing(self) -> AbstractContextManager[Connection]:
        """One write transaction under the store's writer lock (for memory and persona tables)."""
        return self._write()

    def reading(self) -> AbstractContextManager[Connection]:
        """A read connection (for memory and persona tables)."""
        return self._read()

    # users and sessions

    def _insert_if_absent(self, insert: sa.Insert) -> bool:
        """Run one INSERT in its own transaction; False if a key constraint got in the way."""
        try:
            with self._write() as conn:
                conn.execute(insert)
        except IntegrityError:
            return False
        return True

    def ensure_user(self, user_id: str) -> User:
        """Return the user, inserting it first if absent; safe to call concurrently."""
        _check_id(user_id, "user_id")
        query = sa.select(users).where(users.c.id == user_id)
        with self._read() as conn:
            row = conn.execute(query).mappings().first()
        if row is not None:
            return _user(row)
        created_at = _now()
        if self._insert_if_absent(sa.insert(users).values(id=user_id, created_at=created_at)):
            return User(id=user_id, created_at=created_at)
        with self._read() as conn:  # another thread or process inserted it in between
            return _user(conn.execute(query).mappings().one())

    def create_session(self, user_id: str, session_id: str | None = None,
                       title: str | None = None) -> Session:
        """Create a session for user_id (or return the existing one with that id and owner)."""
        _check_id(user_id, "user_id")
        sid = uuid.uuid4().hex if session_id is None else _check_id(session_id, "session_id")
        self.ensure_user(user_id)
        existing = self.get_session(sid)
        if existing is None:
            now = _now()
            created = Session(id=sid, user_id=user_id, title=title, created_at=now,
                              updated_at=now)
            if self._insert_if_absent(sa.insert(sessions).values(**vars(created))):
                return created
            existing = self.get_session(sid)  # another writer took the id in between
            if existing is None:
                raise InputError(f"could not create session {sid!r}", field="session_id")
        if existing.user_id != user_id:
            raise InputError("session_id belongs to another user", field="session_id")
        return existing

    @staticmethod
    def _session_row(conn: Connection, session_id: str) -> Session | None:
        """Read one session on an open connection."""
        row = conn.execute(sa.select(sessions).where(sessions.c.id == session_id)).mappings()
        first = row.first()
        return None if first is None else _session(first)

    def get_session(self, session_id: str) -> Session | None:
        """The session with that id, or None."""
        with self._read() as conn:
            return self._session_row(conn, session_id)

    def list_sessions(self, user_id: str, limit: int = 50) -> list[Session]:
        """A user's sessions, most recently updated first."""
        query = (sa.select(sessions).where(sessions.c.user_id == user_id)
                 .order_by(sessions.c.updated_at.desc(), sessions.c.created_at.desc())
                 .limit(max(0, limit)))
        with self._read() as conn:
            return [_session(row) for row in conn.execute(query).mappings()]

    # messages

    @staticmethod
    def _insert_message(conn: Connection, session_id: str, role: str, text: str, *,
                        status: str, token_count: int | None, cached: bool, model: str | None,
                        timings: Mapping[str, float] | None,
                        finish_reason: str | None = None,
                        reply_to: int | None = None) -> Message:
        """Insert one message and bump its session's updated_at; NotFound if no such session."""
        _check_choice(role, ROLES, "role")
        _check_choice(status, STATUSES, "status")
        if not isinstance(text, str):
            raise InputError("text must be a string", field="text")
        now = _now()
        bumped = conn.execute(sa.update(sessions).where(sessions.c.id == session_id)
                              .values(updated_at=now))
        if bumped.rowcount == 0:
            raise NotFound(f"no session {session_id!r}", field="session_id")
        values: dict[str, Any] = {
            "session_id": session_id, "role": role, "text": text, "status": status,
            "token_count": token_count, "cached": bool(cached), "model": model,
            "timings": _clean_timings(timings), "created_at": now,
            "finish_reason": finish_reason, "reply_to": reply_to,
        }
        result = conn.execute(sa.insert(messages).values(**values))
        return _message({**values, "id": result.inserted_primary_key[0]})

    @staticmethod
    def _message_row(conn: Connection, message_id: int) -> Message:
        """Read one message on an open connection; NotFound when absent."""
        row = conn.execute(sa.select(messages).where(messages.c.id == message_id)).mappings()
        first = row.first()
        if first is None:
            raise NotFound(f"no message {message_id!r}", field="message_id")
        return _message(first)

    def add_message(self, session_id: str, role: Role, text: str, *,
                    status: MessageStatus = "complete", token_count: int | None = None,
                    cached: bool = False, model: str | None = None,
                    timings: Mapping[str, float] | None = None) -> Message:
        """Append a message to a session (NotFound if the session does not exist)."""
        with self._write() as conn:
            return self._insert_message(conn, session_id, role, text, status=status,
                                        token_count=token_count, cached=cached, model=model,
                                        timings=timings)

    def update_message(self, message_id: int, *, status: MessageStatus | None = None,
                       text: str | None = None, token_count: int | None = None,
                       timings: Mapping[str, float] | None = None, model: str | None = None,
                       cached: bool | None = None) -> Message:
        """Change the given fields of one message (None leaves a field as is)."""
        values: dict[str, Any] = {}
        if status is not None:
            values["status"] = _check_choice(status, STATUSES, "status")
        if text is not None:
            values["text"] = text
        if token_count is not None:
            values["token_count"] = token_count
        if timings is not None:
            values["timings"] = _clean_timings(timings)
        if model is not None:
            values["model"] = model
        if cached is not None:
            values["cached"] = bool(cached)
        with self._write() as conn:
            if values:
                conn.execute(sa.update(messages).where(messages.c.id == message_id)
                             .values(**values))
            return self._message_row(conn, message_id)

    def complete_exchange(self, user_message_id: int, reply_text: str, *,
                          user_tokens: int | None, reply_tokens: int | None, model: str,
                          cached: bool, timings: Mapping[str, float],
                          finish_reason: str | None = None) -> Message:
        """In one transaction, mark the user message complete and store the reply; return it."""
        with self._write() as conn:
            user_msg = self._message_row(conn, user_message_id)
            values: dict[str, Any] = {"status": "complete"}
            if user_tokens is not None:
                values["token_count"] = user_tokens
            conn.execute(sa.update(messages).where(messages.c.id == user_message_id)
                         .values(**values))
            return self._insert_message(conn, user_msg.session_id, "assistant", reply_text,
                                        status="complete", token_count=reply_tokens,
                                        cached=cached, model=model, timings=timings,
                                        finish_reason=finish_reason,
                                        reply_to=user_message_id)

    def fail_exchange(self, user_message_id: int, status: FailureStatus,
                      partial_reply: str | None, *, model: str | None,
                      timings: Mapping[str, float]) -> Message | None:
        """In one transaction, mark the user message failed/interrupted; keep a partial reply."""
        _check_choice(status, FAILURE_STATUSES, "status")
        with self._write() as conn:
            user_msg = self._message_row(conn, user_message_id)
            conn.execute(sa.update(messages).where(messages.c.id == user_message_id)
                         .values(status=status))
            if not partial_reply:
                return None
            return self._insert_message(conn, user_msg.session_id, "assistant", partial_reply,
                                        status=status, token_count=None, cached=False,
                                        model=model, timings=timings,
                                        finish_reason="cancelled" if status == "interrupted"
                                        else "error", reply_to=user_message_id)

    def recent_messages(self, session_id: str, limit: int,
                        statuses: tuple[str, ...] = ("complete",), step: int = 0) -> list[Message]:
        """The last `limit` messages with those statuses, oldest first (for building a prompt);
        with `step` > 1 the window's start moves `step` messages at a time (history_start), so
        it holds `limit` to `limit + step - 1` of them."""
        if limit <= 0 or not statuses:
            return []
        where = (messages.c.session_id == session_id, messages.c.status.in_(statuses),
                 messages.c.active == sa.true())
        with self._read() as conn:
            if step > 1:
                count = conn.execute(sa.select(sa.func.count()).where(*where)).scalar_one()
                start = history_start(int(count), limit, step)
                query = sa.select(messages).where(*where).order_by(messages.c.id).offset(start)
                return [_message(row) for row in conn.execute(query).mappings()]
            query = sa.select(messages).where(*where).order_by(messages.c.id.desc()).limit(limit)
            rows = [_message(row) for row in conn.execute(query).mappings()]
        rows.reverse()
        return rows

    def list_messages(self, session_id: str, limit: int | None = None,
                      offset: int = 0) -> list[Message]:
        """A session's messages of every status, oldest first, optionally one page of them."""
        query = (sa.select(messages).where(messages.c.session_id == session_id)
                 .order_by(messages.c.id.asc()).offset(max(0, offset)))
        if limit is not None:
            query = query.limit(max(0, limit))
        with self._read() as conn:
            return [_message(row) for row in conn.execute(query).mappings()]

    # maintenance

    def mark_unfinished_interrupted(self, older_than: datetime | None = None) -> int:
        """Turn every pending message into interrupted (start-up after a crash); return how many.
        With `older_than`, only those created before it (a shared database: the other
        instances' turns still running are younger)."""
        query = sa.update(messages).where(messages.c.status == "pending")
        if older_than is not None:
            query = query.where(messages.c.created_at < older_than)
        with self._write() as conn:
            return int(conn.execute(query.values(status="interrupted")).rowcount)

    def counts(self) -> dict[str, int]:
        """Row counts of users, sessions and messages (for health and stats)."""
        with self._read() as conn:
            return {
                table.name: int(conn.execute(sa.select(sa.func.count()).select_from(table))
                                .scalar_one())
                for table in (users, sessions, messages)
            }
