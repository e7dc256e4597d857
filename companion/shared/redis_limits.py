"""Per-user limits in Redis: one token bucket and one in-flight set per user for all instances.

A limit of N a minute holds across every instance, not N per instance. Slots in flight are
members of a sorted set scored by their expiry, so a slot held by an instance that died is
freed after `slot_ttl_s`. Redis down: the instance's own UserLimits take over.
"""

from __future__ import annotations

import uuid

from companion.errors import Overloaded
from companion.limits import UserLimits
from companion.shared.link import RedisLink

# KEYS: bucket hash, in-flight zset. ARGV: per_minute, concurrent, ticket, slot ttl ms.
# Returns {0, 0} admitted, {1, 0} too many in flight, {2, wait_ms} out of rate tokens.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local per = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then return {1, 0} end
local b = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(b[1]) or per
local stamp = tonumber(b[2]) or now
tokens = math.min(per, tokens + (now - stamp) * per / 60000)
if tokens < 1 then
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', now)
  return {2, math.ceil((1 - tokens) * 60000 / per)}
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'stamp', now)
redis.call('PEXPIRE', KEYS[1], 120000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[3])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]))
return {0, 0}
"""


class RedisLimits:
    """`per_minute` requests and `concurrent` in flight per user, across instances."""

    def __init__(
        self, link: RedisLink, per_minute: int, concurrent: int, slot_ttl_s: float = 600.0
    ) -> None:
        """`slot_ttl_s`: how long a slot of a dead instance stays taken."""
        self.link = link
        self.per_minute = per_minute
        self.concurrent = concurrent
        self.slot_ttl_ms = int(slot_ttl_s * 1000)
        self.local = UserLimits(per_minute, concurrent)
        self._acquire = link.client.register_script(ACQUIRE)

    def acquire(self, user_id: str) -> str:
        """Take a slot in Redis (or locally while Redis is down); raise Overloaded when over."""
        ticket = uuid.uuid4().hex
        keys = [self.link.key("rate", user_id), self.link.key("inflight", user_id)]
        args = [self.per_minute, self.concurrent, ticket, self.slot_ttl_ms]
        outcome = self.link.call(lambda _c: self._acquire(keys=keys, args=args), None)
        if outcome is None:
            return "local:" + self.local.acquire(user_id)
        code, wait_ms = int(outcome[0]), int(outcome[1])
        if code == 1:
            raise Overloaded(
                f"too many requests in flight for user {user_id!r} (limit {self.concurrent})",
                retry_after_s=1,
            )
        if code == 2:
            raise Overloaded(
                f"rate limit of {self.per_minute} requests per minute reached for user {user_id!r}",
                retry_after_s=max(1, -(-wait_ms // 1000)),
            )
        return ticket

    def release(self, user_id: str, ticket: str = "local") -> None:
        """Free the slot (a Redis slot that cannot be freed now expires by itself)."""
        if ticket.startswith("local"):
            self.local.release(user_id)
            return
        key = self.link.key("inflight", user_id)
        self.link.call(lambda c: c.zrem(key, ticket), None)
