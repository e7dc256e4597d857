"""Honest admission, the pure part (llm/admission.py, llm/servers.py): from the recent hold
time and the requests ahead, a request that would end past request_timeout_s is refused with a
Retry-After of the seconds it would be late; a model server's wait counts every instance's
requests it reports, plus what this instance sent since."""

from __future__ import annotations

import pytest

from companion.errors import Overloaded
from companion.llm.admission import (
    ADMIT_SHARE,
    WaitPredictor,
    check_wait,
    late_by,
    late_in_queue,
)
from companion.llm.servers import ModelServer, ServerPool, busy_from_metrics


def predictor(hold_s: float) -> WaitPredictor:
    p = WaitPredictor()
    p.observe(hold_s)
    return p


def test_a_request_that_would_end_past_the_deadline_is_refused_with_its_lateness() -> None:
    p = predictor(4.0)  # a reply holds a slot 4 s; 2 slots
    assert late_by(p, 0, 2, 10) <= 0  # a free slot: never refused
    assert late_by(WaitPredictor(), 50, 2, 10) <= 0  # no reply seen yet: nothing to predict
    assert late_by(p, 10, 2, None) <= 0  # no deadline
    assert ADMIT_SHARE == 0.8  # of the deadline: a margin for the prediction's error
    check_wait(p, 3, 2, 12.5)  # 3 ahead on 2 slots: 6 s wait + 4 s reply = 10 s, in time
    with pytest.raises(Overloaded) as refused:
        check_wait(p, 4, 2, 12.5)  # 8 s + 4 s: 2 s past 10 s
    assert refused.value.status_code == 429 and refused.value.retry_after_s == 2
    assert "request_timeout_s (12.5 s)" in str(refused.value)
    with pytest.raises(Overloaded) as refused:
        check_wait(p, 5, 2, 13.125)  # 10 + 4 - 10.5 = 3.5 s late: retry after 4 s
    assert refused.value.retry_after_s == 4


def test_the_hold_time_is_a_moving_average() -> None:
    p = predictor(2.0)
    p.observe(12.0)  # one slow reply moves it a tenth of the way
    assert p.hold_s == pytest.approx(3.0)


def test_a_queued_request_that_can_no_longer_end_in_time_is_late() -> None:
    p = predictor(2.0)  # 8 ahead on 4 slots: starts in 4 s, ends at 6 s
    assert late_in_queue(p, 8, 4, 2.0, 0.0, 30) <= 0  # in time
    assert late_in_queue(WaitPredictor(), 8, 4, 2.0, 29.0, 30) <= 0  # nothing to predict from
    assert late_in_queue(p, 8, 4, 2.0, 29.0, None) <= 0  # no deadline
    assert late_in_queue(p, 0, 4, 2.0, 29.5, 30) <= 0  # it had a slot at once: it is running
    assert late_in_queue(p, 8, 4, 2.0, 28.0, 30) == pytest.approx(0.0)  # a reply begun now fits
    assert late_in_queue(p, 8, 4, 2.0, 29.0, 30) == pytest.approx(1.0)  # still not started: late
    for _ in range(30):
        p.observe(8.0)  # the replies grew slower (about 7.75 s): the rest of the wait with them
    assert late_in_queue(p, 8, 4, 2.0, 1.0, 18) > 0  # 3 s of queue left, now ~11.6 s: late
    assert late_in_queue(p, 8, 4, 2.0, 3.5, 18) <= 0  # most of its queue went at the old pace


def test_a_server_counts_what_it_reports_plus_what_this_instance_sent_since() -> None:
    server = ModelServer("http://m", in_flight=2)
    assert server.busy == 2  # no report: this instance's own
    server.reported, server.reported_mine = 9, 2  # 7 more from other instances at the probe
    server.in_flight = 4  # 2 more sent since
    assert server.busy == 11
    server.in_flight, server.reported = 1, 0  # the report is stale: never below our own
    assert server.busy == 1


def test_a_server_is_late_from_its_slots_hold_and_load() -> None:
    pool = ServerPool(["http://a:1", "http://b:1/v1"])
    a, b = pool.servers["http://a:1"], pool.servers["http://b:1/v1"]
    a.slots = 4
    pool.observe(a.url, 3.0)
    a.reported, a.reported_mine = 12, 0  # 12 at the server: 9 ahead of a newcomer
    assert pool.late_by(a.url, 10) == pytest.approx(9 / 4 * 3 + 3 - 8)
    assert pool.late_by(a.url, 20) < 0
    b.in_flight = 100  # an OpenAI server reports no slots: it does its own admission
    pool.observe(b.url, 5.0)
    assert pool.late_by(b.url, 1) <= 0


def test_busy_is_read_from_llama_server_metrics() -> None:
    text = (
        "# HELP llamacpp:requests_processing Number of requests processing.\n"
        "# TYPE llamacpp:requests_processing gauge\n"
        "llamacpp:requests_processing 4\n"
        "llamacpp:requests_deferred 7\n"
        "llamacpp:n_decode_total 12\n"
    )
    assert busy_from_metrics(text) == 11
    assert busy_from_metrics("llamacpp:requests_processing 4\n") is None
    assert busy_from_metrics("llamacpp:requests_processing x\nllamacpp:requests_deferred 1") is None


def test_before_its_first_reply_a_server_takes_one_round_beyond_its_slots() -> None:
    pool = ServerPool(["http://c:1"])
    cold = pool.servers["http://c:1"]
    cold.slots, cold.in_flight = 2, 3
    assert pool.late_by(cold.url, 30) <= 0
    cold.in_flight = 4  # 2 x slots: the next waits until a reply tells the hold time
    assert pool.late_by(cold.url, 30) == 1.0
    pool.observe(cold.url, 1.0)  # then the prediction: 3 ahead on 2 slots, 2.5 s
    assert pool.late_by(cold.url, 30) <= 0
