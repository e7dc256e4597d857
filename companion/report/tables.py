"""Every table of the spec, measured: the figures of a run beside the spec's, with the ratio.

A table is plain data (it goes into report.json as is): id, title, the spec's section, column
names, rows of cells (a number, a string or None) and a note. Numbers are rounded here, once,
to three significant digits; the HTML and Markdown print them exactly as stored.
"""

from __future__ import annotations

import math
from typing import Any

from companion.config import SIZES
from companion.report import spec
from companion.report.spec import Ref

COLUMNS = ["Row", "Measured", "Unit", "Spec", "Ratio (measured/spec)", "vs spec"]
Figures = dict[str, dict[str, Any]]  # step name -> its figures


def sig(value: float | None, digits: int = 3) -> float | int | None:
    """`value` rounded to `digits` significant digits (an int when it has no fraction)."""
    if value is None or not math.isfinite(value):
        return None
    if value == 0:
        return 0
    rounded = round(value, digits - 1 - math.floor(math.log10(abs(value))))
    return int(rounded) if float(rounded).is_integer() else rounded


def row(label: str, measured: float | None, unit: str, ref: Ref, why: str = "") -> list[Any]:
    """A measured figure beside the spec's: value, unit, spec text, ratio, verdict."""
    value = sig(measured)
    if value is None:
        return [label, None, unit, ref.text, None, why or "not measured"]
    ratio = sig(value / ref.value) if ref.value else None
    return [label, value, unit, ref.text, ratio, ref.verdict(value)]


