"""Hardware detection, the system tier, automatic model selection and GPU layer offload."""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil

from companion.config import SIZES
from companion.errors import ModelLoadError, ModelNotInstalled
from companion.llm.registry import MODELS, ModelSpec, Registry, check_size, spec_from_file

Tier = Literal["low", "medium", "high"]

TIER_TARGET: dict[str, str] = {"low": "tiny", "medium": "small", "high": "large"}

# Nominal sizes are compared with a 10% allowance: a "16 GB" machine reports ~15.5 GiB.
ALLOWANCE = 0.9
HIGH_RAM_GB, HIGH_VRAM_GB, HIGH_CORES = 16, 8, 16
MEDIUM_RAM_GB, MEDIUM_VRAM_GB, MEDIUM_CORES = 8, 4, 8

VRAM_RESERVE_MB = 512  # scratch buffers and CUDA context kept free on the GPU
VRAM_FACTOR = 1.2  # weights + KV cache + compute buffers, relative to the file size

NVIDIA_SMI = [
    "nvidia-smi",
    "--query-gpu=name,memory.total,memory.free",
    "--format=csv,noheader,nounits",
]


@dataclass(frozen=True)
class Gpu:
    """One NVIDIA GPU as nvidia-smi reports it (MiB)."""

    name: str
    vram_total_mb: int
    vram_free_mb: int


@dataclass(frozen=True)
class Hardware:
    """What the machine offers; cpu_cores counts physical cores; RAM in GiB."""

    cpu_cores: int
    ram_total_gb: float
    ram_available_gb: float
    gpus: tuple[Gpu, ...] = ()
    gpu_offload_supported: bool = False

    def usable_gpus(self) -> tuple[Gpu, ...]:
        """The GPUs llama.cpp can use: none unless this llama.cpp build supports offload."""
        return self.gpus if self.gpu_offload_supported else ()

    def best_gpu(self) -> Gpu | None:
        """The usable GPU with the most free VRAM, or None."""
        usable = self.usable_gpus()
        return max(usable, key=lambda g: g.vram_free_mb) if usable else None

    def describe(self) -> str:
        """A short human description, e.g. '2 cores, 23.5 GB RAM, no GPU'."""
        head = f"{self.cpu_cores} cores, {self.ram_total_gb:.1f} GB RAM"
        if not self.gpus:
            return f"{head}, no GPU"
        best = max(self.gpus, key=lambda g: g.vram_total_mb)
        gpu = f"GPU {best.name} {best.vram_total_mb / 1024:.1f} GB"
        if not self.gpu_offload_supported:
            gpu += " (unused: llama.cpp built without GPU offload)"
        return f"{head}, {gpu}"


def parse_nvidia_smi(text: str) -> tuple[Gpu, ...]:
    """Parse `nvidia-smi --query-gpu=name,memory.total,memory.free` CSV lines."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.rsplit(",", 2)]
        if len(parts) != 3:
            continue
        try:
            gpus.append(Gpu(parts[0], int(float(parts[1])), int(float(parts[2]))))
        except ValueError:
            continue
    return tuple(gpus)


def _query_gpus(timeout_s: float = 5.0) -> tuple[Gpu, ...]:
    """The NVIDIA GPUs, or () when nvidia-smi is absent, fails or hangs."""
    try:
        done = subprocess.run(
            NVIDIA_SMI, capture_output=True, text=True, timeout=timeout_s, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    return parse_nvidia_smi(done.stdout)


def _gpu_offload_supported() -> bool:
    """Whether the installed llama.cpp build can offload layers to a GPU."""
    try:
        import llama_cpp

        return bool(llama_cpp.llama_supports_gpu_offload())
    except Exception:  # missing or broken native library: treat as CPU-only
        return False


def detect_hardware() -> Hardware:
    """Detect physical CPU cores (logical if unknown), RAM, NVIDIA GPUs and GPU offload support."""
    memory = psutil.virtual_memory()
    cores = psutil.cpu_count(logical=False) or psutil.cpu_count(logical=True) or 1
    return Hardware(
        cpu_cores=int(cores),
        ram_total_gb=round(memory.total / 2**30, 1),
        ram_available_gb=round(memory.available / 2**30, 1),
        gpus=_query_gpus(),
        gpu_offload_supported=_gpu_offload_supported(),
    )


def system_tier(hw: Hardware) -> Tier:
    """The spec's hardware tier, nominal sizes with a 10% allowance (16 GB -> >= 14.4 GiB).

    high:   RAM >= 16 GB and (usable GPU with >= 8 GB VRAM or >= 16 cores)
    medium: RAM >= 8 GB and (>= 8 cores or usable GPU with >= 4 GB VRAM)
    low:    anything else. A GPU is usable only when llama.cpp supports GPU offload.
    """
    vram_gb = max((g.vram_total_mb / 1024 for g in hw.usable_gpus()), default=0.0)
    ram = hw.ram_total_gb

    def at_least(value: float, nominal: float) -> bool:
        return value >= round(nominal * ALLOWANCE, 3)

    if at_least(ram, HIGH_RAM_GB) and (
        at_least(vram_gb, HIGH_VRAM_GB) or hw.cpu_cores >= HIGH_CORES
    ):
        return "high"
    if at_least(ram, MEDIUM_RAM_GB) and (
        hw.cpu_cores >= MEDIUM_CORES or at_least(vram_gb, MEDIUM_VRAM_GB)
    ):
        return "medium"
    return "low"


@dataclass(frozen=True)
class Selection:
    """The chosen model: size ('custom' for an explicit file), file, tier and why."""

    size: str
    path: Path
    tier: Tier
    reason: str
    spec: ModelSpec


def _install_hint(size: str) -> str:
    """The two ways to install a size."""
    return (
        f"install it with `companion models pull {size}` "
        f"or, offline, `companion models add {size} --path FILE.gguf`"
    )


def _auto(registry: Registry, hw: Hardware, tier: Tier) -> Selection:
    """The largest installed size not above the tier's target whose RAM need fits."""
    target = TIER_TARGET[tier]
    head = f"tier {tier} ({hw.describe()}) -> target {target}"
    candidates = list(SIZES[: SIZES.index(target) + 1])
    for size in reversed(candidates):
        path = registry.path_of(size)
        if path is not None and MODELS[size].ram_gb <= hw.ram_total_gb:
            reason = f"{head}; largest installed that fits: {size}"
            return Selection(size, path, tier, reason, MODELS[size])
    tiny = registry.path_of("tiny")
    if tiny is not None:
        reason = f"{head}; nothing installed fits in {hw.ram_total_gb:.1f} GB RAM: tiny"
        return Selection("tiny", tiny, tier, reason, MODELS["tiny"])
    raise ModelNotInstalled(f"no model is installed ({head}); {_install_hint(target)}")


