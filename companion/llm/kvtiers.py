"""Evicted sessions' KV state kept in host RAM, then on disk: a resumed session restores it.

When a session leaves the KV cells (LRU eviction), the engine copies its sequence's state out
with llama.cpp's per-sequence state API (`llama_state_seq_get_data`) and puts it here with the
tokens it holds. Its next turn takes it back (`llama_state_seq_set_data`) and computes only
what follows the common prefix, instead of prefilling the whole history again.

Host RAM holds up to `host_bytes`; beyond that the least recently saved states move to disk
(a writer thread, so the engine thread never waits on a write) within `disk_bytes`, oldest
files deleted first. Files live in a folder named by the engine's fingerprint (model file,
llama.cpp version, KV type): a state is only ever restored into the same model and settings,
and only when its tokens are a prefix match of the new prompt (the engine checks). Disk files
outlive a restart, so a session resumed after one still restores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import struct
import threading
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from companion.config import Settings

log = logging.getLogger("companion.llm.kvtiers")

MAGIC = b"CKV1"
MIN_TOKENS = 16  # shorter states are not worth keeping


@dataclass
class Saved:
    """One session's saved state: its tokens, and its bytes in RAM or a file."""

    tokens: array[int]
    data: bytearray | None
    path: Path | None
    size: int


