"""Loading a GGUF with llama-cpp-python's low-level API: one model, one multi-sequence context.

The context is built by hand (not through `llama_cpp.Llama`) because batching needs settings
`Llama` does not pass on: several sequences (`n_seq_max`), one KV buffer they all share
(`kv_unified`, so a session's cache can grow to any length and a shared prefix is stored
once), and flash attention (on CPU it skips the cells of other sequences).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil

from companion.errors import ConfigError, ModelLoadError
from companion.llm.base import ModelInfo
from companion.llm.registry import check_gguf

log = logging.getLogger("companion.llm")

# Used only when a GGUF carries no chat template (ChatML, the most common instruct format).
FALLBACK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


KV_TYPES = {"f16": 1, "q8_0": 8, "q4_0": 2}  # ggml_type ids (GGML_TYPE_F16, Q8_0, Q4_0)
CPU_UBATCH = 63  # below GGML_FA_TILE_Q: see _context_params

native_log = logging.getLogger("companion.llama_cpp")
# ggml's log levels (ggml.h): NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5. llama-cpp-python's
# own callback still uses an older numbering and so prints every warning as an error.
_NATIVE_LEVELS = {0: logging.CRITICAL, 1: logging.DEBUG, 2: logging.DEBUG, 3: logging.INFO,
                  4: logging.ERROR}
_native_callback: Any = None  # kept referenced: llama.cpp holds the pointer


def route_native_logs() -> None:
    """Send llama.cpp's own log lines to the `companion.llama_cpp` logger.

    Warnings go at INFO: llama.cpp warns about things that are expected here, such as a unified
    KV buffer larger than the trained context (each sequence is still held to context_length).
    """
    global _native_callback
    if _native_callback is not None:
        return
    import ctypes

    import llama_cpp
    from llama_cpp import _logger  # noqa: F401  (it installs its callback on import; ours replaces it)

    last = [logging.DEBUG]

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
        lvl = last[0] if level == 5 else _NATIVE_LEVELS.get(level, logging.DEBUG)
        last[0] = lvl
        if native_log.isEnabledFor(lvl):
            native_log.log(lvl, "%s", text.decode("utf-8", "replace").rstrip())

    _native_callback = callback
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


@dataclass(frozen=True)
class ContextPlan:
    """How the llama.cpp context is shaped: KV cells, sequences, batch and threads."""

    kv_tokens: int  # KV cells shared by every sequence (active and cached sessions); 0 = RAM
    n_seq_max: int = 1  # sequence ids: decoding slots plus cached sessions and prefixes
    n_batch: int = 512  # most tokens one llama_decode may carry
    n_threads: int | None = None
    flash_attn: bool = True
    kv_type: str = "f16"  # f16, q8_0 or q4_0 (quantized V needs flash attention)
    split: bool = False  # one KV stream per sequence id (kv_tokens / n_seq_max cells each)
    min_seq: int = 1  # split: streams kept even when fewer fit in the RAM budget

    @property
    def stream_cells(self) -> int | None:
        """Cells of one sequence's stream when split (None: one unified buffer)."""
        return self.kv_tokens // self.n_seq_max if self.split else None


@dataclass
class LoadedModel:
    """A llama.cpp model and its context, with the chat formatters its GGUF asks for."""

    model: Any  # llama_cpp._internals.LlamaModel (untyped in the library)
    context: Any  # llama_cpp._internals.LlamaContext
    formatter: Any  # Jinja2ChatFormatter that ends with the assistant header
    prefix_formatter: Any  # the same template without it (a conversation so far)
    info: ModelInfo
    plan: ContextPlan

    def close(self) -> None:
        """Free the context, then the model."""
        self.context.close()
        self.model.close()


def load_model(
    path: Path,
    *,
    size: str,
    context_length: int,
    n_gpu_layers: int = 0,
    plan: ContextPlan | None = None,
) -> LoadedModel:
    """Load `path` and record the load time and the resident memory the load added.

    `context_length` is the longest conversation one sequence may hold (checked against the
    model's trained limit); `plan` sizes the shared context (default: one sequence).
    """
    path = check_gguf(path)
    plan = plan or ContextPlan(kv_tokens=context_length)
    from llama_cpp import _internals

    route_native_logs()
    proc = psutil.Process()
    rss_before = proc.memory_info().rss
    started = time.perf_counter()
    model = _open_model(path, n_gpu_layers)
    limit = int(model.n_ctx_train())
    if context_length > limit:
        model.close()
        raise ConfigError(
            f"context_length {context_length} exceeds the model's limit {limit} ({path.name})",
            field="context_length",
        )
    if plan.kv_tokens <= 0:
        plan = replace(plan, kv_tokens=kv_cells_for_ram(model, plan, context_length))
    elif plan.split:
        plan = streams_for_ram(model, plan)
    try:
        params = _context_params(plan, n_gpu_layers)
        context = _internals.LlamaContext(model=model, params=params, verbose=False)
    except ValueError as exc:
        model.close()
        raise ModelLoadError(f"cannot create a context for {path.name}: {exc}") from exc
    load_s = time.perf_counter() - started
    formatter, prefix_formatter = _formatters(model)
    info = ModelInfo(
        name=path.stem,
        size=size,
        path=str(path),
        context_length=context_length,
        context_limit=limit,
        n_gpu_layers=n_gpu_layers,
        load_time_s=round(load_s, 4),
        rss_added_mb=round((proc.memory_info().rss - rss_before) / 2**20, 1),
        file_size_mb=round(path.stat().st_size / 2**20, 1),
    )
    log.info(
        "model loaded: %s (%s) in %.3f s, +%.1f MB RSS, ctx %d/%d, kv %d cells, %d sequences",
        info.name,
        size,
        load_s,
        info.rss_added_mb,
        context_length,
        limit,
        plan.kv_tokens,
        plan.n_seq_max,
    )
    return LoadedModel(model, context, formatter, prefix_formatter, info, plan)


