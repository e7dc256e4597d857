"""Storage layer tests on a real SQLite file and a real PostgreSQL (no mocks): migrations,
pragmas, exchanges, threads. The `store` tests are the Store's contract: one body, both backends."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from companion.errors import InputError, NotFound
from companion.storage import Store, alembic_config, metadata, open_store
from companion.storage.schema import in_metadata
from companion.storage.store import history_start


@pytest.fixture()
def db_url(tmp_path: Path) -> str:
    """A SQLite file url under a folder that does not exist yet."""
    return f"sqlite:///{tmp_path / 'data' / 'nested' / 'companion.db'}"


@pytest.fixture()
def sqlite_store(db_url: str) -> Iterator[Store]:
    """A migrated SQLite store, closed after the test."""
    s = open_store(db_url)
    yield s
    s.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, db_url: str) -> Iterator[Store]:
    """A migrated store on each backend, closed after the test."""
    url = db_url if request.param == "sqlite" else request.getfixturevalue("pg_url")
    s = open_store(url)
    yield s
    s.close()


def _head() -> str:
    """The head revision shipped in the package."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def test_open_store_creates_folder_tables_indexes_and_version(db_url: str, tmp_path: Path) -> None:
    s = open_store(db_url)
    try:
        assert (tmp_path / "data" / "nested" / "companion.db").is_file()
        insp = sa.inspect(s.engine)
        assert {"users", "sessions", "messages", "alembic_version"} <= set(insp.get_table_names())
        assert {c["name"] for c in insp.get_columns("messages")} == {
            "id", "session_id", "role", "text", "status", "token_count", "cached", "model",
            "timings", "created_at", "finish_reason", "active", "alt_group",
            "reply_to",
        }
        session_ix = {ix["name"]: ix["column_names"] for ix in insp.get_indexes("sessions")}
        assert session_ix["ix_sessions_user_id_updated_at"] == ["user_id", "updated_at"]
        message_ix = {ix["name"]: ix["column_names"] for ix in insp.get_indexes("messages")}
        assert message_ix["ix_messages_session_id_id"] == ["session_id", "id"]
        assert insp.get_foreign_keys("messages")[0]["referred_table"] == "sessions"
        assert insp.get_foreign_keys("sessions")[0]["referred_table"] == "users"
        with s.engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == _head()
            # The migration and schema.py describe the same tables.
            context = MigrationContext.configure(conn, opts={"include_name": in_metadata})
            diffs = compare_metadata(context, metadata)
        assert diffs == []
        assert s.dialect == "sqlite"
        assert s.url == db_url
    finally:
        s.close()


def test_open_store_leaves_logging_alone(db_url: str) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    open_store(db_url).close()
    assert root.handlers == handlers
    assert root.level == level


def test_downgrade_and_upgrade_again_through_env_url(sqlite_store: Store, db_url: str) -> None:
    sqlite_store.close()
    command.downgrade(alembic_config(db_url), "base")
    engine = sa.create_engine(db_url)
    try:
        assert sa.inspect(engine).get_table_names() == ["alembic_version"]
    finally:
        engine.dispose()
    again = open_store(db_url)
    try:
        assert again.counts() == {"users": 0, "sessions": 0, "messages": 0}
    finally:
        again.close()


def test_sqlite_pragmas(sqlite_store: Store) -> None:
    with sqlite_store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_users_and_sessions(store: Store) -> None:
    user = store.ensure_user("alice")
    assert store.ensure_user("alice") == user
    assert user.created_at.tzinfo is not None and user.created_at.utcoffset() == timedelta(0)

    first = store.create_session("alice", title="first")
    assert len(first.id) == 32 and first.title == "first"
    named = store.create_session("alice", session_id="s-1")
    assert store.create_session("alice", session_id="s-1") == named
    assert store.get_session("s-1") == named
    assert store.get_session("missing") is None

    store.add_message(first.id, "user", "bump first")
    assert [s.id for s in store.list_sessions("alice")] == [first.id, "s-1"]
    assert [s.id for s in store.list_sessions("alice", limit=1)] == [first.id]
    assert store.list_sessions("nobody") == []
    assert store.counts() == {"users": 1, "sessions": 2, "messages": 1}


def test_session_owned_by_another_user(store: Store) -> None:
    store.create_session("alice", session_id="shared")
    with pytest.raises(InputError) as err:
        store.create_session("bob", session_id="shared")
    assert err.value.field == "session_id"
    with pytest.raises(InputError):
        store.create_session("", session_id="x")
    with pytest.raises(InputError):
        store.create_session("alice", session_id="x" * 65)


def test_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.add_message("missing", "user", "hi")
    with pytest.raises(NotFound):
        store.update_message(999, status="complete")
    with pytest.raises(NotFound):
        store.complete_exchange(999, "r", user_tokens=1, reply_tokens=1, model="m",
                                cached=False, timings={})
    with pytest.raises(NotFound):
        store.fail_exchange(999, "failed", None, model=None, timings={})
    assert store.counts()["messages"] == 0


