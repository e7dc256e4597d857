"""bench load: many simulated users chatting with a real `companion serve` at once.

The server runs as a child process on a loopback port with a fresh data directory and the
CLI's effective settings (no API keys: loopback no-auth mode). Each simulated user has its own
user id and talks through Synthetic-Persona-Chat conversations, one session per conversation,
sending the conversation's "User 1" lines one after another with a short think time. Turns
rotate over the four ways in: `/api/v1/chat` plain and streamed (SSE), `/v1/chat/completions`
plain and streamed. A 429 is counted and the turn is retried after its Retry-After.

The run is bounded in time (`duration_s`; then in-flight replies may finish for up to the
server's request_timeout_s plus DRAIN_EXTRA_S) and in count (`max_requests` HTTP requests).
Afterwards the server is stopped with SIGTERM and its SQLite database is read: every exchange
the server acknowledged (a full reply was delivered) must be there, the user message and the
reply each with the same text and status `complete`; each one missing counts in
load_lost_messages.
"""

from __future__ import annotations

import asyncio
import csv
import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from companion.bench import shared_data
from companion.bench.http_load import companion_command, file_tail, free_port, wait_ready
from companion.bench.load_engine import decode_probe, engine_figures, engine_goals
from companion.bench.progress import phase
from companion.config import Settings
from companion.errors import ConfigError
from companion.server.security import is_loopback
from companion.stats import percentile

PERSONA_CHAT = "persona_chat/Synthetic-Persona-Chat_test.csv"
KINDS = ("api", "api_sse", "openai", "openai_sse")
DRAIN_EXTRA_S = 30.0  # in-flight replies may finish (or time out) after the duration
STATS_EVERY_S = 2.0
STOP_TIMEOUT_S = 60.0
# Settings the server is not given from the CLI's settings (the bench sets them itself).
NOT_PASSED = {"preset", "data_dir", "database_url", "host", "port", "auth", "log_level",
              "models_dir"}  # fmt: skip


@dataclass
class LoadOptions:
    users: int = 64
    duration_s: float = 180.0
    max_requests: int | None = None
    max_tokens: int = 48
    think_s: float = 1.0
    host: str = "127.0.0.1"
    port: int | None = None
    drain_s: float = 330.0
    probe_s: float = 20.0  # the decode probe before the load (0: none)


@dataclass
class Exchange:
    """One turn the server acknowledged: what was sent and the full reply received."""

    user_id: str
    session_id: str
    kind: str
    text: str
    reply: str
    message_id: int | None  # the stored reply's id, where the response says it
    latency_ms: float
    ttft_ms: float | None
    gap_ms: float | None = None  # a streamed reply's mean gap between its text pieces
    turn: int = 0  # the line's number in its conversation (1 = the session's first)
    prompt_tokens: int | None = None  # the prompt's tokens, and those the engine reused from
    reused_tokens: int | None = None  # its KV cache (companion's API says; None: not known)


@dataclass
class Tally:
    """Everything the simulated users saw."""

    deadline: float
    max_requests: int | None
    sent: int = 0
    rejected_429: int = 0
    errors_5xx: int = 0
    errors_4xx: int = 0
    errors_other: int = 0  # connection errors, timeouts, malformed replies
    stream_errors: int = 0  # an error event inside a 200 stream
    exchanges: list[Exchange] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    no_retry_after: Counter[str] = field(default_factory=Counter)  # 429/503 without Retry-After
    error_samples: list[str] = field(default_factory=list)

    def may_send(self) -> bool:
        if time.monotonic() >= self.deadline:
            return False
        return self.max_requests is None or self.sent < self.max_requests

    def error(self, kind: str, what: str) -> None:
        if len(self.error_samples) < 5:
            self.error_samples.append(f"{kind}: {what}"[:300])


def conversations(limit: int) -> list[list[str]]:
    """Up to `limit` conversations' "User 1" lines, in order (lines with a "[name]" slot are
    left out)."""
    path = shared_data(PERSONA_CHAT)
    if path is None:
        raise ConfigError(
            f"bench load needs {PERSONA_CHAT} under shared/data beside the checkout, "
            "../shared/data or $COMPANION_SHARED_DATA"
        )
    found: list[list[str]] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            lines = []
            for turn in row.get("Best Generated Conversation", "").splitlines():
                who, _, text = turn.partition(": ")
                if who.strip() == "User 1" and text.strip() and "[" not in text:
                    lines.append(text.strip())
            if len(lines) >= 2:
                found.append(lines)
            if len(found) >= limit:
                break
    return found


