"""`companion chat` in a real terminal (a pty, driven by pexpect): Ctrl-C stops the reply and
keeps it; a second Ctrl-C, at the prompt, quits."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import pexpect


def test_ctrl_c_stops_the_reply_then_quits(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "COMPANION_DATA_DIR": str(data), "COMPANION_MODEL_SIZE": "tiny",
           "COMPANION_MAX_TOKENS": "600", "TERM": "dumb"}  # fmt: skip
    exe = str(Path(sys.executable).with_name("companion"))
    child = pexpect.spawn(exe, ["chat", "--user", "tess"], env=env, encoding="utf-8",
                          timeout=240, dimensions=(40, 120))  # fmt: skip
    try:
        child.expect_exact("you> ")
        child.sendline("Write a very long story about a dragon and a knight, with many chapters.")
        child.expect_exact("companion> ")
        child.expect(r"\w{3,}")  # the reply has started streaming
        child.sendintr()  # Ctrl-C: stop the reply, stay in the chat
        child.expect_exact("[stopped: the partial reply is kept; Ctrl-C again to quit]")
        child.expect_exact("you> ")
        child.sendline("/help")
        child.expect_exact("Ctrl-C stops a reply")
        child.expect_exact("you> ")
        child.sendintr()  # at the prompt: quit
        child.expect_exact("(bye)")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
    with sqlite3.connect(data / "companion.db") as db:
        rows = db.execute("SELECT role, status, finish_reason, text FROM messages ORDER BY id")
        stored = rows.fetchall()
    assert [(r[0], r[1]) for r in stored] == [("user", "interrupted"), ("assistant", "interrupted")]
    assert stored[1][2] == "cancelled" and stored[1][3].strip()
