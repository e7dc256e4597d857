"""Cache keys: versioned content hashes of canonical JSON, and the scope a reply may serve.

A key covers everything that shapes a reply: the model file, the persona (system prompt), the
generation options, the scope (shared or one user's), the fingerprint of the context the reply
came from, and the message normalised only in ways that cannot change its meaning.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from stat import S_ISREG
from typing import Any, Literal

from companion.domain import GenerationOptions
from companion.memory.extract import extract

# Bump when the key layout changes: old rows then simply stop matching and expire.
KEY_VERSION = 1
SAMPLE_BYTES = 1 << 20  # head and tail bytes hashed for a model file's identity

# Messages that point at something said before ("as I said", "tell me more", "what about it")
# depend on a conversation even when no history reached the prompt: never shared.
_REFERS_BACK = re.compile(
    r"\b(you|i|we) (just )?(said|told|mentioned|asked|talked|discussed|wrote)\b"
    r"|\bdid (i|we|you) (just )?(say|tell|mention|ask|talk|write)\b"
    r"|\b(earlier|previous(ly)?|last time|again|the same one)\b"
    r"|\b(tell me more|more about (it|that|this|them)|go on|continue|keep going|and then)\b"
    r"|\b(what about|how about) (it|that|this|them|him|her)\b"
    r"|\b(remember|recall|forgot|forget)\b"
    r"|\b(that|this|it|those|these|they|them|he|she|him|her)\s*[?.!]*$"
    r"|^(and|but|so|also|then|why|yes|no|ok(ay)?|sure|really)\b[\s?!.]*$",
    re.IGNORECASE,
)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values, equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(kind: str, value: Any) -> str:
    """`v<version>:<kind>:<sha256 of the canonical JSON>`."""
    digest = hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()
    return f"v{KEY_VERSION}:{kind}:{digest}"


def normalise_message(text: str) -> str:
    """Collapse whitespace and fold case; punctuation stays ("in C++?" is not "in C?")."""
    return " ".join(text.split()).casefold()


def refers_to_earlier(message: str) -> bool:
    """True when the message points back at earlier turns (its reply is never shared)."""
    return bool(_REFERS_BACK.search(message.strip()))


@lru_cache(maxsize=32)
def _file_identity(path: str, size: int, mtime_ns: int) -> str:
    """Hash of the file's size and its first and last MiB (a whole GGUF takes too long)."""
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(SAMPLE_BYTES))
        if size > 2 * SAMPLE_BYTES:
            fh.seek(-SAMPLE_BYTES, 2)
            digest.update(fh.read(SAMPLE_BYTES))
    return digest.hexdigest()


_IDENTITY_RECHECK_S = 1.0  # a model file is stat()ed again at most this often
_identities: dict[tuple[str, str], tuple[float, str]] = {}


def model_identity(name: str, path: str) -> str:
    """A model file's identity: name plus a content sample hash (stable across restarts).

    The file's size and mtime are looked at again at most once a second (a stat per request
    was a measurable share of a cached reply)."""
    now = time.monotonic()
    known = _identities.get((name, path))
    if known is not None and now - known[0] < _IDENTITY_RECHECK_S:
        return known[1]
    try:
        stat = os.stat(path)
    except OSError:
        stat = None
    if stat is None or not S_ISREG(stat.st_mode):
        identity = f"{name}:{path}"
    else:
        identity = f"{name}:{_file_identity(path, stat.st_size, stat.st_mtime_ns)}"
    if len(_identities) > 64:
        _identities.clear()
    _identities[(name, path)] = (now, identity)
    return identity


@lru_cache(maxsize=256)
def persona_version(system_prompt: str) -> str:
    """The persona's version: a hash of the system prompt it renders to."""
    return content_hash("persona", system_prompt)


def context_fingerprint(messages: list[dict[str, str]]) -> str:
    """Hash of the prompt messages that came before the new message (persona, history, notes)."""
    return content_hash("context", messages)


@dataclass(frozen=True)
class Scope:
    """Who a cached reply may serve: everyone (shared) or one user in one context."""

    kind: Literal["shared", "user"]
    user_id: str | None
    fingerprint: str

    @property
    def label(self) -> str:
        """`shared` or `user:<id>` (the table's scope column)."""
        return "shared" if self.kind == "shared" else f"user:{self.user_id}"


def decide_scope(
    user_id: str, context: list[dict[str, str]], message: str, *, history_used: int, personal: bool
) -> Scope:
    """Shared only when nothing personal shaped the reply and the message states no personal
    fact; otherwise the user's own scope.

    `context` is the prompt before the new message; `personal` is set by the context builder
    when recalled memories or a user's own persona went into it.
    """
    fingerprint = context_fingerprint(context)
    if (history_used == 0 and not personal and not refers_to_earlier(message)
            and not states_personal_fact(message)):
        return Scope("shared", None, fingerprint)
    return Scope("user", user_id, fingerprint)


@lru_cache(maxsize=4096)
def states_personal_fact(message: str) -> bool:
    """True when the message says something about the user that the memory would keep ("My
    bank PIN is 4402.", "I live in Lyon"): such words never go to the shared scope."""
    return bool(extract(message))


@dataclass(frozen=True)
class CacheKey:
    """The partition (everything but the message) and the exact key within it."""

    partition: str
    key: str
    scope: Scope


def make_key(
    *, model: str, persona: str, options: GenerationOptions, scope: Scope, message: str
) -> CacheKey:
    """Build the partition and exact key for one request."""
    # typed: 0 and 0.0 are equal as dict keys but not in the canonical JSON
    typed = tuple((v, type(v)) for v in vars(options).values())
    partition = _partition(model, persona, options, typed, scope.label, scope.fingerprint)
    key = content_hash("entry", {"partition": partition, "message": normalise_message(message)})
    return CacheKey(partition, key, scope)


@lru_cache(maxsize=4096)
def _partition(
    model: str, persona: str, options: GenerationOptions, typed: tuple[Any, ...], scope: str,
    context: str,
) -> str:
    """The partition hash (a pure function of its arguments, so remembered; `typed` makes
    options that compare equal but serialise differently, like 0 and 0.0, distinct)."""
    return content_hash(
        "partition",
        {
            "model": model,
            "persona": persona,
            "options": asdict(options),
            "scope": scope,
            "context": context,
        },
    )
