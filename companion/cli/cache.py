"""companion cache stats | cleanup | clear"""

from __future__ import annotations

import json
from typing import Any

import click

from companion.cache import CacheTable, ResponseCache
from companion.cli import Ctx, cli
from companion.cli.remote import ServerDown, remote, url_option
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


def _server(obj: Ctx, url: str | None, key: str | None, method: str, path: str,
            **params: Any) -> dict[str, Any] | None:
    """Ask a running server (so its in-process layers change too); None when none runs at the
    settings' address. A server named with --url must answer."""
    try:
        body: dict[str, Any] = remote(obj, url, key, timeout=30).call(method, path, **params)
    except ServerDown:
        if url:
            raise
        return None
    return body


@cli.group()
def cache() -> None:
    """Inspect and clean the response cache."""


@cache.command("stats")
@url_option
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def stats(obj: Ctx, url: str | None, key: str | None, as_json: bool) -> None:
    """Entries and bytes on disk; hit rates and timings too when a server is running.

    Example: companion cache stats
    """
    live = _server(obj, url, key, "GET", "/api/v1/stats")
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
@url_option
@click.pass_obj
def cleanup(obj: Ctx, url: str | None, key: str | None) -> None:
    """Drop expired entries now (the server also does it every cleanup_interval).

    Example: companion cache cleanup
    """
    live = _server(obj, url, key, "POST", "/api/v1/cache/cleanup")
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
@url_option
@click.pass_obj
def clear(
    obj: Ctx, user_id: str | None, shared: bool, yes: bool, url: str | None, key: str | None
) -> None:
    """Drop cached replies: all of them, one user's, or the shared ones.

    Example: companion cache clear --user alice --yes
    """
    if user_id and shared:
        raise click.UsageError("--user and --shared exclude each other")
    scope = f"user:{user_id}" if user_id else ("shared" if shared else None)
    if not yes:
        click.confirm(f"drop {'every' if scope is None else scope} cached reply?", abort=True)
    live = _server(obj, url, key, "DELETE", "/api/v1/cache", scope=scope)
    if live is not None:
        click.echo(f"removed {live['removed']} entries (server)")
        return
    offline, store = _offline(obj)
    try:
        removed = offline.clear(scope)
    finally:
        store.close()
    click.echo(f"removed {removed} entries")