def server_env(settings: Settings, data_dir: Path, host: str) -> dict[str, str]:
    """COMPANION_* variables: the CLI's effective settings, a fresh SQLite file, no keys."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump(mode="json").items():
        if name in NOT_PASSED or value is None:
            continue
        if isinstance(value, bool):
            text = str(value).lower()
        elif isinstance(value, (list, dict)):
            text = json.dumps(value)
        else:
            text = str(value)
        env[f"COMPANION_{name.upper()}"] = text
    env.update({
        "COMPANION_DATA_DIR": str(data_dir),
        "COMPANION_DATABASE_URL": f"sqlite:///{data_dir / 'companion.db'}",
        "COMPANION_MODELS_DIR": str(settings.resolved_models_dir),
        "COMPANION_HOST": host,
        "COMPANION_AUTH": "false",
        "COMPANION_LOG_LEVEL": "WARNING",
    })  # fmt: skip
    return env


@dataclass
class ServerRun:
    url: str
    proc: subprocess.Popen[str]
    exit_code: int | None = None
    killed: bool = False
    log_tail: str = ""


@contextmanager
def companion_server(env: dict[str, str], host: str, port: int) -> Iterator[ServerRun]:
    """`companion serve` until the block ends, then SIGTERM (SIGKILL only if it hangs)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("COMPANION_")}
    command = [*companion_command(port), "--host", host]
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            command, env={**inherited, **env}, stdout=log, stderr=subprocess.STDOUT, text=True
        )
        run = ServerRun(f"http://{_url_host(host)}:{port}", proc)
        try:
            wait_ready(proc, run.url + "/healthz", file_tail(log))
            yield run
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                run.killed = True
            run.exit_code = proc.returncode
            log.seek(0)
            run.log_tail = log.read()[-2000:]


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class Sampler:
    """Polls /api/v1/stats during the run; keeps the engine gauges' maxima."""

    GAUGES = ("queue_depth", "active_sequences", "kv_used_ratio", "batch_sequences")

    def __init__(self) -> None:
        self.maxima = dict.fromkeys(self.GAUGES, 0.0)
        self.samples = 0

    async def run(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                stats = (await client.get("/api/v1/stats", timeout=30)).json()
                for name in self.GAUGES:
                    value = float(stats.get("engine", {}).get(name, 0.0))
                    self.maxima[name] = max(self.maxima[name], value)
                self.samples += 1
            except (httpx.HTTPError, ValueError):
                pass
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STATS_EVERY_S)


async def _api(
    client: httpx.AsyncClient, body: dict[str, Any], tally: Tally, user_id: str, text: str
) -> tuple[int, Exchange | None, float | None]:
    """POST /api/v1/chat, plain or streamed: (status, the acknowledged exchange, retry-after)."""
    started = time.perf_counter()
    kind = "api_sse" if body.get("stream") else "api"
    async with client.stream("POST", "/api/v1/chat", json=body) as resp:
        if resp.status_code != 200:
            return await _refused(resp, tally, kind)
        first: float | None = None
        last = 0.0
        if not body.get("stream"):
            data = json.loads(await resp.aread())
            reply, done = data["response"], data
        else:
            pieces: list[str] = []
            done = None
            event = ""
            async for line in resp.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    payload = json.loads(line[5:])
                    if event == "token":
                        last = time.perf_counter()
                        first = first or last
                        pieces.append(payload["text"])
                    elif event == "done":
                        done = payload
                    elif event == "error":
                        tally.stream_errors += 1
                        tally.error(kind, json.dumps(payload))
                        return 200, None, None
            if done is None:
                tally.errors_other += 1
                tally.error(kind, "stream ended without a done event")
                return 200, None, None
            reply = "".join(pieces)
    status, exchange, wait = _acknowledged(
        user_id, done["session_id"], kind, text, reply, done.get("message_id"), started, first
    )
    exchange.gap_ms = _gap_ms(first, last, len(pieces)) if body.get("stream") else None
    usage, timings = done.get("usage") or {}, done.get("timings") or {}
    if "prompt_tokens" in usage and "reused_tokens" in timings:
        exchange.prompt_tokens = int(usage["prompt_tokens"])
        exchange.reused_tokens = int(timings["reused_tokens"])
    return status, exchange, wait


