"""Who runs next, and whether a new request can be served in time at all.

Fairness: free decoding slots go to the waiting request whose user holds the fewest slots
(running or just given), oldest first among equals, so one user with ten sessions does not
hold back everybody else. Honest admission: from the recent time a request holds a slot, the
wait of a newcomer at the end of the queue is predicted; past the request deadline it is
refused at once (429 with Retry-After) instead of timing out minutes later (ADMIT_SHARE: with
a margin for the prediction's error). A request admitted behind others is judged again while it
waits, at the current hold time (late_in_queue): once it can no longer end in time it is refused
then, not left to time out.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

from companion.errors import Overloaded


class Queued(Protocol):
    @property
    def user(self) -> str: ...

    submitted: float


def fair_pick(waiting: Sequence[Queued], running: Sequence[Queued], slots: int) -> list[Queued]:
    """Up to `slots` waiting requests in the order they should start."""
    held = Counter(job.user for job in running)
    left = list(waiting)
    chosen: list[Queued] = []
    while left and len(chosen) < slots:
        best = min(left, key=lambda j: (held[j.user], j.submitted))
        chosen.append(best)
        held[best.user] += 1
        left.remove(best)
    return chosen


class WaitPredictor:
    """Mean seconds a request holds a slot (moving average), and the wait that implies."""

    ALPHA = 0.1

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hold_s: float | None = None

    def observe(self, seconds: float) -> None:
        with self._lock:
            if self._hold_s is None:
                self._hold_s = seconds
            else:
                self._hold_s += self.ALPHA * (seconds - self._hold_s)

    def wait_s(self, ahead: int, parallel: int) -> float:
        """Predicted seconds before a request with `ahead` requests queued before it starts."""
        with self._lock:
            hold = self._hold_s
        if hold is None or ahead <= 0:
            return 0.0
        return ahead / max(parallel, 1) * hold

    @property
    def known(self) -> bool:
        """Whether a hold time has been seen."""
        with self._lock:
            return self._hold_s is not None

    @property
    def hold_s(self) -> float:
        with self._lock:
            return self._hold_s or 0.0


# The share of the deadline a predicted wait plus reply may take. The prediction is a mean (half
# the requests take longer) and, on model servers, the other instances' requests are seen up to
# a probe late; a queue kept right at the deadline ends a good part of its requests 504, and each
# of those still costs llama-server a slot step when it reaches it (bench scale's 64-user fault
# run with the whole deadline: 54 requests 504, in a cascade after a model server was killed).
ADMIT_SHARE = 0.8


def late_by(predictor: WaitPredictor, ahead: int, parallel: int, timeout_s: float | None) -> float:
    """Seconds by which a request with `ahead` requests queued before it (`parallel` served at
    once) would pass ADMIT_SHARE of `timeout_s`: its predicted wait plus its own reply, less
    that. 0 or less: in time (always, with a free slot, no deadline or no reply seen yet)."""
    if timeout_s is None or ahead <= 0:
        return 0.0
    return predictor.wait_s(ahead, parallel) + predictor.hold_s - ADMIT_SHARE * timeout_s


def late_in_queue(
    predictor: WaitPredictor, ahead: int, parallel: int, hold_then_s: float, waited_s: float,
    timeout_s: float | None,
) -> float:  # fmt: skip
    """Seconds by which a request that has waited `waited_s` with no token yet, sent behind
    `ahead` others when the hold time was `hold_then_s`, would now pass `timeout_s`: the rest
    of the wait predicted then, at the pace of the hold time now, plus a reply (once that
    predicted start has passed: a reply begun now). 0 or less: it can still end in time
    (always, when it had a slot at once: it is running)."""
    if timeout_s is None or ahead <= 0 or not predictor.known:
        return 0.0
    hold = predictor.hold_s
    pace = hold / hold_then_s if hold_then_s > 0 else 1.0
    left = max(0.0, ahead / max(parallel, 1) * (hold_then_s or hold) - waited_s) * pace
    return waited_s + left + hold - timeout_s


def check_wait(
    predictor: WaitPredictor, ahead: int, parallel: int, timeout_s: float | None, where: str = ""
) -> None:
    """Overloaded (429, Retry-After: the seconds it would be late) when a request behind `ahead`
    others would not finish before `timeout_s`."""
    late = late_by(predictor, ahead, parallel, timeout_s)
    if late > 0:
        wait = predictor.wait_s(ahead, parallel)
        raise Overloaded(
            f"the predicted wait{where} ({wait:.0f} s for {ahead} queued requests) plus the "
            f"reply exceeds {ADMIT_SHARE:.0%} of request_timeout_s ({timeout_s:g} s); retry later",
            retry_after_s=retry_after(late),
        )


def retry_after(late_s: float) -> int:
    """Whole seconds to wait before retrying a request that would be `late_s` late."""
    return max(1, math.ceil(late_s))
