"""SessionTurns: one turn at a time per session, in arrival order, 409 after the wait."""

from __future__ import annotations

import asyncio

import pytest

from companion.turns import SessionBusy, SessionTurns


async def test_turns_of_one_session_run_one_at_a_time_in_arrival_order() -> None:
    turns, order = SessionTurns(), []

    async def turn(i: int, session: str) -> None:
        async with turns.hold(session, wait_s=5):
            order.append(("start", session, i))
            await asyncio.sleep(0.01)
            order.append(("end", session, i))

    await asyncio.gather(*(turn(i, "s") for i in range(4)), turn(9, "other"))
    mine = [e for e in order if e[1] == "s"]
    assert mine == [(step, "s", i) for i in range(4) for step in ("start", "end")]
    assert order.index(("start", "other", 9)) < order.index(("end", "s", 0))  # not held up
    assert turns.busy() == 0


async def test_a_turn_that_waits_too_long_is_session_busy() -> None:
    turns = SessionTurns()
    async with turns.hold("s", wait_s=1):
        with pytest.raises(SessionBusy) as err:
            async with turns.hold("s", wait_s=0.05):
                pass
    assert err.value.status_code == 409 and err.value.code == "session_busy"
    assert turns.busy() == 0
    async with turns.hold("s", wait_s=0.05):  # free again
        pass
