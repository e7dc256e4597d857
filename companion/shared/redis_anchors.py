"""The chat's notes blocks (companion/anchors.py) in Redis as well, for every instance.

A turn's notes block goes back before its user message in the session's later prompts, so each
prompt starts with the last one and the model server's KV cache reuses it. Behind a balancer a
session's next turn often reaches another instance: with the blocks only in the process that
made them, that instance built a prompt without them and the server computed the last exchange
again. Message ids are unique in the shared database, so the key is the id alone. Redis down:
the process's own blocks, as before.
"""

from __future__ import annotations

from companion.anchors import Anchors
from companion.shared.link import RedisLink

TTL_S = 7 * 24 * 3600  # as long as a session keeps its model server (llm/placement.py)


class RedisAnchors(Anchors[int, str]):
    """Notes blocks by user message id: this process's most recent ones, then Redis's."""

    def __init__(self, link: RedisLink, limit: int, ttl_s: int = TTL_S) -> None:
        super().__init__(limit)
        self.link = link
        self.ttl_s = ttl_s

    def get(self, key: int | None) -> str | None:
        found = super().get(key)
        if found is not None or key is None:
            return found
        name = self.link.key("anchor", str(key))
        raw = self.link.call(lambda c: c.get(name), None)
        if raw is None:
            return None
        value = raw.decode() if isinstance(raw, bytes) else str(raw)
        super().put(key, value)
        return value

    def put(self, key: int | None, value: str) -> None:
        super().put(key, value)
        if key is None or not value:
            return
        name = self.link.key("anchor", str(key))
        self.link.call(lambda c: c.set(name, value, ex=self.ttl_s), None)
