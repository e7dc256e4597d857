"""companion keys create | list | revoke"""

from __future__ import annotations

import click

from companion.auth import KeyStore
from companion.cli import Ctx, cli
from companion.storage import store_for


def key_store(obj: Ctx) -> KeyStore:
    settings = obj.settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return KeyStore(store_for(settings))


@cli.group()
def keys() -> None:
    """API keys (used when auth = true)."""


@keys.command("create")
@click.argument("user_id")
@click.option("--name", default="default", help="A label for the key.")
@click.option("--admin", is_flag=True, help="May read stats and act for every user.")
@click.pass_obj
def create(obj: Ctx, user_id: str, name: str, admin: bool) -> None:
    """Create a key for USER_ID; it is shown once.

    Example: companion keys create alice --name laptop
    """
    store = key_store(obj)
    try:
        key, record = store.create(user_id, name, admin)
    finally:
        store.store.close()
    click.echo(key)
    click.echo(
        f"key {record.id} for {record.user_id}{' (admin)' if admin else ''}: "
        "keep it; it is not shown again",
        err=True,
    )
    if not obj.settings().auth:
        click.echo(
            "note: keys are checked only when auth = true (COMPANION_AUTH=1 or `auth = true` "
            "in the settings file); this server runs without them now",
            err=True,
        )


@keys.command("list")
@click.option("--user", "user_id", help="Only this user's keys.")
@click.pass_obj
def list_keys(obj: Ctx, user_id: str | None) -> None:
    """List keys (ids and owners, never the secrets).

    Example: companion keys list --user alice
    """
    store = key_store(obj)
    try:
        for k in store.list(user_id):
            state = "revoked" if k.revoked else "active"
            used = k.last_used_at.isoformat() if k.last_used_at else "never"
            click.echo(
                f"{k.id}  {k.user_id:20} {k.name:16} {'admin' if k.admin else 'user':5} "
                f"{state:8} last used {used}"
            )
    finally:
        store.store.close()


@keys.command("revoke")
@click.argument("key_id")
@click.pass_obj
def revoke(obj: Ctx, key_id: str) -> None:
    """Revoke a key by its id.

    Example: companion keys revoke 3f9a0c1b2d4e
    """
    store = key_store(obj)
    try:
        store.revoke(key_id)
    finally:
        store.store.close()
    click.echo(f"revoked {key_id}")
