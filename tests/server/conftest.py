"""Server fixtures: a real `companion serve` process on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

# Greedy, no repeat penalty: the tiny model loops on this until max_tokens, a reply that runs
# far longer than any deadline or grace period the tests set.
ENDLESS = {"message": "la " * 100, "max_tokens": 1500, "temperature": 0.0,
           "repeat_penalty": 1.0, "seed": 1}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def companion_bin() -> str:
    return str(Path(sys.executable).with_name("companion"))


@contextmanager
def serving(data_dir: Path, **env_extra: str) -> Iterator[str]:
    """A real `companion serve` on a free port (tiny model), its log in a file beside data_dir;
    stopped with SIGTERM and checked for a clean shutdown."""
    port = free_port()
    env = {**os.environ, "COMPANION_DATA_DIR": str(data_dir), "COMPANION_MODEL_SIZE": "tiny",
           **env_extra}  # fmt: skip
    log_path = data_dir.with_name(data_dir.name + "-server.log")
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [companion_bin(), "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            proc.kill()
            proc.wait()
            pytest.fail(f"server did not start: {log_path.read_text()}")
        yield url
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    out = log_path.read_text()
    # uvicorn shuts down cleanly, then re-raises the signal it caught
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert "Application shutdown complete" in out


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with serving(tmp_path / "data") as url:
        yield url


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for a module whose tests use separate users (faster on a busy machine)."""
    data = tmp_path_factory.mktemp("server") / "data"
    with serving(data, COMPANION_REQUEST_TIMEOUT_S="900") as url:  # minutes on a busy machine
        yield url
