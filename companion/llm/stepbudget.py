"""How many prompt tokens a decode step may carry while other sequences are generating.

A step's time is about t_dec (the decode tokens of the running sequences) plus c x the
prompt tokens it carries. To keep a joining prompt from stalling the running streams, a step
with decoding sequences carries about (RATIO - 1) x t_dec / c prompt tokens: the streams'
inter-token gap grows at most RATIO-fold while a long prompt is prefilled in chunks. With
nothing decoding, prompts get the whole step budget. Both t_dec and c are moving averages of
the steps just measured, so the chunk follows the machine's load.
"""

from __future__ import annotations

RATIO = 2.0  # a step with a prompt chunk takes about this x a decode step
FLOOR = 8  # prompt tokens a step carries at least (a prompt always progresses)
ALPHA = 0.2


class StepBudget:
    """Prompt-token budget of the next step, from the step times measured so far."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._decode_s: float | None = None  # a step with only decode tokens
        self._token_s: float | None = None  # one prompt token's added cost

    def prompt_tokens(self, decoding: int) -> int:
        """Prompt tokens the next step may carry beside `decoding` decode tokens."""
        room = self.budget - decoding
        if decoding == 0:
            return room
        if self._decode_s is None or self._token_s is None:
            return min(room, 4 * FLOOR)  # not measured yet: a modest chunk
        chunk = int((RATIO - 1) * self._decode_s / self._token_s)
        return max(min(FLOOR, room), min(room, chunk))

    def observe(self, decoding: int, prompt: int, seconds: float) -> None:
        """One step's decode and prompt tokens and its time."""
        if decoding and not prompt:
            self._decode_s = _avg(self._decode_s, seconds)
        elif prompt and decoding and self._decode_s is not None:
            extra = max(seconds - self._decode_s, 0.0) / prompt
            self._token_s = _avg(self._token_s, max(extra, 1e-6))
        elif prompt and not decoding:
            self._token_s = _avg(self._token_s, seconds / prompt)


def _avg(old: float | None, new: float) -> float:
    return new if old is None else old + ALPHA * (new - old)
