"""Wall time of the patch engine's verbs on the MMSeg 1.2.2 checkout (median of 5).

Each verb runs as the user runs it, `rewardpatch <verb>` in a fresh process, so the
times include interpreter start-up and imports.

    .venv/bin/python benchmarks/bench_patch.py          (or: make bench)

Targets on a 2-core machine: list-heads <= 1 s, apply (all heads) <= 2 s, check <= 1.5 s,
revert <= 1 s.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from machine import describe, one_line  # noqa: E402

from rewardpatch.checkout import pristine  # noqa: E402

TARGETS = {"list-heads": 1.0, "apply": 2.0, "check": 1.5, "revert": 1.0}
REPEATS = 5


def timed(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rewardpatch", *args], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    source = pristine("1.2.2")
    runs: dict[str, list[float]] = {verb: [] for verb in TARGETS}
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "mmsegmentation"
        shutil.copytree(source, tree, symlinks=True)
        for _ in range(REPEATS):
            runs["list-heads"].append(timed("list-heads", str(tree)))
            runs["apply"].append(timed("apply", str(tree)))
            runs["check"].append(timed("check", str(tree)))
            runs["revert"].append(timed("revert", str(tree)))
    machine = describe()
    rows = {
        verb: {"median_s": round(statistics.median(times), 3), "runs_s": [round(t, 3) for t in times],
               "target_s": TARGETS[verb], "met": statistics.median(times) <= TARGETS[verb]}
        for verb, times in runs.items()
    }
    result = {"benchmark": "patch engine verbs on MMSeg 1.2.2 (27 heads)", "machine": machine, "results": rows}
    out = HERE / "results" / "patch.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"rewardpatch verbs on the MMSeg 1.2.2 checkout, median of {REPEATS} ({one_line(machine)})")
    for verb, row in rows.items():
        print(
            f"  {verb:<11}{row['median_s']:>7.2f} s   target <= {row['target_s']} s   "
            f"{'met' if row['met'] else 'MISSED'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
