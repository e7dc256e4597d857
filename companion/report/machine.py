"""What the report was measured on: CPU, cores, clock, RAM, GPU, the spec's tier, the model
companion picks here, and which peer servers are present."""

from __future__ import annotations

import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import psutil

from companion import __version__
from companion.bench.http_load import llama_server_path
from companion.config import Settings
from companion.llm.hardware import detect_hardware, select_model, system_tier
from companion.llm.registry import Registry


def cpu_model() -> str:
    """The CPU's marketing name (/proc/cpuinfo on Linux), else what platform says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def cpu_ghz(name: str) -> float | None:
    """Clock in GHz: psutil's maximum (or current) frequency, else the "@ 3.60GHz" in the name."""
    freq = psutil.cpu_freq()
    if freq is not None and (freq.max or freq.current):
        return round((freq.max or freq.current) / 1000, 2)
    found = re.search(r"@\s*([\d.]+)\s*GHz", name)
    return float(found.group(1)) if found else None


def llama_server() -> dict[str, Any]:
    """llama.cpp's llama-server when there is one (on PATH, or built by
    scripts/build-llama-server.sh): its path and version line."""
    found = llama_server_path()
    if found is None:
        return {"present": False, "why": "not on PATH, nor built by scripts/build-llama-server.sh"}
    path = str(found)
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20)
        version = (done.stdout + done.stderr).strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        version = []
    return {"present": True, "path": path, "version": version[0] if version else "unknown"}


def describe(settings: Settings) -> dict[str, Any]:
    """The machine, its tier and model choice, the context buffer, and the peers."""
    import llama_cpp

    hw = detect_hardware()
    registry = Registry(settings.resolved_models_dir)
    name = cpu_model()
    try:
        chosen = select_model("auto", registry, hw)
        choice = {"size": chosen.size, "model": chosen.spec.name, "reason": chosen.reason}
    except Exception as exc:  # no model installed: the report says so
        choice = {"size": None, "model": None, "reason": str(exc)}
    return {
        "cpu": name,
        "cpu_ghz": cpu_ghz(name),
        "cores_physical": hw.cpu_cores,
        "cores_logical": psutil.cpu_count(logical=True),
        "ram_gb": hw.ram_total_gb,
        "ram_available_gb": hw.ram_available_gb,
        "gpus": [{"name": g.name, "vram_gb": round(g.vram_total_mb / 1024, 1)} for g in hw.gpus],
        "gpu_offload_supported": hw.gpu_offload_supported,
        "describe": hw.describe(),
        "tier": system_tier(hw),
        "chosen_model": choice,
        "installed_sizes": registry.installed(),
        "load_average": [round(x, 2) for x in psutil.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "companion": __version__,
        "peers": {
            "llama_cpp_python": {"present": True, "version": llama_cpp.__version__},
            "llama_server": llama_server(),
        },
    }
