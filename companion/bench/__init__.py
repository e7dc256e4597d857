"""Benchmark suites. Each suite returns {name: number}; the CLI prints and saves them."""

from __future__ import annotations

import csv
import json
import os
import platform
from pathlib import Path
from typing import Any

import psutil

from companion import __version__

CHECKOUT = Path(__file__).resolve().parents[2]  # the repository, for an editable install


def data_dirs() -> list[Path]:
    """Where the shared data sets may be, whatever the current directory: $COMPANION_SHARED_DATA,
    then shared/data beside this checkout, then ../shared/data from the current directory."""
    env = os.environ.get("COMPANION_SHARED_DATA")
    found = [Path(env).expanduser()] if env else []
    return found + [CHECKOUT.parent / "shared" / "data", Path("../shared/data").resolve()]


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import llama_cpp

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_cores_logical": psutil.cpu_count(logical=True),
        "cpu_cores_physical": psutil.cpu_count(logical=False),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "llama_cpp_python": llama_cpp.__version__,
        "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
        "companion": __version__,
    }


def report(
    suite: str, figures: dict[str, float], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The saved form: {"suite", "machine", "figures", ...}."""
    return {"suite": suite, "machine": machine(), "figures": figures, **(extra or {})}


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def shared_data(relative: str) -> Path | None:
    """A file of the shared data sets, when this checkout has them beside it."""
    for base in data_dirs():
        if (base / relative).exists():
            return base / relative
    return None


def persona_chat_openers(limit: int) -> list[str]:
    """First user lines of Synthetic-Persona-Chat conversations (a real chit-chat workload)."""
    path = shared_data("persona_chat/Synthetic-Persona-Chat_test.csv")
    if path is None:
        return []
    lines: list[str] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            turns = row.get("Best Generated Conversation", "").splitlines()
            for turn in turns[2:4]:  # skip "Hi, I'm [name]" greetings
                _, _, text = turn.partition(": ")
                if len(text) > 20 and "[" not in text:
                    lines.append(text.strip())
                    break
            if len(lines) >= limit:
                break
    return lines
