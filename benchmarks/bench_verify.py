"""Wall time of the default `rewardpatch verify` on the patched MMSeg 1.2.2 checkout.

Target on a 2-core CPU machine: <= 120 s for all compatible heads and the fine-tune.

    .venv/bin/python benchmarks/bench_verify.py [--device cpu|cuda] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
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
from rewardpatch.planner import plan_apply  # noqa: E402
from rewardpatch.tree import MMSegTree  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import shutil

    times, reports = [], []
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "mmsegmentation"
        shutil.copytree(pristine("1.2.2"), tree, symlinks=True)
        plan_apply(MMSegTree.open(tree)).execute()
        for run in range(args.repeats):
            report = Path(scratch) / f"report{run}.json"
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "rewardpatch", "verify", str(tree), "--device", args.device,
                            "--workdir", str(Path(scratch) / "work"), "--report", str(report)],
                           check=True, capture_output=True)
            times.append(time.perf_counter() - start)
            reports.append(json.loads(report.read_text()))
    last = reports[-1]
    machine = describe(last.get("gpu"))
    result = {
        "benchmark": "default rewardpatch verify, MMSeg 1.2.2, 27 heads + fine-tune",
        "device": last["device"], "machine": machine, "median_s": round(statistics.median(times), 1),
        "runs_s": [round(t, 1) for t in times], "target_s": 120,
        "heads_s": round(sum(h["seconds"] for h in last["heads"]), 1),
        "finetune_s": last["finetune"]["seconds"],
        "dataset_miou_before": last["finetune"]["dataset_miou_before"],
        "dataset_miou_after": last["finetune"]["dataset_miou_after"],
        "reward_cfg": last["finetune"]["reward_cfg"], "all_ok": all(r["ok"] for r in reports),
    }
    out = HERE / "results" / f"verify_{last['device']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"rewardpatch verify (27 heads + fine-tune) on {last['device']}: median {result['median_s']} s "
          f"of {args.repeats} (target <= 120 s; {one_line(machine)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
