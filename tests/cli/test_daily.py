"""The CLI a person uses every day, through click's runner (no terminal multiplexer): --url and
COMPANION_URL, readable figures, one-line errors, sessions, and the small fixes."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from rich.console import Console

from companion.bench import progress, shared_data
from companion.cli import cli
from companion.storage import open_store
from tests.server.conftest import serving


def invoke(args: list[str], data: Path, **env: str) -> Result:
    """Run `companion ARGS` in-process with its own data dir."""
    runner = CliRunner()
    return runner.invoke(cli, args, env={"COMPANION_DATA_DIR": str(data), **env})


def one_line(result: Result) -> str:
    """The single line of a failed command (no traceback)."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> str:
    with serving(tmp_path_factory.mktemp("live") / "data") as url:
        yield url


def test_stats_reads_as_a_table_from_url_or_env(live: str, tmp_path: Path) -> None:
    shown = invoke(["stats", "--url", live], tmp_path)
    assert shown.exit_code == 0, shown.output
    assert "Avg response" in shown.output and " ms" in shown.output
    assert "Generation speed" in shown.output and "tokens/s" in shown.output
    assert len(shown.output.splitlines()) < 20  # not a 100-line JSON dump
    by_env = invoke(["stats", "--json"], tmp_path, COMPANION_URL=live)
    assert by_env.exit_code == 0 and '"requests"' in by_env.output
    cache = invoke(["cache", "stats", "--url", live], tmp_path)
    assert cache.exit_code == 0 and "source" in cache.output and "server" in cache.output


def test_a_server_that_is_not_there_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}"
    assert "no companion server at" in one_line(invoke(["stats", "--url", url], tmp_path))
    assert "no companion server" in one_line(invoke(["cache", "stats", "--url", url], tmp_path))
    selected = invoke(["models", "select", "tiny", "--url", url], tmp_path)
    assert selected.exit_code == 1 and "no companion server" in selected.output
    assert "http://" in one_line(invoke(["stats", "--url", "localhost:1"], tmp_path))


def test_serve_on_a_busy_port_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = invoke(["serve", "--port", str(port)], tmp_path)
    line = one_line(result)
    assert f"cannot listen on 127.0.0.1:{port}" in line and "--port" in line
    assert "listening" not in result.output


def test_small_fixes_persona_memory_forget_keys(tmp_path: Path) -> None:
    assert "cannot be deleted" in one_line(invoke(["persona", "delete", "default"], tmp_path))
    added = invoke(["memory", "add", "--user", "al", "I live in Porto"], tmp_path)
    assert added.exit_code == 0, added.output
    history_before = invoke(["memory", "history", "--user", "al", "--json"], tmp_path).output
    noop = invoke(["memory", "edit", "1", "--user", "al"], tmp_path)
    assert noop.exit_code == 2 and "nothing to change" in noop.output
    assert invoke(["memory", "history", "--user", "al", "--json"], tmp_path).output == (
        history_before
    )
    gone = invoke(["memory", "forget-user", "--user", "al", "--yes"], tmp_path)
    assert gone.exit_code == 0
    assert gone.output.strip().startswith("deleted user al and everything stored about them:")
    assert "{" not in gone.output and "sessions" in gone.output
    made = invoke(["keys", "create", "al"], tmp_path)
    assert made.exit_code == 0 and "auth = true" in made.output
    quiet = invoke(["keys", "create", "bo"], tmp_path, COMPANION_AUTH="1")
    assert quiet.exit_code == 0 and "auth = true" not in quiet.output


def test_sessions_list_show_rename_search_delete(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'companion.db'}")
    session = store.create_session("al", "s1", "First chat")
    store.add_message(session.id, "user", "I keep bees in Lisbon")
    store.add_message(session.id, "assistant", "Bees are wonderful!")
    store.close()
    listed = invoke(["sessions", "list", "--user", "al"], tmp_path)
    assert listed.exit_code == 0 and "First chat" in listed.output and "s1" in listed.output
    assert "you> I keep bees in Lisbon" in invoke(["sessions", "show", "s1"], tmp_path).output
    renamed = invoke(["sessions", "rename", "s1", "Bee notes"], tmp_path)
    assert renamed.exit_code == 0 and "Bee notes" in renamed.output
    found = invoke(["sessions", "search", "lisb", "--user", "al"], tmp_path)
    assert found.exit_code == 0 and "Lisbon" in found.output and "Bee notes" in found.output
    assert "nothing matches" in invoke(["sessions", "search", "zebra", "--user", "al"],
                                       tmp_path).output  # fmt: skip
    assert "letter or a digit" in one_line(invoke(["sessions", "search", "?!"], tmp_path))
    deleted = invoke(["sessions", "delete", "s1", "--yes"], tmp_path)
    assert deleted.exit_code == 0 and "2 messages" in deleted.output
    assert "no session" in one_line(invoke(["sessions", "show", "s1"], tmp_path))


def test_progress_phases_show_and_data_paths_do_not_need_the_repo_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = io.StringIO()
    display = progress.make_progress(Console(file=out, width=100, force_terminal=False))
    progress.phase("nothing is shown without a display")  # a no-op, not an error
    with display:
        progress._live.append((display, display.add_task("bench demo: starting", total=None)))
        progress.phase("demo: 3 prompts", 3)
        for _ in range(3):
            progress.advance()
        progress._live.pop()
    text = out.getvalue()
    assert "demo: 3 prompts" in text and "3/3" in text
    monkeypatch.chdir(tmp_path)  # not the repository root
    monkeypatch.delenv("COMPANION_SHARED_DATA", raising=False)
    found = shared_data("persona_chat/Synthetic-Persona-Chat_test.csv")
    if not (Path(__file__).resolve().parents[3] / "shared" / "data").exists():
        pytest.skip("no shared data beside this checkout")
    assert found is not None and found.is_file()


def test_the_readme_lists_every_setting() -> None:
    from companion.config import Settings

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"`{name}`" not in readme]
    assert missing == []
