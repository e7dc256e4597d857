"""Loading a GGUF with llama-cpp-python: checks, timing, memory, and the GGUF's chat template."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

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


@dataclass
class LoadedModel:
    """A llama.cpp model and context, with the chat formatter its GGUF asks for."""

    llama: object  # llama_cpp.Llama (typed loosely: the library ships no stubs)
    formatter: object  # llama_cpp.llama_chat_format.Jinja2ChatFormatter
    info: ModelInfo


def load_model(
    path: Path,
    *,
    size: str,
    context_length: int,
    n_gpu_layers: int = 0,
    n_threads: int | None = None,
    n_seq_max: int = 1,
) -> LoadedModel:
    """Load `path` and record the load time and the resident memory the load added."""
    path = check_gguf(path)
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    proc = psutil.Process()
    rss_before = proc.memory_info().rss
    started = time.perf_counter()
    try:
        llama = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=context_length,
            n_batch=512,
            n_gpu_layers=n_gpu_layers,
            n_threads=n_threads or default_threads(),
            n_seq_max=n_seq_max,
            verbose=False,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelLoadError(f"cannot load model {path.name}: the file is corrupt or unsupported ({exc})") from exc
    load_s = time.perf_counter() - started
    limit = int(llama._model.n_ctx_train())
    if context_length > limit:
        llama.close()
        raise ConfigError(
            f"context_length {context_length} exceeds the model's limit {limit} ({path.name})",
            field="context_length",
        )
    template = llama.metadata.get("tokenizer.chat_template") or FALLBACK_TEMPLATE
    vocab = llama._model
    formatter = Jinja2ChatFormatter(
        template=template,
        eos_token=vocab.token_get_text(vocab.token_eos()),
        bos_token=vocab.token_get_text(vocab.token_bos()) if vocab.token_bos() != -1 else "",
    )
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
        "model loaded: %s (%s) in %.3f s, +%.1f MB RSS, ctx %d/%d, gpu layers %d",
        info.name, size, load_s, info.rss_added_mb, context_length, limit, n_gpu_layers,
    )
    return LoadedModel(llama=llama, formatter=formatter, info=info)


def default_threads() -> int:
    """Physical cores are what llama.cpp scales with; leave none idle on small machines."""
    return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)
