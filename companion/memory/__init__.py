"""Long-term memory: extract facts from user turns, reconcile, recall, clean up (issue 5)."""

from __future__ import annotations

from companion.memory.base import Candidate, Change, CleanupReport, Memory, MemoryStore, Recalled
from companion.memory.cleanup import CleanupPolicy
from companion.memory.service import MemoryService

__all__ = [
    "Candidate",
    "Change",
    "CleanupPolicy",
    "CleanupReport",
    "Memory",
    "MemoryService",
    "MemoryStore",
    "Recalled",
]
