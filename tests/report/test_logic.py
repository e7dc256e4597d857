"""The report's pure logic: rounding, the spec's ranges, the tables' shape, compare."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from companion.cli import cli
from companion.report import compare, spec, tables
from companion.report.run import FORMAT


def test_sig_rounds_to_three_significant_digits() -> None:
    assert tables.sig(1234.5) == 1230
    assert tables.sig(0.012345) == 0.0123
    assert tables.sig(2.0) == 2 and isinstance(tables.sig(2.0), int)
    assert tables.sig(None) is None and tables.sig(float("nan")) is None


def test_a_ref_says_within_better_or_worse_in_its_direction() -> None:
    load = spec.Ref("3-5 s", 3, 5, "lower")
    assert [load.verdict(v) for v in (2, 4, 6)] == ["better", "within", "worse"]
    rate = spec.Ref("70-85%", 70, 85, "higher", 78.3)
    assert [rate.verdict(v) for v in (50, 80, 90)] == ["worse", "within", "better"]
    assert rate.value == 78.3 and load.value == 4
    assert spec.Ref("<5 MB", None, 5, "lower").value == 5


def test_a_row_has_the_spec_text_and_the_ratio() -> None:
    ref = spec.Ref("10-30 req/min", 10, 30, "higher")
    assert tables.row("Simple", 40.04, "req/min", ref) == [
        "Simple", 40, "req/min", "10-30 req/min", 2, "better"]  # fmt: skip
    missing = tables.row("GPU", None, "ms/token", ref, "no GPU on this machine")
    assert missing[1] is None and missing[-1] == "no GPU on this machine"


def _report(path: Path, **figures: float) -> Path:
    body = {"format": FORMAT, "created": "now", "steps": {"engine": {"figures": figures}}}
    path.write_text(json.dumps(body), encoding="utf-8")
    return path


def test_compare_calls_a_move_only_beyond_the_noise(tmp_path: Path) -> None:
    a = compare.load(_report(tmp_path / "a.json", ttft_p50_s=1.0, ttft_p95_s=1.5, tps=100))
    b = compare.load(_report(tmp_path / "b.json", ttft_p50_s=1.3, ttft_p95_s=1.6, tps=80))
    rows = {r["figure"]: r for r in compare.compare(a, b)}
    assert rows["engine.ttft_p50_s"]["noise"] == 0.5  # p50 1.0 vs p95 1.5 in A
    assert rows["engine.ttft_p50_s"]["moved"] == "-"  # +30% is within that spread
    assert rows["engine.tps"] == {"figure": "engine.tps", "a": 100, "b": 80, "ratio": 0.8,
                                  "noise": None, "moved": "down"}  # fmt: skip


def test_compare_cli_prints_the_moves_and_rejects_bad_files(tmp_path: Path) -> None:
    a = _report(tmp_path / "a.json", tps=100)
    b = _report(tmp_path / "b.json", tps=150)
    out = CliRunner().invoke(cli, ["report", "compare", str(a), str(b)])
    assert out.exit_code == 0, out.output
    assert "engine.tps" in out.output and "1.5" in out.output and "up" in out.output
    (tmp_path / "bad.json").write_text("{nope", encoding="utf-8")
    bad = CliRunner().invoke(cli, ["report", "compare", str(a), str(tmp_path / "bad.json")])
    assert bad.exit_code == 1 and "is not JSON" in bad.output
    other = CliRunner().invoke(cli, ["report", "compare", str(a), str(tmp_path / "none.json")])
    assert other.exit_code == 1 and "cannot read" in other.output
    (tmp_path / "x.json").write_text("{}", encoding="utf-8")
    wrong = CliRunner().invoke(cli, ["report", "compare", str(a), str(tmp_path / "x.json")])
    assert wrong.exit_code == 1 and "not a companion report" in wrong.output