def table(tid: str, title: str, section: str, rows: list[list[Any]], note: str = "",
          columns: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    return {"id": tid, "title": title, "spec_section": section,
            "columns": columns or COLUMNS, "rows": rows, "note": note}  # fmt: skip


def _get(figures: Figures, step: str, name: str) -> float | None:
    value = figures.get(step, {}).get(name)
    return float(value) if isinstance(value, int | float) else None


def _div(a: float | None, b: float | None, scale: float = 1.0) -> float | None:
    return a / b * scale if a is not None and b else None


def cold_start(f: Figures, machine: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for size, (load, ram) in spec.COLD_START.items():
        why = "" if size in machine["installed_sizes"] else "not installed"
        rows.append(row(f"{size} load time", _get(f, "models", f"{size}_load_s"), "s", load, why))
        gb = _div(_get(f, "models", f"{size}_rss_mb"), 1024)
        rows.append(row(f"{size} RAM", gb, "GB", ram, why))
    return table("cold_start", "Cold Start", "Model Loading Times", rows,
                 "RAM = resident memory the loaded model added to the process (mmap'd weights "
                 "count once touched).")  # fmt: skip


def token_generation(f: Figures, machine: dict[str, Any]) -> dict[str, Any]:
    per_token = _div(1000.0, _get(f, "engine", "single_tokens_per_s"))
    if not machine["gpus"]:
        gpu_why = "no GPU on this machine"
    elif not machine["gpu_offload_supported"]:
        gpu_why = "llama.cpp built without GPU offload"
    else:
        gpu_why = "GPU offload rows: run on the GPU build (not measured by this run)"
    rows = [row(name, per_token if i == 0 else None, "ms/token", ref, gpu_why)
            for i, (name, ref) in enumerate(spec.TOKEN_GENERATION.items())]  # fmt: skip
    return table("token_generation", "Token Generation (per token)", "Response Generation",
                 rows, "One stream through companion's engine, greedy, prompt included "
                 "(bench engine single_tokens_per_s).")  # fmt: skip


def cache_metrics(f: Figures, notes: dict[str, Any]) -> dict[str, Any]:
    n = notes.get("cache", {}).get("requests", 0)
    size = _div(_get(f, "cache", "size_mb"), _get(f, "cache", "entries"), 1000)
    refs = spec.CACHE_METRICS
    rows = [
        row("Cache hit rate", _div(_get(f, "cache", "hit_rate"), 1, 100), "%",
            refs["Cache hit rate"]),
        row("Cache lookup", _get(f, "cache", "lookup_p50_ms"), "ms", refs["Cache lookup"]),
        row("Cache storage", _get(f, "cache", "store_p50_ms"), "ms", refs["Cache storage"]),
        row("Cache size per 1000 replies", size, "MB", refs["Cache size per 1000 replies"]),
    ]  # fmt: skip
    return table(
        "cache_metrics",
        "Cache Metrics",
        "Cache Performance",
        rows,
        f"The companion workload of bench cache, {n} requests (the spec: 1000); "
        "lookup and storage are medians; size scales the stored entries to 1000.",
    )


def memory_usage(f: Figures, notes: dict[str, Any]) -> dict[str, Any]:
    loaded = _get(f, "models", "tiny_rss_mb")  # the model and its context
    process = _get(f, "models", "tiny_process_rss_mb")
    kv_mb = _get(f, "user", "context_buffer_mb")
    refs = spec.MEMORY_USAGE
    rows = [
        row("Python process", process - loaded if process and loaded else None, "MB",
            refs["Python process"]),
        row("SQLite database", _get(f, "cache", "db_mb"), "MB", refs["SQLite database"]),
        row("LLM model", loaded - kv_mb if loaded and kv_mb is not None else None, "MB",
            refs["LLM model"]),
        row("Context buffer", kv_mb, "MB", refs["Context buffer"]),
    ]  # fmt: skip
    n = notes.get("cache", {}).get("requests", 0)
    cells, per = _get(f, "user", "kv_cells"), _get(f, "user", "kv_bytes_per_token")
    kv_type = notes.get("user", {}).get("kv_cache_type", "f16")
    return table("memory_usage", "Memory Usage", "Base Memory Requirements", rows,
                 f"Process = resident memory without the model (bench models, tiny); SQLite = "
                 f"the file after the {n}-request cache workload (conversations + cache); "
                 f"context buffer = the engine's KV cache at the current settings ({cells:g} "
                 f"cells x {per:g} bytes, {kv_type}); LLM model = what loading added (bench "
                 "models) less the context buffer."
                 if cells is not None and per is not None else "")  # fmt: skip


def per_user(f: Figures, notes: dict[str, Any]) -> dict[str, Any]:
    keys = {"Conversation context": "conversation_context_mb", "Memory system":
            "memory_system_mb", "Personality data": "personality_data_mb",
            "Cache data": "cache_data_mb"}  # fmt: skip
    rows = [row(label, _get(f, "user", key), "MB", spec.PER_USER_MEMORY[label])
            for label, key in keys.items()]  # fmt: skip
    tokens = _get(f, "user", "conversation_kv_tokens")
    memories = _get(f, "user", "memories_per_user")
    return table("per_user_memory", "Per-User Memory (Active)", "Dynamic Memory Scaling", rows,
                 f"One active user (bench user): a session of {tokens:g} tokens (its messages and "
                 f"KV cells), {memories:g} memories (rows + in-RAM vectors), persona and "
                 "relationship rows, the user's private cache rows."
                 if tokens is not None and memories is not None else "")  # fmt: skip


def single_user(f: Figures, notes: dict[str, Any]) -> dict[str, Any]:
    keys = {"Cached responses": "cached_req_per_min", "Simple queries": "simple_req_per_min",
            "Complex queries": "complex_req_per_min",
            "Long conversations": "long_req_per_min"}  # fmt: skip
    rows = [row(label, _get(f, "user", key), "req/min", spec.SINGLE_USER[label])
            for label, key in keys.items()]  # fmt: skip
    user = notes.get("user", {})
    return table(
        "single_user",
        "Single User Performance",
        "Response Generation (throughput)",
        rows,
        f"One request at a time through Companion.chat, up to "
        f"{user.get('max_tokens', '?')} tokens per reply; complex: "
        f"{user.get('complex', '')}; long: {user.get('long_session_turns', '')}.",
    )


def multi_user(f: Figures) -> dict[str, Any]:
    single = _get(f, "engine", "aggregate_tokens_per_s_1")
    sweep = sorted(int(k.rsplit("_", 1)[1]) for k in f.get("engine", {})
                   if k.startswith("aggregate_tokens_per_s_"))  # fmt: skip
    rows = []
    for label, (ref, (lo, hi)) in spec.MULTI_USER.items():
        points = [n for n in sweep if lo <= n <= hi]
        shares = [_div(_get(f, "engine", f"aggregate_tokens_per_s_{n}"), n * single, 100)
                  for n in points] if single else []  # fmt: skip
        values = [s for s in shares if s is not None]
        measured = sum(values) / len(values) if values else None
        users = ", ".join(map(str, points))
        rows.append(
            row(
                f"{label} (measured at {users})" if points else label,
                measured,
                "% of 1-user speed",
                ref,
                "no point of the sweep in this range",
            )
        )
    return table("multi_user", "Multi-User Scaling", "Concurrent Users", rows,
                 "Per-user tokens/s with N users sending at once (the engine's continuous "
                 "batching; bench engine sweep), as a share of one user's; the plot shows the "
                 "aggregate tokens/s and time to first token.")  # fmt: skip


def cache_by_type(f: Figures, notes: dict[str, Any]) -> dict[str, Any]:
    counts = notes.get("cache", {}).get("requests_by_class", {})
    rows = [row(f"{label} ({counts.get(kind, 0)} requests)",
                _div(_get(f, "cache", f"hit_rate_{kind}"), 1, 100), "% hit rate", ref)
            for kind, (label, ref) in spec.CACHE_BY_TYPE.items()]  # fmt: skip
    return table(
        "cache_by_type",
        "Cache Effectiveness by Query Type",
        "Cache Strategy Analysis",
        rows,
        "The same workload as Cache Metrics, by the spec's query types.",
    )


def memory_query(f: Figures, notes: dict[str, Any]) -> dict[str, Any]:
    scales = notes.get("memory", {}).get("scales") or [0]
    top = max(scales)
    keys = {"Topic search": "topic_search_ms", "Importance ranking": "importance_ranking_ms",
            "Context building": "context_building_ms",
            "Total memory time": "total_memory_ms_p50"}  # fmt: skip
    rows = [row(label, _get(f, "memory", f"{key}_{top}"), "ms", spec.MEMORY_QUERY[label])
            for label, key in keys.items()]  # fmt: skip
    return table("memory_query", "Memory Query Performance", "Memory Retrieval Performance",
                 rows, f"Medians per request at {top} memories per user (bench memory): "
                 "full-text topic search; the whole scored recall; building the prompt; total "
                 "= recall + persona and summary lookup + context building.")  # fmt: skip


def _meets(req: spec.Requirement, m: dict[str, Any]) -> str:
    """Whether this machine has the tier's hardware, and what it lacks."""
    vram = max((g["vram_gb"] for g in m["gpus"]), default=0.0) if m["gpu_offload_supported"] else 0
    lacks = [text for ok, text in (
        (m["cores_physical"] >= req.cores, f"{m['cores_physical']} cores < {req.cores}"),
        (m["cpu_ghz"] is None or m["cpu_ghz"] >= req.ghz, f"{m['cpu_ghz']} GHz < {req.ghz}"),
        (m["ram_gb"] >= req.ram_gb * 0.9, f"{m['ram_gb']} GB RAM < {req.ram_gb}"),
        (vram >= req.vram_gb * 0.9, f"{vram} GB usable VRAM < {req.vram_gb}"),
    ) if not ok]  # fmt: skip
    return "meets it" if not lacks else "below: " + "; ".join(lacks)


def requirements(f: Figures, m: dict[str, Any]) -> dict[str, Any]:
    rows: list[list[Any]] = []
    for req in spec.REQUIREMENTS:
        gpu = f", GPU {req.vram_gb} GB VRAM" if req.vram_gb else ""
        hardware = f"{req.cores} cores, {req.ghz} GHz, {req.ram_gb} GB RAM{gpu}"
        rows.append([req.name, hardware, f"{req.model}, context {req.context}",
                     req.req_per_min.text, None, _meets(req, m)])  # fmt: skip
    tier = {"low": 0, "medium": 1, "high": 2}[m["tier"]]
    ref = spec.REQUIREMENTS[tier].req_per_min
    simple = sig(_get(f, "user", "simple_req_per_min"))
    chosen = m["chosen_model"]
    rows.append([f"This machine (tier {m['tier']})", m["describe"],
                 f"{chosen['size']} ({chosen['model']})", simple,
                 sig(simple / ref.value) if simple is not None else None,
                 f"simple queries vs {spec.REQUIREMENTS[tier].name}: {ref.text}"])  # fmt: skip
    return table("requirements", "System Requirements vs Performance",
                 "Minimum / Recommended / Optimal Requirements", rows,
                 f"companion's tier rule and automatic model choice: {chosen['reason']}.",
                 ["Tier", "Hardware", "Model", "req/min", "Ratio (measured/spec)",
                  "This machine"])  # fmt: skip


def model_comparison(f: Figures, m: dict[str, Any]) -> dict[str, Any]:
    rows: list[list[Any]] = []
    for size in SIZES:
        if size not in m["installed_sizes"]:
            continue
        load_ref, tps_ref, gb_ref = spec.MODEL_COMPARISON[size]
        load = sig(_get(f, "models", f"{size}_load_s"))
        tps = sig(_get(f, "models", f"{size}_tokens_per_s"))
        gb = sig(_div(_get(f, "models", f"{size}_rss_mb"), 1024))
        rows.append([size, load, load_ref, sig(_div(load, load_ref)), tps, tps_ref,
                     sig(_div(tps, tps_ref)), gb, gb_ref, sig(_div(gb, gb_ref))])  # fmt: skip
    absent = [s for s in SIZES if s not in m["installed_sizes"]]
    return table("model_comparison", "Model Performance Comparison", "Performance Results",
                 rows, "Every installed size through Companion.chat (bench models); not "
                 f"installed: {', '.join(absent) or 'none'} (companion models pull SIZE).",
                 ["Model", "Load (s)", "Spec load (s)", "Ratio", "Tokens/s", "Spec tokens/s",
                  "Ratio", "Memory (GB)", "Spec memory (GB)", "Ratio"])  # fmt: skip


def peers(f: Figures, m: dict[str, Any], notes: dict[str, Any]) -> dict[str, Any]:
    def pair(label: str, ours: float | None, peer: str, theirs: float | None) -> list[Any]:
        a, b = sig(ours), sig(theirs)
        return [label, a, peer, b, sig(_div(a, b))]

    rows = [
        pair("One stream, tokens/s (engine)", _get(f, "engine", "single_tokens_per_s"),
             "raw llama-cpp-python", _get(f, "engine", "raw_tokens_per_s")),
        pair("Chat, tokens/s (bench models, tiny)", _get(f, "models", "tiny_tokens_per_s"),
             "raw llama-cpp-python chat", _get(f, "models", "raw_tokens_per_s")),
    ]  # fmt: skip
    server = m["peers"]["llama_server"]
    if server["present"] and "peers" in f and f["peers"]:
        n = notes["peers"]["streams"]
        for what, unit in (("aggregate_tokens_per_s", "tokens/s"), ("ttft_p95_s", "s")):
            rows.append(pair(f"{n} streams over HTTP, {what.replace('_', ' ')} ({unit})",
                             _get(f, "peers", f"http_{what}_{n}"), "llama-server",
                             _get(f, "peers", f"peer_llama_server_{what}_{n}")))  # fmt: skip
    else:
        rows.append(["Concurrent streams over HTTP", None, "llama-server", None, None])
    skipped = notes.get("peers", {}).get("skipped")
    why = f" llama-server: {server['why'] if not server['present'] else skipped}." if (
        skipped or not server["present"]) else ""  # fmt: skip
    return table(
        "peers",
        "companion beside its peers (same run)",
        "(not in the spec)",
        rows,
        f"Same model, threads and greedy decoding.{why}",
        ["Measure", "companion", "Peer", "Peer value", "Ratio (companion/peer)"],
    )


def machine_table(m: dict[str, Any]) -> dict[str, Any]:
    gpus = ", ".join(f"{g['name']} ({g['vram_gb']} GB)" for g in m["gpus"]) or "none"
    t = spec.TEST_SYSTEM
    rows = [
        ["CPU", m["cpu"], t["CPU"]],
        ["Cores (physical)", m["cores_physical"], "8"],
        ["Clock (GHz)", m["cpu_ghz"], "3.6"],
        ["RAM (GB)", m["ram_gb"], t["RAM"]],
        ["GPU", gpus + ("" if m["gpu_offload_supported"] or not m["gpus"]
                        else " (llama.cpp without GPU offload)"), t["GPU"]],
        ["OS", m["platform"], t["OS"]],
        ["Load average (1, 5, 15 min) at start", " ".join(map(str, m["load_average"])), "-"],
    ]  # fmt: skip
    return table(
        "machine",
        "The machine",
        "Test Environment",
        rows,
        f"companion {m['companion']}, Python {m['python']}, llama-cpp-python "
        f"{m['peers']['llama_cpp_python']['version']}.",
        ["", "This machine", "The spec's test system"],
    )


def build(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every table, in the spec's order, from a run's figures, notes and machine."""
    f = {k: v["figures"] for k, v in report["steps"].items()}
    notes = {k: v["notes"] for k, v in report["steps"].items()}
    m = report["machine"]
    return [machine_table(m), cold_start(f, m), token_generation(f, m), cache_metrics(f, notes),
            memory_usage(f, notes), per_user(f, notes), single_user(f, notes),
            multi_user(f), requirements(f, m), cache_by_type(f, notes),
            memory_query(f, notes), model_comparison(f, m), peers(f, m, notes)]  # fmt: skip
