"""Invalidation messages over Redis pub/sub: one channel, JSON messages, a listener thread.

Handlers run for events from every instance, this one included (the listener hears its own
messages too; handlers only drop in-process copies, so running one twice is harmless). A
publish while Redis is down runs the local handlers only; the listener reconnects by itself.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import Any

import redis

from companion.shared.bus import OTHERS_ONLY, Event, Handler, deliver
from companion.shared.link import RedisLink

log = logging.getLogger("companion.shared")
LISTEN_TIMEOUT_S = 0.5


class RedisBus:
    """Every instance's handlers hear every publish within milliseconds."""

    def __init__(self, link: RedisLink) -> None:
        """Listen on `<prefix>invalidate` in a daemon thread."""
        self.link = link
        self.channel = link.key("invalidate")
        self.origin = uuid.uuid4().hex  # this instance, so OTHERS_ONLY events skip it
        self._handlers: list[Handler] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="redis-bus", daemon=True)
        self._thread.start()
        self._ready.wait(2.0)

    def publish(self, event: Event, **data: Any) -> None:
        """Send to every instance; run the local handlers directly when Redis is down."""
        message = json.dumps({"event": event, "data": data, "origin": self.origin})
        sent = self.link.call(lambda c: c.publish(self.channel, message), None)
        if sent is None and event not in OTHERS_ONLY:
            deliver(self._handlers, event, data)

    def subscribe(self, handler: Handler) -> None:
        """Add a handler."""
        self._handlers.append(handler)

    def close(self) -> None:
        """Stop the listener."""
        self._stop.set()
        self._thread.join(timeout=2)

    def _listen(self) -> None:
        """Subscribe, dispatch, and resubscribe after a connection loss."""
        while not self._stop.is_set():
            pubsub = self.link.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                self._ready.set()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=LISTEN_TIMEOUT_S)
                    if message is not None:
                        self._dispatch(message["data"])
            except (redis.RedisError, OSError) as exc:
                log.debug("invalidation listener lost redis (%s); retrying", exc)
                self._ready.set()
                self._stop.wait(1.0)
            finally:
                pubsub.close()

    def _dispatch(self, raw: bytes | str) -> None:
        """Decode one message and run the handlers."""
        try:
            message = json.loads(raw)
            event, data = str(message["event"]), dict(message.get("data") or {})
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed invalidation message: %r", raw)
            return
        if event in OTHERS_ONLY and message.get("origin") == self.origin:
            return
        deliver(self._handlers, event, data)
