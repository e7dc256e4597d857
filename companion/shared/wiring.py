"""Choose each shared piece's backend from the settings: Redis with `redis_url`, else local."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from companion.cache.entries import Entries
from companion.cache.redis_entries import RedisEntries
from companion.config import Settings
from companion.limits import Limits, UserLimits
from companion.shared.bus import Bus, LocalBus
from companion.shared.link import RedisLink
from companion.shared.locks import LocalLocks, SessionLocks
from companion.shared.redis_bus import RedisBus
from companion.shared.redis_limits import RedisLimits
from companion.shared.redis_locks import RedisLocks

log = logging.getLogger("companion.shared")


@dataclass
class Shared:
    """The backends of the state instances agree on."""

    link: RedisLink | None
    bus: Bus
    limits: Limits
    locks: SessionLocks
    entries: Entries | None  # the exact cache's shared level (None: table only)

    def health(self) -> dict[str, Any]:
        """Redis: ok / degraded (with the reason) / off."""
        if self.link is None:
            return {"status": "off"}
        return self.link.health()

    def close(self) -> None:
        """Stop the listener and release the connections."""
        self.bus.close()
        if self.link is not None:
            self.link.close()


def local_shared(per_minute: int = 120, concurrent: int = 4, wait_s: float = 300.0) -> Shared:
    """In-process backends only (one instance; the embedded default)."""
    return Shared(None, LocalBus(), UserLimits(per_minute, concurrent), LocalLocks(wait_s), None)


def open_shared(settings: Settings) -> Shared:
    """Redis backends when `redis_url` is set (it need not be up yet), else in-process ones."""
    wait = settings.request_timeout_s
    if not settings.redis_url:
        return local_shared(settings.rate_limit_per_minute, settings.max_concurrent_per_user, wait)
    link = RedisLink(settings.redis_url, settings.redis_prefix)
    log.info("shared state in redis %s (prefix %r)", link.url, link.prefix)
    return Shared(
        link,
        RedisBus(link),
        RedisLimits(
            link,
            settings.rate_limit_per_minute,
            settings.max_concurrent_per_user,
            slot_ttl_s=settings.request_timeout_s + 60,
        ),
        RedisLocks(link, wait),
        RedisEntries(link),
    )
