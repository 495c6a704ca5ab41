"""Wall time of the default `rewardpatch verify` on a patched reference checkout.

Target on a 2-core CPU machine: <= 120 s for all compatible heads and the fine-tune.

    .venv/bin/python benchmarks/bench_verify.py [--device cpu|cuda] [--repeats 3]
    .venv/bin/python benchmarks/bench_verify.py --mmseg 0.30.0 --python .venv-mmseg0/bin/python
    .venv/bin/python benchmarks/bench_verify.py --mmseg 0.16.0 --fork daformer_0x --python .venv-mmseg0/bin/python

Writes results/verify_<device>.json for 1.2.2, results/verify_<device>_mmseg<version>.json
for another release (verified by `--python`, the interpreter of that release's stack), with
`_<fork>` for a fork of tests/forks.py. A verify that fails is recorded too (its exit code,
the failing heads, the fine-tune's error), not raised.
"""

from __future__ import annotations

import argparse
import json
import os
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
from rewardpatch.planning import plan_apply  # noqa: E402
from rewardpatch.tree import MMSegTree  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mmseg", default="1.2.2", help="the reference checkout to patch and verify")
    parser.add_argument("--python", default=sys.executable, help="the interpreter of its stack")
    parser.add_argument("--fork", choices=["daformer_0x", "daformer_1x"],
                        help="edit the checkout into this fork of tests/forks.py first")
    args = parser.parse_args()
    import shutil

    times, reports, codes = [], [], []
    load_before = os.getloadavg()[0]  # a shared machine: other processes slow the runs
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "mmsegmentation"
        shutil.copytree(pristine(args.mmseg), tree, symlinks=True)
        if args.fork:
            sys.path.insert(0, str(HERE.parent / "tests"))
            import forks

            getattr(forks, args.fork)(tree)
        plan_apply(MMSegTree.open(tree)).execute()
        for run in range(args.repeats):
            report = Path(scratch) / f"report{run}.json"
            start = time.perf_counter()
            done = subprocess.run([args.python, "-m", "rewardpatch", "verify", str(tree), "--device", args.device,
                                   "--workdir", str(Path(scratch) / "work"), "--report", str(report)],
                                  capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            if not report.exists():
                raise SystemExit(f"verify wrote no report (exit {done.returncode}): {done.stderr[-2000:]}")
            codes.append(done.returncode)
            reports.append(json.loads(report.read_text()))
    last = reports[-1]
    fine = last["finetune"] or {}
    machine = describe(last.get("gpu"))
    heads = len(last["heads"])
    result = {
        "benchmark": f"default rewardpatch verify, MMSeg {args.mmseg}{f' ({args.fork})' if args.fork else ''}, "
                     f"{heads} heads + fine-tune",
        "device": last["device"], "machine": machine, "median_s": round(statistics.median(times), 1),
        "runs_s": [round(t, 1) for t in times], "target_s": 120,
        "heads_s": round(sum(h["seconds"] for h in last["heads"]), 1),
        "finetune_s": fine.get("seconds"),
        "dataset_miou_before": fine.get("dataset_miou_before"),
        "dataset_miou_after": fine.get("dataset_miou_after"),
        "reward_cfg": fine.get("reward_cfg"), "all_ok": all(r["ok"] for r in reports),
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "notes": last.get("notes", []),
        "pixel_weight_heads": sum(1 for h in last["heads"] if h.get("pixel_weight")),
    }
    if not result["all_ok"]:
        result["exit_codes"] = codes
        result["failed_heads"] = {h["name"]: h["error"] for h in last["heads"] if not h["ok"]}
        result["error"] = last.get("error") or fine.get("error")
    if args.mmseg != "1.2.2":
        result["stack"] = subprocess.run([args.python, "-c", "import mmcv, torch; print('mmcv', mmcv.__version__, "
                                          "'torch', torch.__version__)"], capture_output=True, text=True).stdout.strip()
    suffix = ("" if args.mmseg == "1.2.2" else f"_mmseg{args.mmseg}") + (f"_{args.fork}" if args.fork else "")
    out = HERE / "results" / f"verify_{last['device']}{suffix}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"rewardpatch verify of MMSeg {args.mmseg} ({heads} heads + fine-tune) on {last['device']}: "
        f"median {result['median_s']} s "
        f"of {args.repeats} (target <= 120 s; {one_line(machine)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
