"""What a hostile tree can cost: list-heads on the worst input the bounds admit, and how fast
a signal ends it (issue 28).

The worst input: the MMSeg 1.2.2 checkout plus 16 stray modules in decode_heads/, each just
under treefs.MAX_SOURCE_BYTES of the most node-dense code that stays within
import_graph.MAX_NESTING (`x = 1 + 1 + ...`, 90 terms a line): 8 MiB, head_index.MAX_PACKAGE_BYTES.
Beside it, the plain checkout and a 50 MB stray file (never read). Each run is
`rewardpatch list-heads` in a fresh process, the three trees alternated, 3 rounds; peak RSS
from wait4(2). Then SIGTERM is sent 2 s into a run on the worst tree, 5 times: the time from
the signal to the process's exit, and its exit code (143 expected).

    .venv/bin/python benchmarks/bench_hostile.py
"""

from __future__ import annotations

import json
import os
import shutil
import signal
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
from rewardpatch.head_index import MAX_PACKAGE_BYTES  # noqa: E402
from rewardpatch.import_graph import MAX_NESTING  # noqa: E402
from rewardpatch.treefs import MAX_SOURCE_BYTES  # noqa: E402

HEADS = "mmseg/models/decode_heads"
ROUNDS = 3
SIGNALS = 5


def start(tree: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rewardpatch", "list-heads", str(tree)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run(tree: Path) -> tuple[float, float, int]:
    """(seconds, peak RSS in MB, exit code) of one list-heads."""
    began = time.perf_counter()
    process = start(tree)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - began, usage.ru_maxrss / 1024, process.returncode


def main() -> int:
    with tempfile.TemporaryDirectory() as scratch:
        trees = {}
        for name in ("plain", "dense 8 MiB", "50 MB file"):
            trees[name] = Path(scratch) / name.replace(" ", "_")
            shutil.copytree(pristine("1.2.2"), trees[name], symlinks=True)
        line = "x = " + " + ".join(["1"] * (MAX_NESTING - 10)) + "\n"
        body = line * (MAX_SOURCE_BYTES // len(line))
        for n in range(MAX_PACKAGE_BYTES // MAX_SOURCE_BYTES):
            (trees["dense 8 MiB"] / HEADS / f"scratch_{n}.py").write_text(body)
        with open(trees["50 MB file"] / HEADS / "huge.py", "wb") as handle:
            handle.write(b"x = 1\n" * (50_000_000 // 6))
        runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in trees}
        for _ in range(ROUNDS):
            for name, tree in trees.items():
                runs[name].append(run(tree))
        latencies, codes = [], []
        for _ in range(SIGNALS):
            process = start(trees["dense 8 MiB"])
            time.sleep(2.0)
            sent = time.perf_counter()
            process.send_signal(signal.SIGTERM)
            codes.append(process.wait())
            latencies.append(time.perf_counter() - sent)
    machine = describe()
    signalled = {"median_s": round(statistics.median(latencies), 3), "max_s": round(max(latencies), 3),
                 "exit_codes": codes}
    rows = {
        name: {"median_s": round(statistics.median(t for t, _, _ in rows), 2),
               "runs_s": [round(t, 2) for t, _, _ in rows],
               "peak_rss_mb": round(max(m for _, m, _ in rows)), "exit_codes": sorted({c for _, _, c in rows})}
        for name, rows in runs.items()
    }
    result = {
        "benchmark": "list-heads on hostile input the bounds admit (issue 28)",
        "bounds": {"max_source_bytes": MAX_SOURCE_BYTES, "max_nesting": MAX_NESTING,
                   "max_package_bytes": MAX_PACKAGE_BYTES},
        "machine": machine,
        "list_heads": rows,
        "sigterm_during_parsing": signalled,
    }
    out = HERE / "results" / "hostile.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"list-heads, median of {ROUNDS} alternated rounds ({one_line(machine)})")
    for name, row in rows.items():
        print(f"  {name:<12}{row['median_s']:>7.2f} s  peak {row['peak_rss_mb']:>5} MB  exit {row['exit_codes']}")
    print(f"  SIGTERM while parsing: exit after {signalled['median_s']} s (max {signalled['max_s']} s), codes {codes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
