"""Concurrent streaming chat load over HTTP, and the servers it is measured against.

One client shape for every server: N requests sent together, each timed from its send to its
first token and between tokens. companion's own API (`/api/v1/chat`, SSE `token`/`done`
events) and OpenAI-compatible peers (`/v1/chat/completions` with `stream: true`) are read by
two small parsers. Servers are started as child processes on free loopback ports.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from companion.stats import percentile

START_TIMEOUT_S = 180.0


@dataclass
class Stream:
    """One request as its client saw it."""

    started: float
    arrivals: list[float] = field(default_factory=list)  # when each token (piece) arrived
    tokens: int = 0
    ended: float = 0.0

    @property
    def ttft_s(self) -> float:
        return (self.arrivals[0] if self.arrivals else self.ended) - self.started

    def gaps_ms(self, start: float = float("-inf"), end: float = float("inf")) -> list[float]:
        """Inter-token gaps (ms), those that end inside [start, end] when given."""
        return [
            (b - a) * 1000
            for a, b in zip(self.arrivals, self.arrivals[1:], strict=False)
            if start <= b <= end
        ]


def load_figures(suffix: str, streams: list[Stream], wall_s: float) -> dict[str, float]:
    """Aggregate tokens/s, time to first token p50/p95 (s) and inter-token gap p95 (ms)."""
    ttft = [s.ttft_s for s in streams]
    gaps = [g for s in streams for g in s.gaps_ms()]
    tokens = sum(s.tokens for s in streams)
    return {
        f"aggregate_tokens_per_s{suffix}": round(tokens / wall_s, 2) if wall_s > 0 else 0.0,
        f"ttft_p50_s{suffix}": round(percentile(ttft, 50), 3),
        f"ttft_p95_s{suffix}": round(percentile(ttft, 95), 3),
        f"itl_p95_ms{suffix}": round(percentile(gaps, 95), 1),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(
    command: list[str], ready_path: str, port: int, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Run a server until the block ends; yields its base URL once `ready_path` answers 200.

    The child sees no COMPANION_* variable but those in `env`; its output goes to a file
    (a full pipe would stall a chatty server).
    """
    url = f"http://127.0.0.1:{port}"
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("COMPANION_")}
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            command,
            env={**inherited, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            wait_ready(proc, url + ready_path, file_tail(log))
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_ready(
    proc: subprocess.Popen[Any],
    url: str,
    log_tail: Callable[[], str],
    timeout_s: float = START_TIMEOUT_S,
) -> None:
    """Wait until `url` answers 200; a child that exits or stays unready raises with the end of
    its log (`log_tail()`)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}: {log_tail()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready in {timeout_s:.0f} s: {log_tail()[-2000:]}")


def file_tail(log: IO[str]) -> Callable[[], str]:
    """What a log file opened for writing and reading holds, for wait_ready."""

    def tail() -> str:
        log.seek(0)
        return log.read()

    return tail


def companion_command(port: int) -> list[str]:
    return [sys.executable, "-m", "companion", "serve", "--port", str(port)]


def lcp_server_command(model: Path, port: int, threads: int, n_ctx: int) -> list[str]:
    """llama-cpp-python's server; interrupt_requests off, else a new request cuts off the last."""
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
            "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(threads),
            "--n_threads_batch", str(threads), "--interrupt_requests", "False"]  # fmt: skip


LLAMA_CPP_PYTHON = "0.3.36"  # the llama.cpp scripts/build-llama-server.sh builds


def llama_server_path() -> Path | None:
    """llama.cpp's `llama-server`: $COMPANION_LLAMA_SERVER, else the one
    scripts/build-llama-server.sh cached (~/.cache/companion/llama-server-VERSION/), else one
    on PATH; None when there is none."""
    explicit = os.environ.get("COMPANION_LLAMA_SERVER")
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get("COMPANION_CACHE", Path.home() / ".cache" / "companion"))
    built = cache / f"llama-server-{LLAMA_CPP_PYTHON}" / "llama-server"
    if built.is_file() and os.access(built, os.X_OK):
        return built
    found = shutil.which("llama-server")
    return Path(found) if found else None


def llama_server_command(
    model: Path, port: int, threads: int, slots: int, n_ctx: int
) -> list[str] | None:
    """llama.cpp's own server (llama_server_path()), else None."""
    binary = llama_server_path()
    if binary is None:
        return None
    return [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
            "-t", str(threads), "-tb", str(threads), "-np", str(slots), "-c", str(n_ctx),
            "--kv-unified", "--no-webui"]  # fmt: skip


async def run_load(
    url: str, bodies: list[dict[str, Any]], companion_api: bool
) -> tuple[list[Stream], float]:
    """Send every body at once; the streams and the wall time until the last one ended."""
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(600.0)) as client:
        started = time.perf_counter()
        read = _companion_stream if companion_api else _openai_stream
        streams = await asyncio.gather(*(read(client, body) for body in bodies))
    return list(streams), max(s.ended for s in streams) - started


async def _companion_stream(client: httpx.AsyncClient, body: dict[str, Any]) -> Stream:
    """POST /api/v1/chat with stream: token events, then `done` with the usage."""
    stream = Stream(time.perf_counter())
    async with client.stream("POST", "/api/v1/chat", json={**body, "stream": True}) as resp:
        resp.raise_for_status()
        event = ""
        async for line in resp.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "token":
                stream.arrivals.append(time.perf_counter())
            elif line.startswith("data:") and event == "done":
                stream.tokens = json.loads(line[5:])["usage"]["completion_tokens"]
    stream.ended = time.perf_counter()
    return stream


async def _openai_stream(client: httpx.AsyncClient, body: dict[str, Any]) -> Stream:
    """POST /v1/chat/completions with stream: one chunk per token, then [DONE]."""
    stream = Stream(time.perf_counter())
    async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            choices = json.loads(line[5:]).get("choices") or [{}]
            if choices[0].get("delta", {}).get("content"):
                stream.arrivals.append(time.perf_counter())
                stream.tokens += 1
    stream.ended = time.perf_counter()
    return stream
