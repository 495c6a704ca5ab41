"""CI from nothing: a fresh clone, empty caches, `CI=true .ci/run`, timed phase by phase.

    python benchmarks/bench_cold_ci.py

Clones this repository's HEAD into a temporary directory and runs `.ci/run` there with
XDG_CACHE_HOME pointing at an empty directory, so pip downloads everything again and both
mmcv builds (mmcv 2.1.0 for the 1.x stack, mmcv-full 1.7.2 for the 0.x one, mmcv-full 1.3.7
for DAFormer's) start from their sdists, and the venvs of the other Pythons and of the torch
matrix are built, as on a fresh CI machine. Each output line is timestamped as it arrives;
the phases are read from the Makefile's own messages. Writes
benchmarks/results/ci_cold.json. Takes 30-60 minutes on 2 cores; not part of `make bench`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from machine import describe

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "benchmarks" / "results" / "ci_cold.json"
# the first output line containing each marker starts the phase of that name
MARKERS = [
    ("1.x stack: venv, torch", ".venv/bin/python -m pip install --quiet --upgrade wheel"),
    ("1.x stack: mmcv 2.1.0 build", "building mmcv 2.1.0"),
    ("1.x stack: install", '.venv/.mmcv-wheel)"'),
    ("0.x stack: venv, torch", ".venv-mmseg0/bin/python -m pip install --quiet --upgrade wheel"),
    ("0.x stack: mmcv-full 1.7.2 build", "building mmcv-full 1.7.2"),
    ("0.x stack: install", '.venv-mmseg0/.mmcv-wheel)"'),
    ("Python 3.8-3.13 venvs", "setup-pythons: a venv with rewardpatch"),
    ("torch matrix venvs", ".venv-torch/3.7-1.8.1: Python"),
    ("DAFormer stack: venv, torch", ".venv-daformer/bin/python -m pip install --quiet wheel"),
    ("DAFormer stack: mmcv-full 1.3.7 build", "building mmcv-full 1.3.7"),
    ("DAFormer stack: install", '.venv-daformer/.mmcv-wheel)"'),
    ("torch matrix venvs, the rest", ".venv-torch/3.8-1.7.1: DAFormer's stack"),
    ("tests", "-m pytest"),
]


def size_of(path: Path) -> int:
    """Bytes on disk under path (du: links not followed, hard links once)."""
    done = subprocess.run(["du", "-s", "--block-size=1", str(path)], capture_output=True, text=True)
    return int(done.stdout.split()[0]) if done.returncode == 0 and done.stdout else 0


class DiskWatch(threading.Thread):
    """The most disk the run has taken at once: the file system's use, sampled every 2 s.

    That includes what else runs on the machine, so it is an upper bound; the folders' own
    sizes at the end are measured separately."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path, self.start_used = path, shutil.disk_usage(path).used
        self.peak, self.stop = 0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(2.0):
            self.peak = max(self.peak, shutil.disk_usage(self.path).used - self.start_used)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rewardpatch-cold-ci-") as scratch:
        clone, cache = Path(scratch) / "clone", Path(scratch) / "cache"
        cache.mkdir()
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
        env = {k: v for k, v in os.environ.items() if k not in ("REWARDPATCH_CACHE", "PIP_CACHE_DIR", "VIRTUAL_ENV")}
        env.update(CI="true", XDG_CACHE_HOME=str(cache))
        watch = DiskWatch(Path(scratch))
        watch.start()
        start = time.monotonic()
        lines: list[tuple[float, str]] = []
        process = subprocess.Popen([".ci/run"], cwd=clone, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        assert process.stdout is not None  # stdout=PIPE
        for line in process.stdout:
            lines.append((time.monotonic() - start, line.rstrip("\n")))
            sys.stdout.write(line)
        code = process.wait()
        total = time.monotonic() - start
        watch.stop.set()
        gib = 2.0 ** 30
        disk = {"clone_gib": round(size_of(clone) / gib, 2), "caches_gib": round(size_of(cache) / gib, 2),
                "peak_gib": round(watch.peak / gib, 2),
                "what": "clone: the venvs and the checkout; caches: XDG_CACHE_HOME (pip, built and "
                        "downloaded wheels, reference checkouts); peak: the file system's use above "
                        "its start, sampled every 2 s (tests' temporary folders included)"}
    starts = []
    for name, marker in MARKERS:
        found = next((t for t, line in lines if marker in line), None)
        if found is not None:
            starts.append((name, found))
    starts.sort(key=lambda item: item[1])
    phases = {name: round((starts[i + 1][1] if i + 1 < len(starts) else total) - at, 1)
              for i, (name, at) in enumerate(starts)}
    summary = next((line for _, line in reversed(lines) if " passed" in line or " failed" in line), None)
    result = {
        "machine": describe(),
        "commit": commit,
        "what": "fresh clone, empty XDG_CACHE_HOME (pip cache, mmcv wheels, reference checkouts), CI=true .ci/run",
        "returncode": code,
        "total_seconds": round(total, 1),
        "total_minutes": round(total / 60, 1),
        "phases_seconds": phases,
        "pytest_summary": summary,
        "disk": disk,
    }
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return code


if __name__ == "__main__":
    sys.exit(main())
