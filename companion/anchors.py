"""What a conversation's earlier turns carried in their prompts, kept so that later prompts put
it back in the same place (their KV-cache prefix stays whole): the most recently used `limit`
entries, per process, thread-safe. The chat service keys notes blocks by user message id
(chat.py); the OpenAI API keys notes by the digest of the client's turns (openai_compat/notes.py).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Anchors(Generic[K, V]):
    """Values by key, the most recently used `limit` kept."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K | None) -> V | None:
        if key is None:
            return None
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: K | None, value: V) -> None:
        """Keep `value` (an empty one is not kept) for `key`, dropping the least recently used."""
        if key is None or not value:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.limit:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
