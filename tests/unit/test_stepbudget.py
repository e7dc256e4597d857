"""The prompt budget of a step beside decoding sequences, from measured step times."""

from __future__ import annotations

from companion.llm.stepbudget import FLOOR, RATIO, StepBudget, shares


def test_nothing_decoding_gets_the_whole_budget() -> None:
    assert StepBudget(256).prompt_tokens(0) == 256


def test_chunk_keeps_a_step_near_ratio_times_a_decode_step() -> None:
    budget = StepBudget(256)
    for _ in range(20):
        budget.observe(8, 0, 0.040)  # 8 streams decode in 40 ms
        budget.observe(8, 40, 0.040 + 40 * 0.001)  # each prompt token adds 1 ms
    chunk = budget.prompt_tokens(8)
    assert abs(chunk - (RATIO - 1) * 40) <= 2
    slow = StepBudget(256)
    for _ in range(20):
        slow.observe(8, 0, 0.010)
        slow.observe(8, 40, 0.010 + 40 * 0.01)
    assert slow.prompt_tokens(8) == FLOOR  # a prompt always progresses
    assert StepBudget(12).prompt_tokens(8) == 4  # never past the step's room


def test_every_waiting_prompt_moves_each_step() -> None:
    """Many turns starting at once: each prompt gets FLOOR tokens a step, not one at a time."""
    slow = StepBudget(256)
    for _ in range(20):
        slow.observe(8, 0, 0.010)
        slow.observe(8, 40, 0.010 + 40 * 0.01)
    assert slow.prompt_tokens(8, prompts=5) == 5 * FLOOR
    assert slow.prompt_tokens(250, prompts=5) == 6  # never past the step's room
    assert shares([30, 3, 30, 30], 4 * FLOOR) == [2 * FLOOR - 3, 3, FLOOR, FLOOR]
    assert shares([30, 30, 30], 12) == [FLOOR, 4, 0]  # oldest first when room is short
    assert shares([5, 100], 60) == [5, 55]  # what a short prompt leaves goes to the next


def test_streams_keep_each_stream_above_the_floor() -> None:
    budget = StepBudget(256)
    assert budget.streams(5.0, 8, 32) == 32  # nothing measured yet
    for _ in range(30):
        budget.observe(16, 20, 0.160, sequences=20)  # 8 ms per sequence in a step
    assert budget.streams(5.0, 8, 32) == 25  # 25 x 8 ms = 200 ms a step: 5 tokens/s each
    assert budget.streams(20.0, 8, 32) == 8  # never under `least`
    assert budget.streams(1.0, 8, 32) == 32  # never over `most`
    assert budget.streams(0.0, 8, 32) == 32  # no floor
