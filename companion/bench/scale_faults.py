"""bench scale --faults: faults injected into the affinity load, one after another.

At 20%, 40%, 60% and 80% of the run: kill -9 one app instance, kill -9 one model server, stop
Redis for 20 s (when the bench started it), restart PostgreSQL (when the bench started it).
After each, a probe turn is sent through nginx until one is answered 200: `recovered_s` is how
long that took after the fault ended, `accepted_s` when that probe was sent (serving again: the
rest is its wait in the model servers' queue, which the load keeps near admission's bound, and
its reply); `answered_s` how long until the service first answered as designed (200, or 429
`overloaded` with Retry-After: full, refused at once). A probe at 10% of the run, before any
fault, says how long one takes under the load alone (the floor of every recovery time).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from companion.bench.topology import Topology

REDIS_OUTAGE_S = 20.0
PROBE_TIMEOUT_S = 120.0


def _recovered(url: str, since: float) -> dict[str, float | None]:
    """From `since`, probe turns through nginx until one is answered 200: `recovered_s` when it
    was, `accepted_s` when that probe was sent (the service took it then: the rest is its wait
    in the queue and its reply), `answered_s` when the service first answered as designed
    (200, or 429 `overloaded` with Retry-After at once). None: never."""
    deadline = since + PROBE_TIMEOUT_S
    answered: float | None = None
    while time.monotonic() < deadline:
        sent = round(time.monotonic() - since, 2)
        try:
            body = {"user_id": "fault-probe", "message": "Still there?", "max_tokens": 4}
            resp = httpx.post(f"{url}/api/v1/chat", json=body, timeout=60)
            took = round(time.monotonic() - since, 2)
            if resp.status_code == 200:
                answered = took if answered is None else answered
                timings = resp.json().get("timings") or {}
                return {"recovered_s": took, "accepted_s": sent, "answered_s": answered,
                        # the probe's own reply as the instance timed it: its first token (the
                        # wait in the model server's queue and the prefill), and the whole turn
                        "probe_ttft_s": round(timings.get("time_to_first_token_ms", 0) / 1000, 2),
                        "probe_turn_s": round(timings.get("total_ms", 0) / 1000, 2)}  # fmt: skip
            if resp.status_code == 429 and "retry-after" in resp.headers and answered is None:
                answered = took
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return {"recovered_s": None, "accepted_s": None, "answered_s": answered}


def schedule(topo: Topology, backing: Any) -> list[tuple[str, Callable[[], None]]]:
    """The faults this run can make, in order."""
    steps: list[tuple[str, Callable[[], None]]] = [
        ("kill -9 an app instance", topo.apps[-1].kill),
        ("kill -9 a model server", topo.models[-1].kill),
    ]
    if backing.redis_stop is not None:

        def outage() -> None:
            backing.redis_stop()
            time.sleep(REDIS_OUTAGE_S)
            backing.redis_start()

        steps.append((f"Redis stopped for {REDIS_OUTAGE_S:.0f} s", outage))
    if backing.pg_restart is not None:
        steps.append(("PostgreSQL restarted", backing.pg_restart))
    return steps


def inject(
    topo: Topology, backing: Any, duration_s: float, events: list[dict[str, Any]]
) -> threading.Thread:
    """Run the schedule in a thread, spread over `duration_s`; each fault's record in `events`."""
    steps = schedule(topo, backing)
    started = time.monotonic()

    def run() -> None:
        # how long a probe takes under this load with no fault: the floor of every recovery
        time.sleep(max(0.0, started + duration_s / (2 * (len(steps) + 1)) - time.monotonic()))
        begun = time.monotonic()
        events.append({"fault": "none (baseline probe)", "at_s": round(begun - started, 1),
                       "took_s": 0.0, **_recovered(topo.url, begun)})  # fmt: skip
        for i, (name, action) in enumerate(steps):
            at = started + duration_s * (i + 1) / (len(steps) + 1)
            time.sleep(max(0.0, at - time.monotonic()))
            begun = time.monotonic()
            action()
            ended = time.monotonic()
            events.append({"fault": name, "at_s": round(begun - started, 1),
                           "took_s": round(ended - begun, 1),
                           **_recovered(topo.url, ended)})  # fmt: skip

    thread = threading.Thread(target=run, name="bench-faults", daemon=True)
    thread.start()
    return thread
