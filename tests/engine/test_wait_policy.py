"""llama.cpp's OpenMP threads spin only briefly while they wait, unless the environment says
how they should wait."""

import os
import subprocess
import sys

NAMES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def _waiting(**env: str) -> list[str | None]:
    base = {k: v for k, v in os.environ.items() if k not in NAMES}
    code = f"import os, companion; print([os.environ.get(n) for n in {NAMES!r}])"
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, check=True,
                         capture_output=True, text=True)  # fmt: skip
    return eval(out.stdout)  # noqa: S307 (our own print of a list)


def test_a_short_spin_by_default() -> None:
    assert _waiting() == [None, "1000"]


def test_the_environment_wins() -> None:
    assert _waiting(OMP_WAIT_POLICY="ACTIVE") == ["ACTIVE", None]
    assert _waiting(GOMP_SPINCOUNT="5") == [None, "5"]