KV_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}  # bytes per K/V element
KV_RAM_SHARE = 0.15  # of the RAM available at load, for the KV cells
KV_MAX_SEQUENCES = 16  # cells for at most this many full-length conversations


def kv_cells_for_ram(model: Any, plan: ContextPlan, context_length: int) -> int:
    """KV cells that fit in KV_RAM_SHARE of the available RAM (multiple of 256, at least one
    full context, at most KV_MAX_SEQUENCES of them)."""
    cells = int(_kv_ram_budget() / _cell_bytes(model, plan)) // 256 * 256
    return max(context_length, min(cells, KV_MAX_SEQUENCES * context_length))


def streams_for_ram(model: Any, plan: ContextPlan) -> ContextPlan:
    """A split plan with only as many streams as KV_RAM_SHARE of the available RAM holds
    (at least `plan.min_seq`): a large model's cells are many times the tiny one's."""
    cells = plan.kv_tokens // plan.n_seq_max
    fit = max(plan.min_seq, int(_kv_ram_budget() / (cells * _cell_bytes(model, plan))))
    if fit >= plan.n_seq_max:
        return plan
    log.warning("KV streams cut from %d to %d: more do not fit the RAM budget", plan.n_seq_max, fit)
    return replace(plan, n_seq_max=fit, kv_tokens=fit * cells)


def _kv_ram_budget() -> float:
    return psutil.virtual_memory().available * KV_RAM_SHARE


def _cell_bytes(model: Any, plan: ContextPlan) -> float:
    """Bytes of one KV cell (every layer's K and V) of `model` in the plan's KV type."""
    import llama_cpp

    m = model.model
    head_dim = llama_cpp.llama_model_n_embd(m) // max(1, llama_cpp.llama_model_n_head(m))
    return (
        2 * llama_cpp.llama_model_n_layer(m) * llama_cpp.llama_model_n_head_kv(m) * head_dim
        * KV_BYTES[plan.kv_type]
    )  # fmt: skip


@functools.cache
def cpu_has_amx() -> bool:
    """Whether the CPU has Intel AMX. A llama.cpp built with -march=native on such a CPU puts
    quantized weights in the AMX buffer type, whose matmul crashed (SIGSEGV in
    ggml_backend_amx_mul_mat, llama-cpp-python 0.3.36, Q4_1); the plain CPU buffers are used
    instead. (`make install` builds llama.cpp without AMX; this guards other builds.)"""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return any(line.startswith("flags") and "amx_tile" in line for line in f)
    except OSError:
        return False


def _open_model(path: Path, n_gpu_layers: int) -> Any:
    """The llama_model of `path`, or ModelLoadError."""
    import llama_cpp
    from llama_cpp import _internals

    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = n_gpu_layers
    if cpu_has_amx():
        params.use_extra_bufts = False  # ggml's AMX matmul (a native build's) segfaults here
    try:
        return _internals.LlamaModel(path_model=str(path), params=params, verbose=False)
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelLoadError(
            f"cannot load model {path.name}: the file is corrupt or unsupported ({exc})"
        ) from exc


def _context_params(plan: ContextPlan, n_gpu_layers: int) -> Any:
    """llama_context_params for `plan.n_seq_max` sequences: one unified KV buffer, or with
    `plan.split` one stream of kv_tokens / n_seq_max cells per sequence.

    On CPU the physical batch stays under ggml's flash-attention tile (64 query rows): the
    per-row kernel then gives every sequence the same numbers whatever else is in the batch
    or wherever its cells lie, so a greedy reply does not depend on the load (the tiled
    kernel groups keys by cell position and rounds differently). It costs some prompt speed.
    """
    import llama_cpp

    threads = plan.n_threads or default_threads()
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = plan.kv_tokens
    params.n_batch = plan.n_batch
    params.n_ubatch = plan.n_batch if n_gpu_layers else min(plan.n_batch, CPU_UBATCH)
    params.n_seq_max = plan.n_seq_max
    params.n_outputs_max = max(plan.n_batch, plan.n_seq_max)  # llama.cpp reserves n_seq_max rows
    params.kv_unified = not plan.split
    params.type_k = params.type_v = KV_TYPES[plan.kv_type]
    params.n_threads = threads
    params.n_threads_batch = threads
    params.flash_attn_type = (
        llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        if plan.flash_attn
        else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    )
    return params


def _formatters(model: Any) -> tuple[Any, Any]:
    """Chat formatters from the GGUF's template: with and without the assistant header."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = model.metadata().get("tokenizer.chat_template") or FALLBACK_TEMPLATE
    eos = model.token_get_text(model.token_eos())
    bos = model.token_get_text(model.token_bos()) if model.token_bos() != -1 else ""
    return (
        Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos),
        Jinja2ChatFormatter(
            template=template, eos_token=eos, bos_token=bos, add_generation_prompt=False
        ),
    )


def default_threads() -> int:
    """Physical cores are what llama.cpp scales with; leave none idle on small machines."""
    return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)