def select_model(
    requested: str, registry: Registry, hw: Hardware, model_path: Path | None = None
) -> Selection:
    """Pick the model: explicit model_path, else an explicit size, else 'auto' by tier."""
    tier = system_tier(hw)
    if model_path is not None:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"model_path does not exist: {path}", field="model_path")
        spec = spec_from_file(path)
        return Selection("custom", path.resolve(), tier, f"model_path set: {path}", spec)
    if requested == "auto":
        return _auto(registry, hw, tier)
    size = check_size(requested)
    path = registry.path_of(size)
    if path is None:
        have = ", ".join(registry.installed()) or "none"
        raise ModelNotInstalled(
            f"model size {size!r} is not installed (installed: {have}); {_install_hint(size)}"
        )
    reason = f"model_size={size} requested (tier {tier} would target {TIER_TARGET[tier]})"
    return Selection(size, path, tier, reason, MODELS[size])


@dataclass(frozen=True)
class Offload:
    """How many layers llama.cpp puts on the GPU (-1 = all, 0 = CPU only) and why."""

    n_gpu_layers: int
    reason: str
    device: str


def _device(hw: Hardware, gpu: Gpu) -> str:
    """A device label such as 'cuda:0 (NVIDIA H100 80GB HBM3)'."""
    return f"cuda:{hw.gpus.index(gpu)} ({gpu.name})"


def plan_offload(
    model: ModelSpec | float,
    n_layers: int | None,
    hw: Hardware,
    gpu_acceleration: bool = True,
    override: int | None = None,
) -> Offload:
    """Plan n_gpu_layers from the model size (a ModelSpec or MB) and the best GPU's free VRAM."""
    size_mb = float(model.size_mb if isinstance(model, ModelSpec) else model)
    if n_layers is None and isinstance(model, ModelSpec):
        n_layers = model.n_layers
    gpu = hw.best_gpu()
    if override is not None:
        on_gpu = override != 0 and gpu is not None
        note = "" if gpu is not None or override == 0 else " (no usable GPU: runs on CPU)"
        device = _device(hw, gpu) if on_gpu and gpu is not None else "cpu"
        return Offload(override, f"n_gpu_layers={override} set explicitly{note}", device)
    if not gpu_acceleration:
        return Offload(0, "gpu_acceleration is off", "cpu")
    if not hw.gpus:
        return Offload(0, "no NVIDIA GPU found", "cpu")
    if gpu is None:
        return Offload(0, "llama.cpp here is built without GPU offload (CPU-only)", "cpu")
    need = size_mb * VRAM_FACTOR + VRAM_RESERVE_MB
    free = gpu.vram_free_mb
    if need <= free:
        why = f"model {size_mb:.0f} MB needs ~{need:.0f} MB, {free} MiB free: all layers"
        return Offload(-1, why, _device(hw, gpu))
    if not n_layers or size_mb <= 0:
        why = f"model needs ~{need:.0f} MB, {free} MiB free, layer count unknown: CPU"
        return Offload(0, why, "cpu")
    layers = min(n_layers, max(0, math.floor(n_layers * (free - VRAM_RESERVE_MB) / size_mb)))
    why = f"model needs ~{need:.0f} MB, {free} MiB free: {layers} of {n_layers} layers"
    return Offload(layers, why, _device(hw, gpu) if layers else "cpu")
