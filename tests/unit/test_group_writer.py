"""GroupWriter: batches, commits before answering, isolates a failing item, drains on close.
Real SQLite file through the Store."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from companion.storage import Store, open_store
from companion.storage.group import GroupWriter
from companion.storage.schema import users


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'group.db'}")
    yield s
    s.close()


def _committed(store: Store) -> set[str]:
    """User ids visible to a separate sqlite3 connection."""
    db = store.engine.url.database
    assert db
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM users")}


class Recorder:
    """Inserts one user per item; can hold its first batch until released."""

    def __init__(self, hold: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, conn: Connection, items: Sequence[str]) -> list[str]:
        self.batches.append(list(items))
        self.entered.set()
        self.release.wait(10)
        now = datetime.now(UTC)
        for item in items:
            if item.startswith("bad"):
                raise ValueError(item)
            conn.execute(sa.insert(users).values(id=item, created_at=now))
        return [f"ok:{i}" for i in items]


def test_waiting_items_go_in_one_batch_and_are_committed_before_they_resolve(
    store: Store,
) -> None:
    handler = Recorder(hold=True)
    writer: GroupWriter[str, str] = GroupWriter(store.writing, handler)
    first = writer.submit("a")
    assert handler.entered.wait(10)
    rest = [writer.submit(u) for u in ("b", "c", "d", "e")]
    assert not first.done() and "a" not in _committed(store)
    handler.release.set()
    assert [f.result(10) for f in (first, *rest)] == ["ok:a", "ok:b", "ok:c", "ok:d", "ok:e"]
    assert handler.batches == [["a"], ["b", "c", "d", "e"]]
    assert _committed(store) == {"a", "b", "c", "d", "e"}
    assert (writer.batches, writer.items) == (2, 5)
    writer.close()


def test_a_failing_item_fails_alone(store: Store) -> None:
    handler = Recorder(hold=True)
    writer: GroupWriter[str, str] = GroupWriter(store.writing, handler)
    blocker = writer.submit("x")
    assert handler.entered.wait(10)
    futures = [writer.submit(u) for u in ("g1", "bad1", "g2")]
    handler.release.set()
    assert blocker.result(10) == "ok:x"
    assert futures[0].result(10) == "ok:g1" and futures[2].result(10) == "ok:g2"
    with pytest.raises(ValueError, match="bad1"):
        futures[1].result(10)
    assert _committed(store) == {"x", "g1", "g2"}  # the batch's partial work was rolled back
    writer.close()


def test_close_commits_what_is_queued_then_refuses(store: Store) -> None:
    handler = Recorder(hold=True)
    writer: GroupWriter[str, str] = GroupWriter(store.writing, handler)
    futures = [writer.submit(u) for u in ("p", "q")]
    assert handler.entered.wait(10)
    handler.release.set()
    writer.close()
    assert all(f.done() for f in futures) and _committed(store) == {"p", "q"}
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit("r")


def test_an_item_given_up_before_it_runs_is_dropped_and_the_writer_goes_on(
    store: Store,
) -> None:
    handler = Recorder(hold=True)
    writer: GroupWriter[str, str] = GroupWriter(store.writing, handler)
    first = writer.submit("m")
    assert handler.entered.wait(10)
    gone, kept = writer.submit("gone"), writer.submit("kept")
    assert gone.cancel() and not first.cancel()  # running: no longer cancellable
    handler.release.set()
    assert first.result(10) == "ok:m" and kept.result(10) == "ok:kept"
    assert _committed(store) == {"m", "kept"}
    assert writer.submit("later").result(10) == "ok:later"
    writer.close()
