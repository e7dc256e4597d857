"""Talking to a running server from the CLI: `--url` / COMPANION_URL, `--key` /
COMPANION_API_KEY, one-line errors; and readable tables of the server's figures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
import httpx
from rich.console import Console
from rich.table import Table

from companion.cli import Ctx
from companion.errors import CompanionError

F = TypeVar("F", bound=Callable[..., Any])


def url_option(func: F) -> F:
    """`--url` and `--key` for a command that talks to a server."""
    func = click.option(
        "--key", envvar="COMPANION_API_KEY", metavar="KEY",
        help="API key, for a server with auth = true (env COMPANION_API_KEY).",
    )(func)  # fmt: skip
    func = click.option(
        "--url", envvar="COMPANION_URL", metavar="URL",
        help="The server, e.g. http://127.0.0.1:13443 (env COMPANION_URL; default: the "
        "settings' host and port).",
    )(func)  # fmt: skip
    return func


class ServerDown(CompanionError):
    """No server answered at the URL."""


class Remote:
    """A running companion server: JSON calls with one-line errors."""

    def __init__(self, base: str, key: str | None = None, timeout: float = 600) -> None:
        self.base = base.rstrip("/")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        """The JSON answer (None for 204); ServerDown or a one-line CompanionError."""
        query = {k: v for k, v in params.items() if v is not None}
        try:
            resp = httpx.request(method, self.base + path, json=body, params=query,
                                 headers=self.headers, timeout=self.timeout)  # fmt: skip
        except httpx.HTTPError as exc:
            raise ServerDown(
                f"no companion server at {self.base} ({exc.__class__.__name__}); start one "
                "with `companion serve`, or point --url / COMPANION_URL at it"
            ) from None
        if resp.status_code >= 400:
            raise CompanionError(f"the server answered {resp.status_code}: {error_of(resp)}")
        return None if resp.status_code == 204 else resp.json()


def error_of(resp: httpx.Response) -> str:
    """The message of a JSON error body, else the start of the text."""
    try:
        return str(resp.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return resp.text[:200] or resp.reason_phrase


def remote(obj: Ctx, url: str | None, key: str | None, timeout: float = 600) -> Remote:
    """The server a command talks to: --url, else the settings' host and port."""
    if not url:
        s = obj.settings()
        host = "127.0.0.1" if s.host in ("0.0.0.0", "::") else s.host
        url = f"http://{host}:{s.port}"
    if not url.startswith(("http://", "https://")):
        raise CompanionError(f"--url must start with http:// or https://, not {url!r}")
    return Remote(url, key, timeout)


def stats_table(stats: dict[str, Any]) -> Table:
    """get_performance_stats() as a short table with units."""
    engine = stats.get("engine") or {}
    cache = stats.get("cache") or {}
    rows = [
        ("Model", f"{stats.get('model')} ({stats.get('model_size')})"),
        ("Requests / errors", f"{stats.get('requests', 0)} / {stats.get('errors', 0)}"),
        ("Avg response", f"{stats.get('avg_response_time', 0):.0f} ms"),
        ("p95 response", f"{stats.get('p95_response_time', 0):.0f} ms"),
        ("Time to first token", f"{stats.get('avg_time_to_first_token', 0):.0f} ms"),
        ("Generation speed", f"{stats.get('tokens_per_second', 0):.1f} tokens/s"),
        (
            "Cache hit rate",
            f"{stats.get('cache_hit_rate', 0) * 100:.1f} %"
            + (f" ({cache.get('entries')} entries)" if cache.get("entries") is not None else ""),
        ),
        ("Memory use", f"{stats.get('memory_usage_mb', 0):.0f} MB"),
        ("Replies generating now", str(engine.get("active_sequences", 0))),
        ("Model load time", f"{stats.get('model_load_time', 0):.1f} s"),
        ("Uptime", f"{stats.get('uptime_s', 0) / 60:.0f} min"),
    ]
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="dim")
    table.add_column(justify="right")
    for name, value in rows:
        table.add_row(name, value)
    return table


def print_table(table: Table) -> None:
    """Print a rich table to stdout (plain when not a terminal)."""
    Console(soft_wrap=True).print(table)