class KvTiers:
    """Host-RAM then disk store of sequence states, keyed by session; thread-safe."""

    def __init__(self, host_bytes: int, disk_dir: Path | None = None, disk_bytes: int = 0) -> None:
        self.host_bytes = max(0, host_bytes)
        self.disk_bytes = max(0, disk_bytes) if disk_dir is not None else 0
        self.disk_dir = disk_dir
        self._lock = threading.Lock()
        self._host: OrderedDict[str, Saved] = OrderedDict()
        self._disk: OrderedDict[str, Saved] = OrderedDict()
        self._host_used = 0
        self._disk_used = 0
        self.counters = {"saves": 0, "spills": 0, "disk_drops": 0, "host_drops": 0}
        self._writes: queue.Queue[tuple[str, Saved] | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        if self.disk_bytes and disk_dir is not None:
            disk_dir.mkdir(parents=True, exist_ok=True)
            self._scan()
            self._writer = threading.Thread(target=self._write_loop, name="companion-kv-spill",
                                            daemon=True)  # fmt: skip
            self._writer.start()

    def tokens(self, key: str) -> array[int] | None:
        """The tokens a restore of `key` would bring back, or None."""
        with self._lock:
            saved = self._host.get(key) or self._disk.get(key)
            return saved.tokens if saved is not None else None

    def best_prefix(self, prompt: Sequence[int], key: str, floor: int = 0) -> tuple[str, int]:
        """The saved state sharing the longest prefix with `prompt` (`key`'s own wins ties),
        longer than `floor` tokens: (its key, the common length); ("", floor) if none.

        Another session's state serves as a donor, as a resident sequence does: the same
        conversation may come under another key (the chat API's session and the OpenAI API's
        "oa-..." key), or share its opening with another session."""
        want = array("i", prompt).tobytes()
        with self._lock:
            states = [(k, s.tokens) for tier in (self._host, self._disk) for k, s in tier.items()]
        best, best_n = "", floor
        for other, tokens in sorted(states, key=lambda item: item[0] != key):
            n = _common_prefix(tokens.tobytes(), want, best_n)
            if n > best_n:
                best, best_n = other, n
        return best, best_n

    def put(self, key: str, tokens: list[int], data: bytearray) -> None:
        """Keep `key`'s state (replacing an older one); spill the oldest to disk past the budget."""
        if len(tokens) < MIN_TOKENS or not data:
            return
        saved = Saved(array("i", tokens), data, None, len(data))
        with self._lock:
            self._forget(key)
            if saved.size > self.host_bytes:
                self._spill(key, saved)
            else:
                self._host[key] = saved
                self._host_used += saved.size
            self.counters["saves"] += 1
            while self._host_used > self.host_bytes and self._host:
                old_key, old = self._host.popitem(last=False)
                self._host_used -= old.size
                self._spill(old_key, old)

    def take(self, key: str) -> tuple[array[int], bytearray, str] | None:
        """Remove and return (tokens, state bytes, tier) of `key`; None if absent or unreadable."""
        with self._lock:
            saved = self._host.pop(key, None)
            if saved is not None:
                self._host_used -= saved.size
                assert saved.data is not None
                return saved.tokens, saved.data, "host"
            saved = self._disk.pop(key, None)
            if saved is None:
                return None
            self._disk_used -= saved.size
        if saved.data is not None:  # still waiting for its write
            return saved.tokens, saved.data, "disk"
        assert saved.path is not None
        try:
            tokens, data = _read(saved.path)
        except (OSError, ValueError) as exc:
            log.warning("a saved KV state could not be read (%s): %s", saved.path, exc)
            return None
        finally:
            saved.path.unlink(missing_ok=True)
        return tokens, data, "disk"

    def peek(self, key: str) -> tuple[array[int], bytearray, str] | None:
        """(tokens, state bytes, tier) of `key`, left in place (a donor for another session)."""
        with self._lock:
            saved = self._host.get(key)
            tier = "host"
            if saved is None:
                saved, tier = self._disk.get(key), "disk"
            if saved is None:
                return None
            data, path = saved.data, saved.path
        if data is not None:
            return saved.tokens, data, tier
        assert path is not None
        try:
            tokens, data = _read(path)
        except (OSError, ValueError):
            return None
        return tokens, data, tier

    def discard(self, key: str) -> None:
        """Forget `key`'s state (the session was computed anew)."""
        with self._lock:
            self._forget(key)

    def stats(self) -> dict[str, float]:
        with self._lock:
            return {
                "host_sessions": float(len(self._host)),
                "host_mb": round(self._host_used / 2**20, 1),
                "host_budget_mb": round(self.host_bytes / 2**20, 1),
                "disk_sessions": float(len(self._disk)),
                "disk_mb": round(self._disk_used / 2**20, 1),
                **{k: float(v) for k, v in self.counters.items()},
            }

    def close(self) -> None:
        """Finish pending disk writes and stop the writer."""
        if self._writer is not None:
            self._writes.put(None)
            self._writer.join()
            self._writer = None

    # --- under the lock ------------------------------------------------------------------

    def _forget(self, key: str) -> None:
        old = self._host.pop(key, None)
        if old is not None:
            self._host_used -= old.size
        old = self._disk.pop(key, None)
        if old is not None:
            self._disk_used -= old.size
            if old.path is not None:
                old.path.unlink(missing_ok=True)

    def _spill(self, key: str, saved: Saved) -> None:
        """Move `saved` to the disk tier (written by the writer thread), or drop it."""
        if saved.size > self.disk_bytes or self.disk_dir is None:
            self.counters["host_drops"] += 1
            return
        while self._disk_used + saved.size > self.disk_bytes and self._disk:
            _, old = self._disk.popitem(last=False)
            self._disk_used -= old.size
            self.counters["disk_drops"] += 1
            if old.path is not None:
                old.path.unlink(missing_ok=True)
        saved.path = self.disk_dir / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".kv")
        self._disk[key] = saved
        self._disk_used += saved.size
        self.counters["spills"] += 1
        self._writes.put((key, saved))

    # --- disk ----------------------------------------------------------------------------

    def _write_loop(self) -> None:
        """The writer thread: write spilled states, then drop their bytes from RAM."""
        while (item := self._writes.get()) is not None:
            key, saved = item
            with self._lock:
                if self._disk.get(key) is not saved or saved.data is None:
                    continue  # taken or replaced meanwhile
                data, path = saved.data, saved.path
            assert path is not None
            try:
                _write(path, key, saved.tokens, data)
            except OSError as exc:
                log.warning("spilling a KV state to %s failed: %s", path, exc)
                with self._lock:
                    if self._disk.get(key) is saved:
                        self._disk.pop(key)
                        self._disk_used -= saved.size
                continue
            with self._lock:
                if self._disk.get(key) is saved:
                    saved.data = None
                else:  # taken or replaced while being written
                    path.unlink(missing_ok=True)

    def _scan(self) -> None:
        """Index the states a previous run left on disk (oldest first), within the budget."""
        assert self.disk_dir is not None
        files = sorted(self.disk_dir.glob("*.kv"), key=lambda p: p.stat().st_mtime)
        for path in files:
            try:
                key, tokens, size = _read_header(path)
            except (OSError, ValueError):
                path.unlink(missing_ok=True)
                continue
            self._disk[key] = Saved(tokens, None, path, size)
            self._disk_used += size
        while self._disk_used > self.disk_bytes and self._disk:
            _, old = self._disk.popitem(last=False)
            self._disk_used -= old.size
            assert old.path is not None
            old.path.unlink(missing_ok=True)


