"""The report's four plots: their data (kept in report.json) and their SVG (matplotlib)."""

from __future__ import annotations

import io
import re
from typing import Any

from companion.cache.semantic import SIMILARITY_THRESHOLD


def _series(name: str, values: list[Any], axis: str = "left") -> dict[str, Any]:
    return {"name": name, "values": values, "axis": axis}


def plot(pid: str, title: str, x_label: str, y_label: str, x: list[Any],
         series: list[dict[str, Any]], y2_label: str = "", mark: float | None = None,
         caption: str = "") -> dict[str, Any]:  # fmt: skip
    return {"id": pid, "title": title, "x_label": x_label, "y_label": y_label,
            "y2_label": y2_label, "x": x, "series": series, "mark": mark,
            "caption": caption}  # fmt: skip


def build(steps: dict[str, Any]) -> list[dict[str, Any]]:
    """The four plots' data from a run's figures (a plot whose figures are missing: left out)."""
    out: list[dict[str, Any]] = []
    for make in (_users, _threshold, _recall, _turns):
        try:
            out += make(steps)
        except KeyError:  # its step failed or a suite renamed a figure: the tables say which
            continue
    return out


def _users(steps: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    engine = steps.get("engine", {}).get("figures", {})
    sweep = steps.get("engine", {}).get("notes", {}).get("sweep", [])
    if sweep:
        agg = [engine[f"aggregate_tokens_per_s_{n}"] for n in sweep]
        out.append(plot("users", "Tokens/s and time to first token against concurrent users",
                        "concurrent users", "tokens/s", sweep, [
                            _series("aggregate tokens/s", agg),
                            _series("tokens/s per user", [round(a / n, 2) for a, n in
                                                          zip(agg, sweep, strict=True)]),
                            _series("TTFT p50 (s)", [engine[f"ttft_p50_s_{n}"] for n in sweep],
                                    "right"),
                            _series("TTFT p95 (s)", [engine[f"ttft_p95_s_{n}"] for n in sweep],
                                    "right")], "time to first token (s)",
                        caption="bench engine sweep: N requests sent together"))  # fmt: skip
    return out


def _threshold(steps: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    thr = steps.get("threshold", {})
    if thr.get("figures"):
        ts, f = thr["notes"]["thresholds"], thr["figures"]
        out.append(plot("threshold", "Cache hit and false-hit rate against the similarity "
                        "threshold", "cosine similarity threshold", "share of pairs (%)", ts, [
                            _series(f"{label} {kind}", [round(f[f"{key}_{k}_{t}"] * 100, 2)
                                                        for t in ts])
                            for key, label in (("ours", "shipped"), ("cosine", "cosine only"))
                            for k, kind in (("hit_rate", "hit rate"),
                                            ("false_hit_rate", "false-hit rate"))],
                        mark=SIMILARITY_THRESHOLD,
                        caption=f"MRPC test pairs ({thr['notes']['pairs']}): hits on paraphrases, "
                        "false hits on non-paraphrases; shipped = cosine, then the rules; the "
                        "dashed line is the shipped threshold"))  # fmt: skip
    return out


def _recall(steps: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    mem = steps.get("memory", {})
    if mem.get("figures"):
        sc, f = mem["notes"]["scales"], mem["figures"]
        out.append(plot("recall", "Memory recall time against memories per user",
                        "memories per user", "time per request (ms)", sc, [
                            _series(label, [f[f"{key}_{s}"] for s in sc])
                            for key, label in (("total_memory_ms_p50", "total p50"),
                                               ("total_memory_ms_p95", "total p95"),
                                               ("importance_ranking_ms", "scored recall p50"),
                                               ("topic_search_ms", "topic search p50"))],
                        caption="bench memory, warm index"))  # fmt: skip
    return out


def _turns(steps: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    engine = steps.get("engine", {}).get("figures", {})
    turns = sorted((int(m.group(1)), v) for k, v in engine.items()
                   if (m := re.fullmatch(r"ttft_turn(\d+)_s", k)))  # fmt: skip
    if turns:
        out.append(plot("turns", "Time to first token against turn number (KV reuse)",
                        "turn number in one session", "time to first token (s)",
                        [t for t, _ in turns], [_series("TTFT (s)", [v for _, v in turns])],
                        caption="bench engine: one session; each turn reuses the KV cells of "
                        "the turns before it"))  # fmt: skip
    return out


def svg(p: dict[str, Any]) -> str:
    """The plot as an SVG document (text kept as text, so it scales and can be read)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"
    fig, left = plt.subplots(figsize=(7.0, 3.8), dpi=100)
    right = left.twinx() if any(s["axis"] == "right" for s in p["series"]) else None
    markers = iter("os^dvx*")
    for i, s in enumerate(p["series"]):
        ax = right if s["axis"] == "right" and right is not None else left
        style = "--" if s["axis"] == "right" else "-"
        ax.plot(p["x"], s["values"], style, marker=next(markers), color=f"C{i}", label=s["name"])
    left.set_xlabel(p["x_label"])
    left.set_ylabel(p["y_label"])
    if p["id"] == "recall":
        left.set_xscale("log")
    if right is not None:
        right.set_ylabel(p["y2_label"])
    if p.get("mark") is not None:
        left.axvline(p["mark"], color="grey", linestyle=":", linewidth=1)
    axes = [ax for ax in (left, right) if ax is not None]
    handles = [h for ax in axes for h in ax.get_legend_handles_labels()[0]]
    left.legend(handles=handles, fontsize=8, loc="best")
    left.set_title(p["title"], fontsize=10)
    left.grid(True, alpha=0.3)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]  # no XML prolog: it is inlined in HTML