def test_add_and_update_message(store: Store) -> None:
    session = store.create_session("alice")
    msg = store.add_message(session.id, "user", "hello", status="pending")
    assert msg.status == "pending" and msg.timings == {} and msg.cached is False
    assert store.get_session(session.id).updated_at == msg.created_at  # type: ignore[union-attr]
    updated = store.update_message(msg.id, status="complete", token_count=4, cached=True,
                                   model="tiny", timings={"total_s": 1})
    assert (updated.status, updated.token_count, updated.cached, updated.model) == (
        "complete", 4, True, "tiny")
    assert updated.timings == {"total_s": 1.0}
    assert updated.text == "hello" and updated.created_at == msg.created_at
    assert store.update_message(msg.id) == updated
    with pytest.raises(InputError):
        store.add_message(session.id, "robot", "x")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        store.update_message(msg.id, status="done")  # type: ignore[arg-type]


def test_complete_exchange(store: Store) -> None:
    session = store.create_session("alice")
    user_msg = store.add_message(session.id, "user", "hi", status="pending")
    reply = store.complete_exchange(user_msg.id, "hello!", user_tokens=3, reply_tokens=5,
                                    model="tiny", cached=True, timings={"generate_s": 0.25})
    assert (reply.role, reply.status, reply.text, reply.token_count) == (
        "assistant", "complete", "hello!", 5)
    assert (reply.model, reply.cached, reply.timings) == ("tiny", True, {"generate_s": 0.25})
    assert reply.created_at.tzinfo is not None
    first, second = store.list_messages(session.id)
    assert (first.id, first.status, first.token_count) == (user_msg.id, "complete", 3)
    assert second == reply
    assert store.get_session(session.id).updated_at == reply.created_at  # type: ignore[union-attr]


def test_complete_exchange_is_all_or_nothing(store: Store) -> None:
    session = store.create_session("alice")
    user_msg = store.add_message(session.id, "user", "hi", status="pending")
    with store.engine.begin() as conn:  # make the reply's INSERT fail inside the transaction
        if store.dialect == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER no_replies BEFORE INSERT ON messages WHEN NEW.role = 'assistant' "
                "BEGIN SELECT RAISE(ABORT, 'no replies today'); END"
            )
        else:
            conn.exec_driver_sql("ALTER TABLE messages ADD CONSTRAINT no_replies "
                                 "CHECK (role <> 'assistant')")
    with pytest.raises(sa.exc.IntegrityError):
        store.complete_exchange(user_msg.id, "hello", user_tokens=2, reply_tokens=1,
                                model="tiny", cached=False, timings={})
    assert store.list_messages(session.id) == [user_msg]  # still pending, no reply
    with pytest.raises(sa.exc.IntegrityError):
        store.fail_exchange(user_msg.id, "failed", "part", model=None, timings={})
    assert store.list_messages(session.id) == [user_msg]


def test_fail_exchange(store: Store) -> None:
    session = store.create_session("alice")
    first = store.add_message(session.id, "user", "one", status="pending")
    partial = store.fail_exchange(first.id, "interrupted", "half a rep", model="tiny",
                                  timings={"generate_s": 2})
    assert partial is not None
    assert (partial.role, partial.status, partial.text, partial.model) == (
        "assistant", "interrupted", "half a rep", "tiny")
    second = store.add_message(session.id, "user", "two", status="pending")
    assert store.fail_exchange(second.id, "failed", "", model=None, timings={}) is None
    assert store.fail_exchange(second.id, "failed", None, model=None, timings={}) is None
    statuses = [(m.role, m.status) for m in store.list_messages(session.id)]
    assert statuses == [("user", "interrupted"), ("assistant", "interrupted"), ("user", "failed")]
    with pytest.raises(InputError) as err:
        store.fail_exchange(
            second.id, "complete", None, model=None, timings={}  # type: ignore[arg-type]
        )
    assert err.value.field == "status"


def test_recent_messages_order_limit_and_status(store: Store) -> None:
    session = store.create_session("alice")
    other = store.create_session("alice")
    store.add_message(other.id, "user", "elsewhere")
    texts_statuses = [("m0", "complete"), ("m1", "failed"), ("m2", "complete"),
                      ("m3", "pending"), ("m4", "complete"), ("m5", "complete")]
    for text, status in texts_statuses:
        store.add_message(session.id, "user", text, status=status)  # type: ignore[arg-type]
    assert [m.text for m in store.recent_messages(session.id, 3)] == ["m2", "m4", "m5"]
    assert [m.text for m in store.recent_messages(session.id, 10)] == ["m0", "m2", "m4", "m5"]
    both = store.recent_messages(session.id, 3, statuses=("complete", "failed"))
    assert [m.text for m in both] == ["m2", "m4", "m5"]
    assert [m.text for m in store.recent_messages(session.id, 2, ("failed", "pending"))] == [
        "m1", "m3"]
    assert store.recent_messages(session.id, 0) == []
    assert store.recent_messages("missing", 5) == []
    everything = store.list_messages(session.id)
    assert [m.text for m in everything] == [t for t, _ in texts_statuses]
    assert [m.text for m in store.list_messages(session.id, limit=2, offset=3)] == ["m3", "m4"]


