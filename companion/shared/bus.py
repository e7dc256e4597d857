"""Invalidation messages: persona edited, memory deleted, cache cleared, model reloaded.

Every instance drops its in-process copies when any instance changes the shared state.
`Bus` is the interface; LocalBus (here) delivers within the process, RedisBus (redis_bus.py)
to every instance through Redis pub/sub (within milliseconds; the goal is one second).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Literal, Protocol

log = logging.getLogger("companion.shared")
Event = Literal[
    "persona_edited", "memory_deleted", "memory_changed", "cache_cleared", "model_reloaded"
]
# Events for the other instances only: the publisher's own copy is already up to date.
OTHERS_ONLY = frozenset({"memory_changed"})
Handler = Callable[[str, dict[str, Any]], None]


class Bus(Protocol):
    """Publish an event to every instance (this one included); subscribe handlers."""

    def publish(self, event: Event, **data: Any) -> None:
        """Tell every instance (handlers run here too)."""
        ...

    def subscribe(self, handler: Handler) -> None:
        """Call handler(event, data) for each event from any instance."""
        ...

    def close(self) -> None:
        """Stop listening."""
        ...


def deliver(handlers: list[Handler], event: str, data: dict[str, Any]) -> None:
    """Run each handler; one that fails is logged and the others still run."""
    for handler in list(handlers):
        try:
            handler(event, data)
        except Exception:  # a handler must not stop the others or the listener
            log.exception("invalidation handler failed on %s %s", event, data)


class LocalBus:
    """One process: publish calls the handlers at once."""

    def __init__(self) -> None:
        self._handlers: list[Handler] = []
        self._lock = threading.Lock()

    def publish(self, event: Event, **data: Any) -> None:
        """Run every handler now (there are no other instances to tell of OTHERS_ONLY)."""
        if event in OTHERS_ONLY:
            return
        with self._lock:
            handlers = list(self._handlers)
        deliver(handlers, event, data)

    def subscribe(self, handler: Handler) -> None:
        """Add a handler."""
        with self._lock:
            self._handlers.append(handler)

    def close(self) -> None:
        """Nothing to stop."""
