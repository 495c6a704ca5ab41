"""What a benchmark ran on: CPU, cores, GPU, library versions and the date."""

from __future__ import annotations

import datetime
import os
import platform
from importlib import metadata


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe(gpu: str | None = None) -> dict:
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "gpu": gpu,
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in ("torch", "mmcv", "mmengine", "mmsegmentation", "libcst", "numpy")},
    }


def one_line(machine: dict) -> str:
    where = machine["gpu"] or f"{machine['cores']}-core {machine['cpu']}"
    return f"{where}, {machine['date']}"
