"""Hardware tier, automatic / explicit model selection and GPU offload planning."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from companion.errors import ModelLoadError, ModelNotInstalled, UnknownModelSize
from companion.llm import hardware
from companion.llm.hardware import (
    TIER_TARGET,
    Gpu,
    Hardware,
    detect_hardware,
    parse_nvidia_smi,
    plan_offload,
    select_model,
    system_tier,
)
from companion.llm.registry import MODELS, Registry, tiny_package_path

GB8 = 8192
GB4 = 4096


def hw(
    cores: int = 4,
    ram: float = 4.0,
    vram_mb: int | None = None,
    free_mb: int | None = None,
    offload: bool = True,
) -> Hardware:
    """A hand-made Hardware value."""
    free = vram_mb if free_mb is None else free_mb
    gpus = () if vram_mb is None else (Gpu("Test GPU", vram_mb, free),)
    return Hardware(cores, ram, ram, gpus, offload)


# --- tiers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("machine", "tier"),
    [
        (hw(cores=4, ram=4), "low"),  # spec minimum
        (hw(cores=8, ram=8), "medium"),  # spec recommended
        (hw(cores=16, ram=16), "high"),  # spec optimal, by cores
        (hw(cores=4, ram=16, vram_mb=GB8), "high"),  # optimal, by GPU
        (hw(cores=7, ram=8), "low"),  # one core short of medium
        (hw(cores=64, ram=7.1), "low"),  # RAM below 8 * 0.9
        (hw(cores=8, ram=7.2), "medium"),  # 8 GB machine reporting 7.2 GiB
        (hw(cores=15, ram=32), "medium"),  # one core short of high
        (hw(cores=16, ram=14.3), "medium"),  # RAM below 16 * 0.9
        (hw(cores=16, ram=14.4), "high"),  # 16 GB machine reporting 14.4 GiB
        (hw(cores=2, ram=8, vram_mb=GB4), "medium"),  # GPU 4 GB stands in for cores
        (hw(cores=2, ram=8, vram_mb=3600), "low"),  # GPU below 4 * 0.9 GB
        (hw(cores=2, ram=8, vram_mb=3687), "medium"),  # GPU at 4 * 0.9 GB
        (hw(cores=2, ram=16, vram_mb=7372), "medium"),  # GPU just below 8 * 0.9 GB
        (hw(cores=2, ram=16, vram_mb=7373), "high"),  # GPU at 8 * 0.9 GB
        (hw(cores=2, ram=4, vram_mb=81920), "low"),  # big GPU, too little RAM
        (hw(cores=4, ram=64, vram_mb=81920, offload=False), "low"),  # GPU unusable
        (hw(cores=8, ram=64, vram_mb=81920, offload=False), "medium"),
    ],
)
def test_system_tier_boundaries(machine: Hardware, tier: str) -> None:
    assert system_tier(machine) == tier


def test_tier_targets_follow_spec() -> None:
    assert TIER_TARGET == {"low": "tiny", "medium": "small", "high": "large"}


# --- selection -----------------------------------------------------------------------------


@pytest.fixture
def tiny_file() -> Path:
    """The real tiny GGUF."""
    path = tiny_package_path()
    assert path is not None
    return path


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    """A registry with only the packaged tiny model."""
    return Registry(tmp_path / "models")


def test_auto_low_tier_picks_tiny(registry: Registry, tiny_file: Path) -> None:
    machine = Hardware(2, 23.4, 20.0, (), False)
    sel = select_model("auto", registry, machine)
    assert (sel.size, sel.path, sel.tier, sel.spec) == ("tiny", tiny_file, "low", MODELS["tiny"])
    assert sel.reason == (
        "tier low (2 cores, 23.4 GB RAM, no GPU) -> target tiny; largest installed that fits: tiny"
    )


def test_auto_picks_largest_installed_up_to_target(registry: Registry, tiny_file: Path) -> None:
    for size in ("base", "small", "medium"):
        registry.add(size, tiny_file)
    sel = select_model("auto", registry, hw(cores=8, ram=8))
    assert (sel.tier, sel.size) == ("medium", "small")  # medium is installed but above target
    sel = select_model("auto", registry, hw(cores=16, ram=32))
    assert (sel.tier, sel.size) == ("high", "medium")  # large not installed
    assert "target large; largest installed that fits: medium" in sel.reason


def test_auto_skips_sizes_whose_ram_does_not_fit(
    registry: Registry, tiny_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.add("large", tiny_file)
    registry.add("medium", tiny_file)
    monkeypatch.setitem(MODELS, "large", replace(MODELS["large"], ram_gb=40.0))
    sel = select_model("auto", registry, hw(cores=16, ram=32))
    assert (sel.tier, sel.size) == ("high", "medium")
    assert select_model("auto", registry, hw(cores=16, ram=64)).size == "large"


def test_high_tier_ram_always_fits_large() -> None:
    assert MODELS["large"].ram_gb <= 16 * 0.9


def test_auto_falls_back_to_tiny(registry: Registry, tiny_file: Path) -> None:
    sel = select_model("auto", registry, hw(cores=16, ram=16))
    assert sel.size == "tiny" and sel.path == tiny_file
    tiny_only = select_model("auto", registry, hw(cores=1, ram=0.25))
    assert tiny_only.size == "tiny" and "nothing installed fits" in tiny_only.reason


def test_auto_with_nothing_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("companion.llm.registry.tiny_package_path", lambda: None)
    with pytest.raises(ModelNotInstalled, match="companion models pull tiny"):
        select_model("auto", Registry(tmp_path), hw())


def test_explicit_size(registry: Registry, tiny_file: Path) -> None:
    registry.add("large", tiny_file)
    sel = select_model("large", registry, hw())  # explicit wins over tier and RAM
    assert (sel.size, sel.tier, sel.spec) == ("large", "low", MODELS["large"])
    assert "model_size=large requested" in sel.reason
    assert select_model("tiny", registry, hw()).path == tiny_file


def test_explicit_size_not_installed(registry: Registry) -> None:
    with pytest.raises(ModelNotInstalled) as info:
        select_model("medium", registry, hw())
    message = info.value.message
    assert "'medium' is not installed (installed: tiny)" in message
    assert "`companion models pull medium`" in message
    assert "`companion models add medium --path FILE.gguf`" in message


def test_unknown_size(registry: Registry) -> None:
    with pytest.raises(UnknownModelSize, match="choose one of: tiny, base, small, medium, large"):
        select_model("xxl", registry, hw())


def test_model_path_wins(registry: Registry, tiny_file: Path, tmp_path: Path) -> None:
    sel = select_model("large", registry, hw(), model_path=tiny_file)
    assert sel.size == "custom" and sel.path == tiny_file.resolve()
    assert (sel.spec.n_layers, sel.spec.context_limit) == (30, 8192)
    with pytest.raises(ModelLoadError, match="does not exist"):
        select_model("auto", registry, hw(), model_path=tmp_path / "missing.gguf")
    fake = tmp_path / "fake.gguf"
    fake.write_text("hello")
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        select_model("auto", registry, hw(), model_path=fake)


# --- offload -------------------------------------------------------------------------------


def test_offload_override_wins() -> None:
    big = hw(ram=64, vram_mb=81920)
    assert plan_offload(MODELS["large"], None, big, False, 12).n_gpu_layers == 12
    plan = plan_offload(MODELS["large"], None, big, True, 0)
    assert (plan.n_gpu_layers, plan.device) == (0, "cpu")
    plan = plan_offload(MODELS["tiny"], None, hw(), True, -1)
    assert (plan.n_gpu_layers, plan.device) == (-1, "cpu")
    assert "set explicitly" in plan.reason and "no usable GPU" in plan.reason


def test_offload_cpu_cases() -> None:
    spec = MODELS["small"]
    off = plan_offload(spec, None, hw(vram_mb=GB8), gpu_acceleration=False)
    assert (off.n_gpu_layers, off.device, off.reason) == (0, "cpu", "gpu_acceleration is off")
    off = plan_offload(spec, None, hw())
    assert (off.n_gpu_layers, off.reason) == (0, "no NVIDIA GPU found")
    off = plan_offload(spec, None, hw(vram_mb=GB8, offload=False))
    assert off.n_gpu_layers == 0 and "without GPU offload" in off.reason


def test_offload_all_layers_when_it_fits() -> None:
    size = 1000.0
    need = int(size * 1.2 + 512)  # 1712
    off = plan_offload(size, 20, hw(vram_mb=GB8, free_mb=need))
    assert (off.n_gpu_layers, off.device) == (-1, "cuda:0 (Test GPU)")
    assert plan_offload(size, 20, hw(vram_mb=GB8, free_mb=need - 1)).n_gpu_layers != -1


def test_offload_proportional_layers() -> None:
    spec = MODELS["large"]  # 8990 MB, 48 layers
    off = plan_offload(spec, None, hw(vram_mb=GB8, free_mb=6000))
    assert off.n_gpu_layers == (48 * (6000 - 512)) // 8990 == 29
    assert off.device == "cuda:0 (Test GPU)" and "29 of 48 layers" in off.reason
    off = plan_offload(1000.0, 10, hw(vram_mb=GB8, free_mb=1600))  # 1088/1000 -> clamp to 10
    assert off.n_gpu_layers == 10
    off = plan_offload(spec, None, hw(vram_mb=GB8, free_mb=400))
    assert (off.n_gpu_layers, off.device) == (0, "cpu")
    assert plan_offload(5000.0, None, hw(vram_mb=GB8, free_mb=2000)).n_gpu_layers == 0


def test_offload_uses_gpu_with_most_free_vram() -> None:
    gpus = (Gpu("A", 16000, 1000), Gpu("B", 24000, 20000))
    off = plan_offload(MODELS["medium"], None, Hardware(8, 32, 30, gpus, True))
    assert (off.n_gpu_layers, off.device) == (-1, "cuda:1 (B)")


# --- detection -----------------------------------------------------------------------------


def test_parse_nvidia_smi() -> None:
    text = "NVIDIA H100 80GB HBM3, 81559, 80994\nNVIDIA GeForce RTX 3070, 8192, 7000\n\ngarbage\n"
    assert parse_nvidia_smi(text) == (
        Gpu("NVIDIA H100 80GB HBM3", 81559, 80994),
        Gpu("NVIDIA GeForce RTX 3070", 8192, 7000),
    )
    assert parse_nvidia_smi("Name, with comma, 100, 50") == (Gpu("Name, with comma", 100, 50),)
    assert parse_nvidia_smi("GPU, [N/A], [N/A]") == ()


@pytest.mark.parametrize(
    "error", [FileNotFoundError("nvidia-smi"), subprocess.TimeoutExpired("nvidia-smi", 5)]
)
def test_missing_or_hanging_nvidia_smi(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise error

    monkeypatch.setattr(hardware.subprocess, "run", fail)
    assert detect_hardware().gpus == ()


def test_detect_hardware_here() -> None:
    found = detect_hardware()
    assert found.cpu_cores >= 1
    assert 0 < found.ram_available_gb <= found.ram_total_gb < 16384
    assert isinstance(found.gpus, tuple) and all(g.vram_total_mb > 0 for g in found.gpus)
    assert isinstance(found.gpu_offload_supported, bool)
    assert system_tier(found) in ("low", "medium", "high")
    assert found.describe().startswith(f"{found.cpu_cores} cores, ")