def _write(path: Path, key: str, tokens: array[int], data: bytearray) -> None:
    """Header (magic, JSON length, JSON with key and tokens), then the state; atomic rename."""
    header = json.dumps({"key": key, "tokens": tokens.tolist(), "size": len(data)}).encode()
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with tmp.open("wb") as fh:
        fh.write(MAGIC + struct.pack("<I", len(header)) + header)
        fh.write(data)
    tmp.replace(path)


def _read_header(path: Path) -> tuple[str, array[int], int]:
    with path.open("rb") as fh:
        return _header(fh.read(8), fh)


def _header(head: bytes, fh: object) -> tuple[str, array[int], int]:
    if len(head) != 8 or head[:4] != MAGIC:
        raise ValueError("not a companion KV state file")
    (length,) = struct.unpack("<I", head[4:])
    meta = json.loads(fh.read(length))  # type: ignore[attr-defined]
    return str(meta["key"]), array("i", meta["tokens"]), int(meta["size"])


def _read(path: Path) -> tuple[array[int], bytearray]:
    with path.open("rb") as fh:
        _, tokens, size = _header(fh.read(8), fh)
        data = bytearray(size)
        if fh.readinto(data) != size:
            raise ValueError("truncated KV state file")
    return tokens, data


def _common_prefix(a: bytes, b: bytes, floor: int) -> int:
    """Common leading tokens of two int32 token strings; `floor` when not more than that."""
    n = min(len(a), len(b)) // 4
    if n <= floor or a[: 4 * (floor + 1)] != b[: 4 * (floor + 1)]:
        return floor
    lo, hi = floor + 1, n + 1  # a[:lo] == b[:lo]; a[:hi] != b[:hi] or hi > n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[: 4 * mid] == b[: 4 * mid]:
            lo = mid
        else:
            hi = mid
    return lo


def fingerprint(*parts: object) -> str:
    """A short stable id of what a saved state depends on (model file, versions, KV type)."""
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def default_host_mb() -> int:
    """A quarter of the RAM free now, at most 8 GiB: room for hundreds of evicted sessions."""
    import psutil

    return min(8192, int(psutil.virtual_memory().available / 2**20 / 4))


def open_tiers(settings: Settings, model: Path) -> KvTiers:
    """The tiers the settings ask for; disk files under data_dir/kv/<fingerprint of model>."""
    import llama_cpp

    host_mb = settings.engine_host_kv_mb
    host_mb = default_host_mb() if host_mb is None else host_mb
    stat = model.stat()
    tag = fingerprint(model.resolve(), stat.st_size, stat.st_mtime_ns, llama_cpp.__version__,
                      settings.kv_cache_type, "flash_attn")  # fmt: skip
    disk_mb = settings.engine_disk_kv_mb
    return KvTiers(host_mb * 2**20, settings.data_dir / "kv" / tag if disk_mb else None,
                   disk_mb * 2**20)  # fmt: skip
