"""Progress of long jobs (benches, model downloads) on the terminal, with rich.

Bench code calls `phase("what", total)` and `advance()`; they do nothing unless a display is
live (`showing(...)`, which the CLI opens), so library use and tests print nothing.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_live: list[tuple[Progress, TaskID]] = []  # the display and its current task, when showing


def make_progress(console: Console | None = None) -> Progress:
    """A progress display: spinner, what, bar, n/total, elapsed and remaining time."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console or Console(file=sys.stderr),
        transient=False,
    )


@contextmanager
def showing(title: str) -> Iterator[Progress]:
    """Show progress on stderr while the block runs (one line per phase)."""
    progress = make_progress()
    with progress:
        task = progress.add_task(title, total=None)
        _live.append((progress, task))
        try:
            yield progress
        finally:
            _finish(*_live.pop())


def phase(description: str, total: float | None = None, *, timed: bool = False) -> None:
    """Start the next phase of the job (a bar when `total` is known, else a spinner).

    `timed`: `total` is seconds, and the bar fills with the clock."""
    if not _live:
        return
    progress, task = _live[-1]
    _finish(progress, task)
    new = progress.add_task(description, total=total)
    _live[-1] = (progress, new)
    if timed and total:
        threading.Thread(target=_tick, args=(progress, new, total), daemon=True).start()


def _tick(progress: Progress, task: TaskID, seconds: float) -> None:
    """Advance a timed phase once a second while it is the current one."""
    for _ in range(int(seconds)):
        time.sleep(1)
        if not _live or _live[-1][1] != task:
            return
        progress.advance(task, 1)


def _finish(progress: Progress, task: TaskID) -> None:
    """Show a phase as done (its bar full)."""
    total = next((t.total for t in progress.tasks if t.id == task), None) or 1
    progress.update(task, total=total, completed=total)


def advance(n: float = 1) -> None:
    """Count `n` more units of the current phase."""
    if _live:
        progress, task = _live[-1]
        progress.advance(task, n)
