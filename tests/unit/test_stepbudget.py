"""The prompt budget of a step beside decoding sequences, from measured step times."""

from __future__ import annotations

from companion.llm.stepbudget import FLOOR, RATIO, StepBudget


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