async def _openai(
    client: httpx.AsyncClient,
    body: dict[str, Any],
    tally: Tally,
    user_id: str,
    session_id: str,
    text: str,
) -> tuple[int, Exchange | None, float | None]:
    """POST /v1/chat/completions (session named by X-Session-Id), plain or streamed."""
    started = time.perf_counter()
    kind = "openai_sse" if body.get("stream") else "openai"
    headers = {"X-Session-Id": session_id}
    async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as resp:
        if resp.status_code != 200:
            return await _refused(resp, tally, kind)
        first: float | None = None
        last = 0.0
        if not body.get("stream"):
            data = json.loads(await resp.aread())
            reply = data["choices"][0]["message"]["content"]
            session_id = data.get("companion", {}).get("session_id", session_id)
        else:
            pieces: list[str] = []
            finished = ended_ok = False
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                if line[5:].strip() == "[DONE]":
                    ended_ok = True
                    break
                chunk = json.loads(line[5:])
                if "error" in chunk:
                    tally.stream_errors += 1
                    tally.error(kind, json.dumps(chunk))
                    return 200, None, None
                choice = (chunk.get("choices") or [{}])[0]
                content = choice.get("delta", {}).get("content")
                if content:
                    last = time.perf_counter()
                    first = first or last
                    pieces.append(content)
                finished = finished or choice.get("finish_reason") is not None
            if not (finished and ended_ok):
                tally.errors_other += 1
                tally.error(kind, "stream ended without finish_reason and [DONE]")
                return 200, None, None
            reply = "".join(pieces)
    status, exchange, wait = _acknowledged(
        user_id, session_id, kind, text, reply, None, started, first
    )
    exchange.gap_ms = _gap_ms(first, last, len(pieces)) if body.get("stream") else None
    return status, exchange, wait


def _gap_ms(first: float | None, last: float, pieces: int) -> float | None:
    """A stream's mean gap between text pieces (None under two pieces)."""
    return (last - first) * 1000 / (pieces - 1) if first is not None and pieces > 1 else None


def _acknowledged(
    user_id: str, session_id: str, kind: str, text: str, reply: str, message_id: int | None,
    started: float, first: float | None,
) -> tuple[int, Exchange, None]:
    """A 200 answer's exchange, timed from `started` (first token at `first`, if streamed)."""
    ended = time.perf_counter()
    ttft = (first - started) * 1000 if first else None
    exchange = Exchange(
        user_id, session_id, kind, text, reply, message_id, (ended - started) * 1000, ttft
    )
    return 200, exchange, None


async def _refused(
    resp: httpx.Response, tally: Tally, kind: str
) -> tuple[int, None, float | None]:
    """A non-200 answer: (status, no exchange, its Retry-After), counted."""
    await resp.aread()
    return resp.status_code, _rejected(resp, tally, kind), _retry_after(resp)


def _rejected(resp: httpx.Response, tally: Tally, kind: str) -> None:
    """Count a non-200 answer (429 is counted by the caller, which retries)."""
    if resp.status_code in (429, 503) and "retry-after" not in resp.headers:
        tally.no_retry_after[str(resp.status_code)] += 1
    if resp.status_code == 429:
        return None
    if resp.status_code >= 500:
        tally.errors_5xx += 1
    else:
        tally.errors_4xx += 1
    tally.error(kind, f"HTTP {resp.status_code} {resp.text[:200]}")
    return None


def _retry_after(resp: httpx.Response) -> float | None:
    if resp.status_code != 429:
        return None
    try:
        return max(0.1, float(resp.headers.get("retry-after", "1")))
    except ValueError:
        return 1.0


