"""`companion db backup | check` on real SQLite files, with a writer going at the same time."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from companion.cli import cli
from companion.storage import Store, open_store


def companion(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """Run the CLI in-process (no model is loaded by these commands)."""
    result = CliRunner(env=env).invoke(cli, ["--data-dir", str(data_dir), "db", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ")
    return lines[0]


def rows(path: Path, query: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(data_dir: Path) -> Iterator[Store]:
    st = open_store(f"sqlite:///{data_dir / 'companion.db'}")
    yield st
    st.close()


def fill(store: Store, n: int, text: str = "hello ") -> str:
    session = store.create_session("alice")
    for i in range(n):
        store.add_message(session.id, "user", f"{text}{i} " * 20)
    return session.id


def test_backup_while_a_writer_commits_is_consistent_and_complete(
        store: Store, data_dir: Path, tmp_path: Path) -> None:
    sid = fill(store, 3000)
    committed: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            committed.append(store.add_message(sid, "assistant", "a reply " * 50).id)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(committed) < 20:  # the writer is committing before the backup starts
            time.sleep(0.001)
        before = list(committed)
        target = tmp_path / "restored" / "companion.db"
        target.parent.mkdir()
        result = companion(data_dir, "backup", str(target))
        during = len(committed) - len(before)
        seen = len(committed)
        while len(committed) < seen + 20:  # ... and after it ends
            time.sleep(0.001)
    finally:
        stop.set()
        thread.join()

    assert result.exit_code == 0, result.output
    line = result.output.strip()
    assert "\n" not in line
    assert line.startswith(f"backed up {data_dir / 'companion.db'} to {target}: ")
    assert "pages in" in line and line.endswith("integrity_check ok")
    assert during > 0  # the server-like writer kept committing while the copy was taken
    assert rows(target, "PRAGMA integrity_check") == [("ok",)]
    copied = {row[0] for row in rows(target, "SELECT id FROM messages")}
    assert set(before) <= copied  # every row committed before the backup started
    assert committed[-1] not in copied  # and nothing committed after it finished
    assert len(copied) >= 3000 + len(before)
    # one self-contained file, no temporary or journal files beside it
    assert sorted(p.name for p in target.parent.iterdir()) == ["companion.db"]
    assert rows(target, "PRAGMA journal_mode") == [("delete",)]
    # the copy is a working companion database: `db check` on it passes
    checked = companion(target.parent, "check")
    assert checked.exit_code == 0, checked.output
    assert f"messages               {len(copied)}" in checked.output


def test_backup_refuses_to_overwrite_without_force(store: Store, data_dir: Path,
                                                   tmp_path: Path) -> None:
    sid = fill(store, 5)
    target = tmp_path / "backup.db"
    assert companion(data_dir, "backup", str(target)).exit_code == 0
    first = target.read_bytes()
    store.add_message(sid, "user", "written after the first backup")

    error = one_line_error(companion(data_dir, "backup", str(target)))
    assert error == f"Error: {target} already exists (use --force to replace it)"
    assert target.read_bytes() == first
    assert rows(target, "SELECT count(*) FROM messages") == [(5,)]

    assert companion(data_dir, "backup", "--force", str(target)).exit_code == 0
    assert rows(target, "SELECT count(*) FROM messages") == [(6,)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup.db", "data"]


def test_backup_errors_are_one_line(store: Store, data_dir: Path, tmp_path: Path) -> None:
    fill(store, 2)
    missing = tmp_path / "no-such-dir" / "b.db"
    assert one_line_error(companion(data_dir, "backup", str(missing))) == \
        f"Error: the backup folder {missing.parent} does not exist"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    assert one_line_error(companion(data_dir, "backup", str(a_file / "b.db"))) == \
        f"Error: {a_file} is not a folder, so b.db cannot go in it"
    assert "is the live database" in one_line_error(
        companion(data_dir, "backup", "--force", str(data_dir / "companion.db")))
    assert one_line_error(companion(tmp_path / "empty", "backup", str(tmp_path / "b.db"))) == \
        f"Error: no database at {tmp_path / 'empty' / 'companion.db'} (nothing to back up or check)"
    assert not (tmp_path / "empty").exists()  # a missing database is not created
    postgres = {"COMPANION_DATABASE_URL": "postgresql://u:p@localhost/companion"}
    for command in (["backup", str(tmp_path / "b.db")], ["check"]):
        assert "back PostgreSQL up with pg_dump" in one_line_error(
            companion(data_dir, *command, env=postgres))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "notes.txt"]


def test_check_reports_revision_counts_and_passes(store: Store, data_dir: Path) -> None:
    sid = fill(store, 4)
    pending = store.add_message(sid, "user", "cut off", status="pending")
    store.fail_exchange(pending.id, "interrupted", "half a rep", model="tiny", timings={})
    result = companion(data_dir, "check")
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"database               {data_dir / 'companion.db'}" in out
    assert "(head)" in out.splitlines()[1]
    for expected in ("users                  1", "sessions               1",
                     "messages               6", "interrupted messages   2", "check  "):
        assert expected in out
    assert out.rstrip().endswith("ok")


def test_check_fails_on_a_corrupted_copy_and_backup_refuses_it(
        store: Store, data_dir: Path, tmp_path: Path) -> None:
    fill(store, 2000)
    store.close()
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = bad_dir / "companion.db"
    shutil.copy(data_dir / "companion.db", bad)
    size = bad.stat().st_size
    with open(bad, "r+b") as fh:
        fh.seek(size // 2 // 4096 * 4096)
        fh.write(b"\xa5" * 4096)  # one page in the middle of the messages table

    result = companion(bad_dir, "check")
    assert result.exit_code == 1
    assert "malformed" in result.stderr
    assert result.stderr.rstrip().endswith(f"Error: {bad} failed the check: "
                                           "1 problem(s) listed above")

    target = tmp_path / "copy.db"
    error = one_line_error(companion(bad_dir, "backup", str(target)))
    assert "the backup copy failed its check" in error and "nothing was written" in error
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "data"]


def test_check_lists_broken_foreign_keys(store: Store, data_dir: Path) -> None:
    fill(store, 1)
    store.close()
    conn = sqlite3.connect(data_dir / "companion.db")
    conn.execute("INSERT INTO messages (session_id, role, text, status, cached, timings, "
                 "created_at) VALUES ('ghost', 'user', 'orphan', 'complete', 0, '{}', "
                 "'2026-01-01 00:00:00')")
    conn.commit()
    conn.close()
    result = companion(data_dir, "check")
    assert result.exit_code == 1
    assert "foreign_key_check: messages row 2 points to a missing sessions row" in result.stderr


def test_the_installed_command_runs_db_check(store: Store, data_dir: Path) -> None:
    fill(store, 1)
    exe = str(Path(sys.executable).with_name("companion"))
    proc = subprocess.run([exe, "--data-dir", str(data_dir), "db", "check"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COMPANION_DATA_DIR": str(data_dir)})
    assert proc.returncode == 0, proc.stderr
    assert "messages               1" in proc.stdout
