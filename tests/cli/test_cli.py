"""The `companion` command through its installed entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from companion.llm.registry import tiny_package_path


def run(
    args: list[str], tmp_path: Path, stdin: str | None = None, timeout: int = 240
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COMPANION_DATA_DIR": str(tmp_path / "data")}
    env.pop("COMPANION_MODEL_SIZE", None)
    exe = str(Path(sys.executable).with_name("companion"))
    return subprocess.run(
        [exe, *args], env=env, input=stdin, capture_output=True, text=True, timeout=timeout
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_ask_streams_a_reply_and_json_has_the_result(tmp_path: Path) -> None:
    proc = run(["--max-tokens", "16", "ask", "Hello there!"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    assert "session" in proc.stderr and "tok/s" in proc.stderr
    proc = run(["--max-tokens", "8", "ask", "--json", "--user", "zed", "Hi"], tmp_path)
    body = json.loads(proc.stdout)
    assert body["user_id"] == "zed" and body["usage"]["completion_tokens"] <= 8


def test_interactive_chat_keeps_the_session_and_quits(tmp_path: Path) -> None:
    proc = run(
        ["--max-tokens", "8", "chat"], tmp_path, stdin="Hello\n/stats\nHow are you?\n/new\n/quit\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("companion> ") == 2
    stats = next(ln for ln in proc.stdout.splitlines() if "Requests / errors" in ln)
    assert stats.split()[-3:] == ["1", "/", "0"]  # /stats: a short table, not a JSON dump
    assert "Avg response" in proc.stdout and " ms" in proc.stdout
    assert "(new session)" in proc.stderr
    sessions = {
        line.split("session ")[1].split(" ")[0]
        for line in proc.stderr.splitlines()
        if "· session" in line
    }
    assert len(sessions) == 1


def test_models_list_info_and_select(tmp_path: Path) -> None:
    listing = run(["models", "list", "--json"], tmp_path)
    rows = {r["size"]: r for r in json.loads(listing.stdout)}
    assert rows["tiny"]["installed"] and not rows["large"]["installed"]
    assert rows["large"]["source"] == "absent"
    info = run(["models", "info"], tmp_path)
    assert info.returncode == 0 and "tier:" in info.stdout and "offload:" in info.stdout
    assert "tiny" in info.stdout
    chosen = run(["models", "select", "tiny", "--no-reload"], tmp_path)
    assert chosen.returncode == 0 and "model_size = tiny" in chosen.stdout
    shown = run(["config", "show", "--json"], tmp_path)
    assert json.loads(shown.stdout)["model_size"] == "tiny"


def test_model_errors_are_one_line(tmp_path: Path) -> None:
    assert "choose one of: tiny, base, small, medium, large" in one_line_error(
        run(["models", "select", "huge"], tmp_path)
    )
    assert "large" in one_line_error(run(["--model-size", "large", "ask", "hi"], tmp_path))
    assert "model_size" in one_line_error(run(["--model-size", "huge", "ask", "hi"], tmp_path))
    corrupt = tmp_path / "broken.gguf"
    corrupt.write_bytes(b"GGUF" + os.urandom(4096))
    assert "corrupt" in one_line_error(run(["--model-path", str(corrupt), "ask", "hi"], tmp_path))
    assert "does not exist" in one_line_error(
        run(["--model-path", str(tmp_path / "none.gguf"), "serve"], tmp_path)
    )
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert "not a GGUF" in one_line_error(
        run(["models", "add", "small", "--path", str(text)], tmp_path)
    )
    assert one_line_error(run(["stats"], tmp_path)).startswith("Error: no companion server")


def test_models_add_registers_a_local_file(tmp_path: Path) -> None:
    tiny = tiny_package_path()
    assert tiny is not None
    added = run(["models", "add", "base", "--path", str(tiny)], tmp_path)
    assert added.returncode == 0, added.stderr
    rows = {r["size"]: r for r in json.loads(run(["models", "list", "--json"], tmp_path).stdout)}
    assert rows["base"]["installed"] and rows["base"]["source"] == "registered"


@pytest.mark.slow
def test_bench_models_writes_the_figures(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = run(
        ["--max-tokens", "32", "bench", "models", "--size", "1", "--json", str(out)],
        tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["suite"] == "models" and data["machine"]["cpu_cores_logical"] >= 1
    figures = data["figures"]
    for key in ("tiny_load_s", "tiny_tokens_per_s", "tiny_rss_mb", "raw_tokens_per_s"):
        assert figures[key] > 0
    assert "tiny_tokens_per_s" in proc.stdout
    assert "model tiny: 1 prompts" in proc.stderr  # the progress display (rich, on stderr)


def test_a_scale_option_given_to_another_bench_is_one_line_error(tmp_path: Path) -> None:
    proc = run(["bench", "load", "--server-cache-mb", "0"], tmp_path)
    assert proc.returncode == 2
    assert "--server-cache-mb is for bench scale only" in proc.stderr
    proc = run(["bench", "scale", "--server-cache-mb", "-1"], tmp_path)
    assert proc.returncode == 2 and "--server-cache-mb" in proc.stderr