async def turn(
    client: httpx.AsyncClient,
    tally: Tally,
    kind: str,
    user_id: str,
    session_id: str | None,
    new_session_id: str,
    text: str,
    history: list[dict[str, str]],
    max_tokens: int,
) -> Exchange | None:
    """Send one line (retrying after 429s while time is left); the acknowledged exchange."""
    while tally.may_send():
        tally.sent += 1
        try:
            if kind.startswith("api"):
                body: dict[str, Any] = {
                    "message": text,
                    "user_id": user_id,
                    "max_tokens": max_tokens,
                    "stream": kind == "api_sse",
                }
                if session_id is not None:
                    body["session_id"] = session_id
                status, exchange, wait = await _api(client, body, tally, user_id, text)
            else:
                messages = [*history, {"role": "user", "content": text}]
                body = {
                    "model": "companion",
                    "messages": messages,
                    "user": user_id,
                    "max_tokens": max_tokens,
                    "stream": kind == "openai_sse",
                }
                status, exchange, wait = await _openai(
                    client, body, tally, user_id, session_id or new_session_id, text
                )
        except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
            tally.errors_other += 1
            tally.error(kind, f"{type(exc).__name__}: {exc}")
            return None
        tally.statuses[str(status)] += 1
        if status != 429:
            if exchange is not None:
                tally.exchanges.append(exchange)
            return exchange
        tally.rejected_429 += 1
        await asyncio.sleep(min(wait or 1.0, max(0.0, tally.deadline - time.monotonic())))
    return None


async def simulated_user(
    client: httpx.AsyncClient,
    tally: Tally,
    index: int,
    convs: list[list[str]],
    opts: LoadOptions,
    run_id: str,
) -> None:
    """One user: its conversations in turn (one session each), line by line, with think time."""
    rng = random.Random(index)
    user_id = f"load-{run_id}-u{index:03d}"
    await asyncio.sleep(rng.uniform(0, opts.think_s))  # users do not all start at once
    for number in itertools.count():
        lines = convs[(index + number * opts.users) % len(convs)]
        session_id: str | None = None
        new_session_id = f"load-{run_id}-u{index:03d}-s{number}"
        history: list[dict[str, str]] = []
        for line_no, text in enumerate(lines):
            if not tally.may_send():
                return
            kind = KINDS[(index + number + line_no) % len(KINDS)]
            if session_id is None and kind.startswith("openai"):
                session_id = new_session_id  # openai turns name their session themselves
            exchange = await turn(client, tally, kind, user_id, session_id, new_session_id,
                                  text, history, opts.max_tokens)  # fmt: skip
            if exchange is not None:
                exchange.turn = line_no + 1
                session_id = exchange.session_id  # a first api turn gets the server's id
                history += [{"role": "user", "content": text},
                            {"role": "assistant", "content": exchange.reply}]  # fmt: skip
            await asyncio.sleep(rng.uniform(0.5, 1.5) * opts.think_s)


async def drive(url: str, opts: LoadOptions, convs: list[list[str]]) -> dict[str, Any]:
    """Warm up, run every simulated user until the deadline (or the request cap), drain."""
    limits = httpx.Limits(max_connections=opts.users + 8, max_keepalive_connections=opts.users + 8)
    timeout = httpx.Timeout(opts.drain_s, connect=30.0)  # the server times out first
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        warm = await client.post("/api/v1/chat", json={
            "message": "Hello!", "user_id": "load-warm-up", "max_tokens": opts.max_tokens,
            "cache": False})  # fmt: skip
        warm.raise_for_status()
        before = (await client.get("/api/v1/stats")).json()
        run_id = f"{int(time.time()) % 100000:05d}"
        tally = Tally(time.monotonic() + opts.duration_s, opts.max_requests)
        sampler, stop = Sampler(), asyncio.Event()
        sampling = asyncio.create_task(sampler.run(client, stop))
        started = time.perf_counter()
        users = [
            asyncio.create_task(simulated_user(client, tally, i, convs, opts, run_id))
            for i in range(opts.users)
        ]
        _, pending = await asyncio.wait(users, timeout=opts.duration_s + opts.drain_s)
        for task in pending:  # past the drain time: given up, not acknowledged
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in users:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        wall_s = time.perf_counter() - started
        stop.set()
        await sampling
        after = (await client.get("/api/v1/stats")).json()
    return {"tally": tally, "wall_s": wall_s, "abandoned": len(pending), "before": before,
            "after": after, "sampler": sampler}  # fmt: skip


