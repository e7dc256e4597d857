"""API keys: bearer tokens bound to one user, stored only as SHA-256 hashes.

A key looks like `cmp_<id>_<secret>`; the id lets `keys list` and `keys revoke` name a key
without ever showing its secret again.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from companion.errors import CompanionError, NotFound
from companion.storage import Store
from companion.storage.schema import api_keys

PREFIX = "cmp_"


class Unauthorized(CompanionError):
    status_code = 401
    code = "unauthorized"


class Forbidden(CompanionError):
    status_code = 403
    code = "forbidden"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user, possibly with admin rights."""

    user_id: str
    admin: bool = False
    key_id: str | None = None


@dataclass(frozen=True)
class ApiKey:
    id: str
    user_id: str
    name: str
    admin: bool
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool


def hash_secret(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyStore:
    """Creates, checks, lists and revokes API keys in the service's database."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def create(
        self, user_id: str, name: str = "default", admin: bool = False
    ) -> tuple[str, ApiKey]:
        """A new key for `user_id`; the plain key is returned once and never stored."""
        self.store.ensure_user(user_id)
        key_id = secrets.token_hex(6)
        key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        row = {
            "id": key_id,
            "user_id": user_id,
            "name": name[:255],
            "key_hash": hash_secret(key),
            "admin": admin,
            "created_at": datetime.now(UTC),
            "last_used_at": None,
            "revoked_at": None,
        }
        with self.store.writing() as conn:
            conn.execute(api_keys.insert().values(**row))
        return key, _key(row)

    def verify(self, key: str) -> Principal:
        """The principal of a valid, unrevoked key; Unauthorized otherwise."""
        digest = hash_secret(key)
        with self.store.reading() as conn:
            row = (
                conn.execute(sa.select(api_keys).where(api_keys.c.key_hash == digest))
                .mappings()
                .first()
            )
        if row is None or not hmac.compare_digest(row["key_hash"], digest) or row["revoked_at"]:
            raise Unauthorized("invalid or revoked API key")
        return Principal(row["user_id"], bool(row["admin"]), row["id"])

    def touch(self, key_id: str) -> None:
        """Record when a key was last used."""
        with self.store.writing() as conn:
            conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id)
                .values(last_used_at=datetime.now(UTC))
            )

    def list(self, user_id: str | None = None) -> list[ApiKey]:
        query = sa.select(api_keys).order_by(api_keys.c.created_at)
        if user_id is not None:
            query = query.where(api_keys.c.user_id == user_id)
        with self.store.reading() as conn:
            return [_key(dict(r)) for r in conn.execute(query).mappings()]

    def revoke(self, key_id: str) -> None:
        with self.store.writing() as conn:
            done = conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        if done.rowcount == 0:
            raise NotFound(f"no active API key {key_id!r}", field="key_id")

    def any_active(self) -> bool:
        with self.store.reading() as conn:
            query = (
                sa.select(sa.func.count())
                .select_from(api_keys)
                .where(api_keys.c.revoked_at.is_(None))
            )
            return bool(conn.execute(query).scalar_one())


def _key(row: dict[str, object]) -> ApiKey:
    return ApiKey(
        id=str(row["id"]),
        user_id=str(row["user_id"]),
        name=str(row["name"]),
        admin=bool(row["admin"]),
        created_at=row["created_at"],  # type: ignore[arg-type]
        last_used_at=row["last_used_at"],  # type: ignore[arg-type]
        revoked=row["revoked_at"] is not None,
    )
