"""What moved between two report runs: every figure of both, the ratio B/A, and whether the
change is beyond the noise the suite measured (its p50-p95 spread) or, without one, 10%."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from companion.errors import InputError
from companion.report.run import FORMAT

DEFAULT_NOISE = 0.10  # a figure measured once: a change under 10% is not called a move


def load(path: Path) -> dict[str, Any]:
    """A report.json, or a one-line error saying what is wrong with it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise InputError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{path} is not a companion report ({FORMAT})")
    return data


def flat(report: dict[str, Any]) -> dict[str, float]:
    """Every numeric figure of every step, named step.figure."""
    return {f"{step}.{name}": float(v) for step, body in report["steps"].items()
            for name, v in body.get("figures", {}).items()
            if isinstance(v, int | float) and not isinstance(v, bool)}  # fmt: skip


def noise(figures: dict[str, float], name: str) -> float | None:
    """Relative spread of a repeated figure: (p95 - p50) / p50 where the suite gives both."""
    partner = re.sub(r"p50", "p95", name) if "p50" in name else re.sub(r"p95", "p50", name)
    if partner == name or partner not in figures:
        return None
    p50, p95 = sorted((figures[name], figures[partner]))
    return (p95 - p50) / p50 if p50 > 0 else None


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per figure present in both runs (and one per figure in only one of them)."""
    fa, fb = flat(a), flat(b)
    rows = []
    for name in sorted(fa.keys() | fb.keys()):
        va, vb = fa.get(name), fb.get(name)
        if va is None or vb is None:
            rows.append({"figure": name, "a": va, "b": vb, "ratio": None, "noise": None,
                         "moved": "only in " + ("B" if va is None else "A")})  # fmt: skip
            continue
        ratio = vb / va if va else (1.0 if vb == 0 else None)
        spread = max(filter(None, (noise(fa, name), noise(fb, name))), default=None)
        limit = spread if spread is not None else DEFAULT_NOISE
        moved = "-" if ratio is None or abs(ratio - 1) <= limit else (
            "up" if ratio > 1 else "down")  # fmt: skip
        rows.append({"figure": name, "a": va, "b": vb,
                     "ratio": round(ratio, 3) if ratio is not None else None,
                     "noise": round(spread, 3) if spread is not None else None,
                     "moved": moved})  # fmt: skip
    return rows
