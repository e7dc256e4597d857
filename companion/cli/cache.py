"""companion cache stats | cleanup | clear"""

from __future__ import annotations

import json
from typing import Any

import click
import httpx

from companion.cache import CacheTable, ResponseCache
from companion.cli import Ctx, cli
from companion.cli.config import server_url
from companion.storage import store_for


def _offline(obj: Ctx) -> tuple[ResponseCache, Any]:
    """The cache over the database alone (no model, no embedder), and its store to close."""
    settings = obj.settings()
    store = store_for(settings)
    cache = ResponseCache(
        CacheTable(store.engine),
        None,
        ttl_s=settings.cache_ttl_hours * 3600,
        max_entries=settings.cache_max_entries,
        lru_entries=0,
        cleanup_interval_s=settings.cleanup_interval,
    )
    return cache, store


def _server(obj: Ctx, method: str, path: str) -> dict[str, Any] | None:
    """Ask a running server (so its in-process layers change too); None when none runs."""
    try:
        resp = httpx.request(method, f"{server_url(obj)}{path}", timeout=30)
    except httpx.HTTPError:
        return None
    if resp.status_code >= 400:
        raise click.ClickException(f"the server refused: {resp.text[:200]}")
    body: dict[str, Any] = resp.json()
    return body


@cli.group()
def cache() -> None:
    """Inspect and clean the response cache."""


@cache.command("stats")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def stats(obj: Ctx, as_json: bool) -> None:
    """Entries and bytes on disk; hit rates and timings too when a server is running.

    Example: companion cache stats
    """
    live = _server(obj, "GET", "/api/v1/stats")
    if live is not None:
        figures: dict[str, Any] = {"source": "server", **live.get("cache", {})}
    else:
        offline, store = _offline(obj)
        try:
            figures = {"source": "database", **offline.exact.table.totals(offline.exact.clock())}
        finally:
            store.close()
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        return
    for name, value in figures.items():
        click.echo(f"{name:24} {value}")


@cache.command("cleanup")
@click.pass_obj
def cleanup(obj: Ctx) -> None:
    """Drop expired entries now (the server also does it every cleanup_interval).

    Example: companion cache cleanup
    """
    live = _server(obj, "POST", "/api/v1/cache/cleanup")
    if live is not None:
        click.echo(f"removed {live['removed']} expired entries (server)")
        return
    offline, store = _offline(obj)
    try:
        removed = offline.cleanup_expired_cache()
    finally:
        store.close()
    click.echo(f"removed {removed} expired entries")


@cache.command("clear")
@click.option("--user", "user_id", help="Only this user's entries.")
@click.option("--shared", is_flag=True, help="Only the entries shared between users.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def clear(obj: Ctx, user_id: str | None, shared: bool, yes: bool) -> None:
    """Drop cached replies: all of them, one user's, or the shared ones.

    Example: companion cache clear --user alice --yes
    """
    if user_id and shared:
        raise click.UsageError("--user and --shared exclude each other")
    scope = f"user:{user_id}" if user_id else ("shared" if shared else None)
    if not yes:
        click.confirm(f"drop {'every' if scope is None else scope} cached reply?", abort=True)
    live = _server(obj, "DELETE", "/api/v1/cache" + (f"?scope={scope}" if scope else ""))
    if live is not None:
        click.echo(f"removed {live['removed']} entries (server)")
        return
    offline, store = _offline(obj)
    try:
        removed = offline.clear(scope)
    finally:
        store.close()
    click.echo(f"removed {removed} entries")
