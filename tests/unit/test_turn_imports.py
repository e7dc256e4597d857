"""The turn's modules form no import circle: chat.py uses cached_turn.py, never the reverse
(not even a function-local import); both share companion/turn.py."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import companion.cached_turn
import companion.turn


def _imported(path: str) -> set[str]:
    tree = ast.parse(Path(path).read_text())
    found = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    return found | {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}


def test_cached_turn_and_turn_never_import_the_chat_service() -> None:
    for module in (companion.cached_turn, companion.turn):
        assert module.__file__ is not None
        imported = _imported(module.__file__)
        assert not {"companion.chat", "companion.chat_actions"} & imported, module.__name__


def test_loading_the_short_way_does_not_load_the_chat_service() -> None:
    code = (
        "import sys, companion.cached_turn, companion.turn; "
        "print(sorted(m for m in sys.modules if m in ('companion.chat', 'companion.chat_actions')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