def test_history_window_moves_in_steps_so_each_prompt_starts_with_the_last() -> None:
    # 10 messages, moved on 10 at a time: 10..19 of them, the start fixed between moves
    starts = [history_start(n, 10, 10) for n in range(0, 42, 2)]
    assert starts == [0] * 10 + [10] * 5 + [20] * 5 + [30]
    assert [history_start(n, 10, 0) for n in (4, 10, 11, 30)] == [0, 0, 1, 20]  # sliding
    assert history_start(13, 10, 1) == 3


def test_recent_messages_with_a_step(store: Store) -> None:
    session = store.create_session("bob")
    for i in range(13):
        store.add_message(session.id, "user", f"m{i}", status="failed" if i == 5 else "complete")
    # 12 complete: the last 4 moved on 4 at a time -> from the 9th (index 8) of them
    got = [m.text for m in store.recent_messages(session.id, 4, step=4)]
    assert got == ["m9", "m10", "m11", "m12"]
    store.add_message(session.id, "user", "m13")
    got = [m.text for m in store.recent_messages(session.id, 4, step=4)]
    assert got == ["m9", "m10", "m11", "m12", "m13"]  # the window grew at its end only
    assert [m.text for m in store.recent_messages(session.id, 4)] == ["m10", "m11", "m12", "m13"]
    assert store.recent_messages(session.id, 0, step=4) == []


def test_mark_unfinished_interrupted(store: Store) -> None:
    session = store.create_session("alice")
    store.add_message(session.id, "user", "a", status="pending")
    store.add_message(session.id, "user", "b", status="pending")
    store.add_message(session.id, "user", "c")
    assert store.mark_unfinished_interrupted() == 2
    assert [m.status for m in store.list_messages(session.id)] == [
        "interrupted", "interrupted", "complete"]
    assert store.mark_unfinished_interrupted() == 0


def test_only_stale_pending_messages_are_reaped(store: Store) -> None:
    """A shared database: another instance's running turn (younger) is left alone."""
    from companion.reaper import PendingReaper

    session = store.create_session("alice")
    store.add_message(session.id, "user", "a", status="pending")
    assert PendingReaper(store, timeout_s=60).sweep() == 0
    assert PendingReaper(store, timeout_s=-11).sweep() == 1  # older than 0 s + the margin
    assert [m.status for m in store.list_messages(session.id)] == ["interrupted"]


def test_reopen_keeps_data_and_keys(db_url: str) -> None:
    first = open_store(db_url)
    session = first.create_session("alice", title="kept")
    msgs = [first.add_message(session.id, "user", f"m{i}") for i in range(3)]
    first.close()

    second = open_store(db_url)
    try:
        assert second.get_session(session.id) == session.__class__(
            **{**vars(session), "updated_at": msgs[-1].created_at})
        assert second.list_messages(session.id) == msgs
        assert second.list_sessions("alice")[0].created_at.tzinfo == UTC
        new = second.add_message(session.id, "user", "after restart")
        assert new.id > msgs[-1].id
        assert second.counts() == {"users": 1, "sessions": 1, "messages": 4}
    finally:
        second.close()


def test_concurrent_writes_from_eight_threads(store: Store) -> None:
    threads_n, per_thread = 8, 25
    barrier = threading.Barrier(threads_n)
    errors: list[BaseException] = []
    ids: list[int] = []
    ids_lock = threading.Lock()

    def work(n: int) -> None:
        try:
            barrier.wait()
            store.ensure_user("shared-user")
            session = store.create_session(f"user-{n}", session_id=f"session-{n}")
            store.create_session("shared-user", session_id="shared-session")
            for i in range(per_thread):
                msg = store.add_message(session.id, "user", f"{n}-{i}", status="pending")
                reply = store.complete_exchange(msg.id, "ok", user_tokens=1, reply_tokens=1,
                                                model="m", cached=False, timings={})
                store.recent_messages(session.id, 4)
                with ids_lock:
                    ids.extend([msg.id, reply.id])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads_n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert errors == []
    assert len(ids) == len(set(ids)) == threads_n * per_thread * 2
    assert store.counts() == {
        "users": threads_n + 1, "sessions": threads_n + 1, "messages": len(ids)}
    for n in range(threads_n):
        texts = [m.text for m in store.list_messages(f"session-{n}") if m.role == "user"]
        assert texts == [f"{n}-{i}" for i in range(per_thread)]


def test_in_memory_store_works_across_threads() -> None:
    s = open_store("sqlite://")
    try:
        session = s.create_session("alice")
        done = threading.Thread(target=s.add_message, args=(session.id, "user", "from a thread"))
        done.start()
        done.join()
        assert [m.text for m in s.list_messages(session.id)] == ["from a thread"]
    finally:
        s.close()
