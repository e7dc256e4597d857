"""Moving a sequence's KV state between llama.cpp's cells and the host/disk tiers (kvtiers.py).

Used by the engine thread only: `save` copies an evicted session's cells out before they are
freed; `restore` loads them back into a new sequence id for the session's next turn. A state
that llama.cpp cannot place (no free run of cells) is simply not restored: the turn prefills.
Also keeps, per session, the tokens its last turn ended with, to count each turn's new tokens.
"""

from __future__ import annotations

import ctypes
import logging
import time
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import llama_cpp

from companion.llm.kvcache import Entry
from companion.llm.kvtiers import KvTiers

log = logging.getLogger("companion.llm.kvstate")

ANONYMOUS_KEY = "~anonymous-"  # the engine's key for a request without a session
LEDGER_SESSIONS = 20_000  # sessions whose last tokens are remembered for the new-token count


class StateMover:
    """Saves evicted sessions into the tiers and restores them; counts what it did."""

    def __init__(self, ctx: Any, mem: Any, tiers: KvTiers | None) -> None:
        self._ctx, self._mem, self.tiers = ctx, mem, tiers
        self.counters = {"restores": 0, "restores_disk": 0, "restores_shared": 0,
                         "restore_failures": 0,
                         "restored_tokens": 0, "restore_ms": 0.0, "saves": 0,
                         "save_ms": 0.0}  # fmt: skip

    @property
    def holds_in_ram(self) -> bool:
        """Whether evicted sessions' states are kept in host RAM (a restore costs a copy)."""
        return self.tiers is not None and self.tiers.host_bytes > 0

    def keeps(self, key: str | None) -> bool:
        """Whether a session's state is worth saving: there is a tier to keep it in and a
        next turn may come (a request without a session key, ANONYMOUS_KEY..., has none)."""
        return self.tiers is not None and key is not None and not key.startswith(ANONYMOUS_KEY)

    def saved_tokens(self, key: str) -> array[int] | None:
        return self.tiers.tokens(key) if self.tiers is not None else None

    def best_saved(self, key: str, prompt: Sequence[int]) -> tuple[str, array[int] | None]:
        """The saved state to restore for `key`'s `prompt`: its own or the one sharing the
        longest prefix (see KvTiers.best_prefix); (source key, its tokens) or ("", None)."""
        if self.tiers is None:
            return "", None
        source, _ = self.tiers.best_prefix(prompt, key)
        return (source, self.tiers.tokens(source)) if source else ("", None)

    def save(self, entries: list[Entry]) -> None:
        """Copy the evicted sessions' states out, then free their cells."""
        for entry in entries:
            if self.keeps(entry.key) and entry.tokens:
                started = time.perf_counter()
                data = self._read(entry.seq)
                if data is not None:
                    self.tiers.put(entry.key, entry.tokens, data)
                    self.counters["saves"] += 1
                    self.counters["save_ms"] += (time.perf_counter() - started) * 1000
            llama_cpp.llama_memory_seq_rm(self._mem, entry.seq, -1, -1)

    def restore(
        self, key: str, seq: int, keep: int, prompt: Sequence[int], source: str = ""
    ) -> int:
        """Load `key`'s saved state into `seq` and keep its first `keep` tokens; the tokens
        kept (0 when there was none, it no longer matches `prompt`, or llama.cpp refused it).
        With another session's `source`, its state is copied and stays saved for its own."""
        source = source or key
        taken = None
        if self.tiers is not None:
            taken = self.tiers.take(key) if source == key else self.tiers.peek(source)
        llama_cpp.llama_memory_seq_rm(self._mem, seq, -1, -1)
        if taken is None:
            return 0
        tokens, data, tier = taken
        if len(tokens) < keep or list(tokens[:keep]) != list(prompt[:keep]):
            return 0  # replaced since the plan was made
        started = time.perf_counter()
        buf = (ctypes.c_uint8 * len(data)).from_buffer(data)
        if llama_cpp.llama_state_seq_set_data(self._ctx, buf, len(data), seq) == 0:
            llama_cpp.llama_memory_seq_rm(self._mem, seq, -1, -1)
            self.counters["restore_failures"] += 1
            log.info("a saved KV state of %d tokens found no room; prefilling", len(tokens))
            return 0
        llama_cpp.llama_memory_seq_rm(self._mem, seq, keep, -1)
        self.counters["restores"] += 1
        self.counters["restores_shared"] += source != key
        self.counters["restores_disk"] += tier == "disk"
        self.counters["restored_tokens"] += keep
        self.counters["restore_ms"] += (time.perf_counter() - started) * 1000
        return keep

    def discard(self, key: str) -> None:
        if self.tiers is not None:
            self.tiers.discard(key)

    def stats(self) -> dict[str, float]:
        out = {k: round(float(v), 2) for k, v in self.counters.items()}
        if self.tiers is not None:
            out.update({f"tier_{k}": v for k, v in self.tiers.stats().items()})
        return out

    def _read(self, seq: int) -> bytearray | None:
        size = int(llama_cpp.llama_state_seq_get_size(self._ctx, seq))
        if size <= 0:
            return None
        data = bytearray(size)
        buf = (ctypes.c_uint8 * size).from_buffer(data)
        written = int(llama_cpp.llama_state_seq_get_data(self._ctx, buf, size, seq))
        if written <= 0:
            return None
        del buf  # a bytearray with an exported buffer cannot be resized
        if written < size:
            del data[written:]
        return data


class Ledger:
    """Each session's tokens at the end of its last turn: what a new turn adds is counted."""

    def __init__(self, limit: int = LEDGER_SESSIONS) -> None:
        self._last: OrderedDict[str, array[int]] = OrderedDict()
        self._limit = limit

    def new_tokens(self, key: str, prompt: Sequence[int]) -> int:
        """Prompt tokens past the common prefix with the session's last turn."""
        last = self._last.get(key)
        if last is None:
            return len(prompt)
        n = min(len(last), len(prompt))
        i = 0
        while i < n and last[i] == prompt[i]:
            i += 1
        return len(prompt) - i

    def ended(self, key: str, tokens: Sequence[int]) -> None:
        if key.startswith("~"):  # an anonymous request has no next turn
            return
        self._last[key] = array("i", tokens)
        self._last.move_to_end(key)
        while len(self._last) > self._limit:
            self._last.popitem(last=False)