def lost_messages(db: Path, exchanges: list[Exchange]) -> tuple[int, list[str]]:
    """Acknowledged user messages and replies not in the database with the same text and
    status `complete` (each stored row answers for one acknowledged message at most)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT id, session_id, role, text, status FROM messages ORDER BY id"
        ).fetchall()
    return lost_in(rows, exchanges)


def lost_in(rows: list[Any], exchanges: list[Exchange]) -> tuple[int, list[str]]:
    """lost_messages over (id, session_id, role, text, status) rows, in id order.

    A reply whose id the response gave is its row, reserved before any matching by text, so
    that an exchange known only by its texts (the OpenAI API gives no id) never takes the row
    of another with the same reply (a cached reply repeats its text in a session)."""
    by_session: dict[str, list[tuple[int, str, str, str]]] = {}
    by_id = {}
    for mid, session, role, text, status in rows:
        by_session.setdefault(session, []).append((mid, role, text, status))
        by_id[mid] = (session, role, text, status)
    used = {
        ex.message_id
        for ex in exchanges
        if by_id.get(ex.message_id) == (ex.session_id, "assistant", ex.reply, "complete")
    }
    lost, examples = 0, []
    for ex in exchanges:
        stored = by_session.get(ex.session_id, [])
        user_row = next((r for r in stored if r[0] not in used and r[1] == "user"
                         and r[2] == ex.text and r[3] == "complete"), None)  # fmt: skip
        if user_row is None:
            lost += 1
            examples.append(f"user message {ex.text[:60]!r} in {ex.session_id}")
        else:
            used.add(user_row[0])
        if ex.message_id is not None:
            found = ex.message_id in used and by_id[ex.message_id][2] == ex.reply
        else:
            after = user_row[0] if user_row else 0
            reply_id = next((r[0] for r in stored if r[0] not in used and r[0] > after
                             and r[1] == "assistant" and r[2] == ex.reply
                             and r[3] == "complete"), None)  # fmt: skip
            found = reply_id is not None
            if reply_id is not None:
                used.add(reply_id)
        if not found:
            lost += 1
            examples.append(f"reply {ex.reply[:60]!r} ({ex.kind}, id {ex.message_id}) in "
                            f"{ex.session_id}")  # fmt: skip
    return lost, examples[:5]


def check_host(host: str) -> None:
    if not is_loopback(host):
        raise ConfigError(
            f"bench load only runs against a loopback address, not {host!r}", field="host"
        )


def run(
    settings: Settings, scale: int | None = None, **options: Any
) -> tuple[dict[str, float], dict[str, Any]]:
    """The load figures and notes; `scale` = users when --users is not given."""
    opts = LoadOptions(**{k: v for k, v in options.items() if v is not None})
    if scale and "users" not in options:
        opts.users = scale
    check_host(opts.host)
    opts.drain_s = settings.request_timeout_s + DRAIN_EXTRA_S
    convs = conversations(max(opts.users * 3, 16))
    if opts.probe_s:
        phase(f"load: decode probe ({opts.probe_s:.0f} s)")
    probe = decode_probe(settings, opts.probe_s) if opts.probe_s else {}
    with tempfile.TemporaryDirectory(prefix="companion-load-") as tmp:
        data_dir = Path(tmp)
        env = server_env(settings, data_dir, opts.host)
        phase("load: starting the server")
        with companion_server(env, opts.host, opts.port or free_port()) as server:
            phase(f"load: {opts.users} users for {opts.duration_s:.0f} s", opts.duration_s,
                  timed=True)
            result = asyncio.run(drive(server.url, opts, convs))
        tally: Tally = result["tally"]
        phase("load: checking the database for lost messages")
        lost, lost_examples = lost_messages(data_dir / "companion.db", tally.exchanges)
    found = figures(opts, result, lost)
    found.update(engine_figures(result["before"], result["after"], found["tokens_per_s"], probe))
    described = notes(opts, settings, result, server, found, lost_examples)
    described["goals_met"].update(engine_goals(found))
    described["probe"] = probe
    return found, described


def figures(opts: LoadOptions, result: dict[str, Any], lost: int) -> dict[str, float]:
    tally: Tally = result["tally"]
    wall = result["wall_s"]
    latency = [e.latency_ms for e in tally.exchanges]
    ttft = [e.ttft_ms for e in tally.exchanges if e.ttft_ms is not None]
    gaps = [e.gap_ms for e in tally.exchanges if e.gap_ms is not None]
    tokens = (result["after"].get("completion_tokens_total", 0)
              - result["before"].get("completion_tokens_total", 0))  # fmt: skip
    maxima = result["sampler"].maxima
    return {
        "load_users": opts.users,
        "load_wall_s": round(wall, 1),
        "load_requests": tally.sent,
        "load_completed": len(tally.exchanges),
        "load_429": tally.rejected_429,
        "load_errors_5xx": tally.errors_5xx + tally.stream_errors,
        "load_stream_errors": tally.stream_errors,
        "load_errors_4xx": tally.errors_4xx,
        "load_errors_other": tally.errors_other,
        "load_abandoned": result["abandoned"],
        "load_lost_messages": lost,
        "load_p50_ms": round(percentile(latency, 50), 1),
        "load_p95_ms": round(percentile(latency, 95), 1),
        "load_ttft_p50_ms": round(percentile(ttft, 50), 1),
        "load_ttft_p95_ms": round(percentile(ttft, 95), 1),
        "load_itl_p50_ms": round(percentile(gaps, 50), 1),
        "load_itl_p95_ms": round(percentile(gaps, 95), 1),
        "requests_per_min": round(len(tally.exchanges) / wall * 60, 1) if wall else 0.0,
        "tokens_per_s": round(tokens / wall, 2) if wall else 0.0,
        "server_queue_depth_max": maxima["queue_depth"],
        "server_active_sequences_max": maxima["active_sequences"],
        "server_kv_used_ratio_max": maxima["kv_used_ratio"],
    }


def notes(
    opts: LoadOptions,
    settings: Settings,
    result: dict[str, Any],
    server: ServerRun,
    found: dict[str, float],
    lost_examples: list[str],
) -> dict[str, Any]:
    tally: Tally = result["tally"]
    after = result["after"]
    engine = after.get("engine", {})
    keep = (
        "generations",
        "completion_tokens",
        "cancelled",
        "failed",
        "ttft_p50_ms",
        "ttft_p95_ms",
        "batch_sequences_avg",
        "kv_hits",
        "kv_misses",
        "kv_reused_tokens",
    )
    return {
        "workload": f"{opts.users} users, {opts.duration_s:g} s, Synthetic-Persona-Chat "
        f"'User 1' lines, one session per conversation, think {opts.think_s:g} s (x0.5-1.5), "
        f"max_tokens {opts.max_tokens}, turns rotate over {', '.join(KINDS)}"
        + (f", at most {opts.max_requests} requests" if opts.max_requests else ""),
        "model": after.get("model"),
        "server": f"companion serve on {server.url}, fresh SQLite, exit code {server.exit_code}"
        + (" (killed: did not stop within 60 s of SIGTERM)" if server.killed else ""),
        "completed_by_kind": dict(Counter(e.kind for e in tally.exchanges)),
        "status_codes": dict(tally.statuses),
        "error_samples": tally.error_samples,
        "lost_examples": lost_examples,
        "server_stats": {
            "requests": after.get("requests"),
            "errors": after.get("errors"),
            "interrupted": after.get("interrupted"),
            "p50_response_time_ms": after.get("p50_response_time"),
            "p95_response_time_ms": after.get("p95_response_time"),
            "cache_hits": after.get("cache_hits"),
            "engine": {k: engine[k] for k in keep if k in engine},
            "stats_samples": result["sampler"].samples,
        },  # fmt: skip
        "settings": {
            "engine_parallel": settings.engine_parallel,
            "engine_max_queue": settings.engine_max_queue,
            "memory_enabled": settings.memory_enabled,
            "enable_caching": settings.enable_caching,
        },  # fmt: skip
        "goals_met": {
            "load_errors_5xx=0": found["load_errors_5xx"] == 0,
            "load_lost_messages=0": found["load_lost_messages"] == 0,
        },  # fmt: skip
    }
