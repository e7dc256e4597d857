"""Cached and uncached replies per minute over HTTP: `companion serve` (uvicorn) on a free
loopback port, driven by a small keep-alive HTTP/1.1 client (so the client costs little CPU)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from companion.config import Settings

QUESTIONS = [
    "What is a good hobby to start this winter?",
    "How can I sleep better?",
    "Tell me a fun fact about octopuses.",
    "What should I cook for dinner tonight?",
    "How do I stay motivated when studying?",
    "Recommend a book for a long flight.",
    "What is a healthy breakfast?",
    "How do I make new friends in a new city?",
    "What are some easy houseplants?",
    "How can I be more productive at work?",
]
CONNECTIONS = 32  # concurrent keep-alive connections for the cached run
CACHED_REQUESTS = 6000
UNCACHED_REQUESTS = 12
_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _body(i: int, cache: bool) -> bytes:
    """A chat request body: a new visitor each time (no session, no memories)."""
    return json.dumps(
        {
            "message": QUESTIONS[i % len(QUESTIONS)],
            "user_id": f"web{i}",
            "max_tokens": 32,
            "temperature": 0,
            "cache": cache,
        }
    ).encode()


async def _connection(port: int, bodies: list[bytes]) -> list[bool]:
    """POST each body on one keep-alive connection; True per reply that came from the cache."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    try:
        for body in bodies:
            writer.write(
                b"POST /api/v1/chat HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
            head = await reader.readuntil(b"\r\n\r\n")
            match = _LENGTH.search(head)
            data = await reader.readexactly(int(match.group(1)) if match else 0)
            answers.append(head.startswith(b"HTTP/1.1 200") and b'"cached":true' in data)
    finally:
        writer.close()
    return answers


async def _load(port: int, bodies: list[bytes], connections: int) -> tuple[float, list[bool]]:
    """Send all bodies over `connections` connections; (seconds, cached flags)."""
    shares = [bodies[i::connections] for i in range(connections)]
    started = time.perf_counter()
    results = await asyncio.gather(*(_connection(port, s) for s in shares if s))
    return time.perf_counter() - started, [a for r in results for a in r]


def _start_server(settings: Settings, data_dir: Path, port: int) -> subprocess.Popen[str]:
    """`companion serve` in its own process (its own CPU and GIL)."""
    env = {
        **os.environ,
        "COMPANION_DATA_DIR": str(data_dir),
        "COMPANION_LOG_LEVEL": "WARNING",
        "COMPANION_MODEL_SIZE": settings.model_size,
    }
    env.pop("COMPANION_DATABASE_URL", None)  # the fresh SQLite file in data_dir
    if settings.model_path:
        env["COMPANION_MODEL_PATH"] = str(settings.model_path)
    if settings.models_dir or settings.model_path is None:
        env["COMPANION_MODELS_DIR"] = str(settings.resolved_models_dir)
    command = [sys.executable, "-m", "companion", "serve", "--port", str(port)]
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
        if proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"companion serve did not start: {proc.communicate()[1][-2000:]}")


def _server_counts(port: int) -> dict[str, int]:
    """The server's own counters: exact cache hits and stored messages."""
    stats = httpx.get(f"http://127.0.0.1:{port}/api/v1/stats", timeout=30).json()
    return {"exact_hits": int(stats["cache"]["exact_hits"]), "requests": int(stats["requests"])}


def _stored_cached_replies(db: Path) -> int:
    """Cached replies in the server's database after it stopped (each one answered was
    committed before its answer was sent)."""
    with sqlite3.connect(db) as conn:
        return int(conn.execute(
            "SELECT COUNT(*) FROM messages WHERE role = 'assistant' AND cached"
        ).fetchone()[0])


def http_figures(settings: Settings) -> dict[str, Any]:
    """cached_replies_per_min and uncached_replies_per_min against a real server.

    Only replies that say `"cached": true` count, and the server's own exact-hit counter must
    have grown by as many during the cached run (checked, and reported as
    `cached_hits_confirmed`)."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = _start_server(settings, Path(tmp), port)
        try:
            uncached_s, _ = asyncio.run(
                _load(port, [_body(i, False) for i in range(UNCACHED_REQUESTS)], 4)
            )
            asyncio.run(_load(port, [_body(i, True) for i in range(len(QUESTIONS))], 1))  # fill
            before = _server_counts(port)
            cached_s, flags = asyncio.run(
                _load(port, [_body(i, True) for i in range(CACHED_REQUESTS)], CONNECTIONS)
            )
            after = _server_counts(port)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        stored = _stored_cached_replies(Path(tmp) / "companion.db")
    server_hits = after["exact_hits"] - before["exact_hits"]
    if stored != sum(flags):
        raise RuntimeError(f"{stored} cached replies stored; {sum(flags)} were answered")
    if server_hits != sum(flags) or after["requests"] - before["requests"] != len(flags):
        raise RuntimeError(
            f"the server counted {server_hits} exact hits in "
            f"{after['requests'] - before['requests']} requests; the client saw {sum(flags)} "
            f"cached replies in {len(flags)}"
        )
    return {
        "cached_replies_per_min": round(sum(flags) / cached_s * 60),
        "cached_reply_share": round(sum(flags) / len(flags), 4),
        "cached_hits_confirmed": server_hits,
        "uncached_replies_per_min": round(UNCACHED_REQUESTS / uncached_s * 60, 1),
    }
