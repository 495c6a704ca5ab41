"""Real signals at every write step and at random moments: does the next command restore the tree?

    python benchmarks/bench_crash.py [--random 10] [--seed 0]

For each group — apply, revert, `apply --force` over the user's own loss files, `apply
--adopt` over a hand-made patch (all on an MMSeg 1.2.2 checkout, `--heads FCNHead`) — and each
signal (SIGKILL, SIGTERM, SIGINT), the `rewardpatch` command runs as a child process and is
stopped by a real signal:

- at every write step: REWARDPATCH_FAULT=write:K:<signal> makes the process send the signal
  to itself just before its K-th step (faults.py), for K = 1 .. the steps of a clean run;
- at random moments: the benchmark sends the signal from outside after a delay drawn
  uniformly between 0 and the clean run's duration (start-up and planning included).

Then what the next apply or revert does first runs (journal.exclusive: it rolls back an
unfinished run; the read-only verbs only report one), and `rewardpatch check`.
A run is consistent when the tree is then byte-identical to the tree before or to the fully
patched one (every file and folder under mmseg/, .rewardpatch/ and the root: no stray
file), no lock or journal is left, and the stopped process printed no traceback and exited
with 0 or its signal's code. Writes benchmarks/results/crash.json. About 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TypedDict

from machine import describe, one_line

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import copy_checkout  # noqa: E402 - the tests' own fixtures build the trees
from test_adopt import follow_the_recipe  # noqa: E402
from test_backups import commit_hand_made_files  # noqa: E402
from test_crash_safety import restore, snapshot  # noqa: E402

from rewardpatch import faults, journal  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "crash.json"


class GroupResult(TypedDict):
    """One group's record in crash.json: its clean run, then each signal's outcomes."""

    write_steps: int
    clean_run_seconds: float
    signals: dict[str, dict[str, object]]
SIGNALS = {"SIGKILL": "kill", "SIGTERM": "term", "SIGINT": "int"}


def _as_from_a_terminal() -> None:
    """The dispositions a command typed in a terminal starts with: this benchmark may itself
    run in the background, where SIGINT is ignored and its children inherit that."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def rewardpatch(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rewardpatch", *args], env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_as_from_a_terminal,
    )


def finish(process: subprocess.Popen) -> tuple[int, str]:
    _, err = process.communicate(timeout=600)
    return process.returncode, err


def prepare(group: str, tree: Path) -> list[str]:
    """Bring `tree` to the state before the group's command; the command's arguments."""
    if group == "apply":
        return ["apply", str(tree), "--heads", "FCNHead"]
    if group == "revert":
        code, err = finish(rewardpatch("apply", str(tree), "--heads", "FCNHead"))
        assert code == 0, err
        return ["revert", str(tree)]
    if group == "apply --force":
        commit_hand_made_files(tree)
        return ["apply", str(tree), "--heads", "FCNHead", "--force"]
    if group == "apply --adopt":
        follow_the_recipe(tree)
        return ["apply", str(tree), "--adopt"]
    raise ValueError(group)


def judge(tree: Path, before: dict, after: dict, code: int, err: str, signum: int) -> dict:
    with journal.exclusive(tree):  # what the next writer does first
        pass
    checked, check_err = finish(rewardpatch("check", str(tree)))
    state = snapshot(tree)
    left = [n for n in (journal.LOCK_NAME, journal.JOURNAL_NAME, journal.JOURNAL_TEMP) if (tree / n).exists()]
    outcome = "before" if state == before else "after" if state == after else "neither"
    traceback = "Traceback" in err or "Traceback" in check_err
    codes = {0, -signum, 128 + signum}
    consistent = outcome != "neither" and not left and not traceback and code in codes
    row = {"consistent": consistent, "outcome": outcome, "code": code, "traceback": traceback, "left": left,
           "check": checked}
    return row if consistent else {**row, "stderr": (err + check_err)[-1200:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", type=int, default=10, help="random moments per group and signal")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--groups", default="apply,revert,apply --force,apply --adopt")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    machine = describe()
    groups = {}
    failures = []
    with tempfile.TemporaryDirectory() as scratch:
        for group in args.groups.split(","):
            tree = copy_checkout("1.2.2", Path(scratch) / group.replace(" ", "_").replace("-", ""))
            command = prepare(group, tree)
            before = snapshot(tree)
            started = time.perf_counter()
            code, err = finish(rewardpatch(*command))
            duration = time.perf_counter() - started
            assert code == 0, err
            after = snapshot(tree)

            restore(tree, before)
            _count_steps(tree, command)
            steps = faults.steps("write")
            restore(tree, before)
            result: GroupResult = {"write_steps": steps, "clean_run_seconds": round(duration, 2), "signals": {}}
            for name, mode in SIGNALS.items():
                signum = getattr(signal, name)
                rows = []
                for step in range(1, steps + 1):
                    restore(tree, before)
                    code, err = finish(rewardpatch(*command, env={"REWARDPATCH_FAULT": f"write:{step}:{mode}"}))
                    rows.append({"at": f"step {step}", **judge(tree, before, after, code, err, signum)})
                for _ in range(args.random):
                    restore(tree, before)
                    delay = rng.uniform(0, duration)
                    process = rewardpatch(*command)
                    time.sleep(delay)
                    process.send_signal(signum)
                    code, err = finish(process)
                    rows.append({"at": f"{delay:.3f} s", **judge(tree, before, after, code, err, signum)})
                at_steps = [r for r in rows if r["at"].startswith("step")]
                at_random = [r for r in rows if not r["at"].startswith("step")]
                result["signals"][name] = {
                    "every_step": f"{sum(r['consistent'] for r in at_steps)}/{len(at_steps)}",
                    "random_moments": f"{sum(r['consistent'] for r in at_random)}/{len(at_random)}",
                    "outcomes": {o: sum(r["outcome"] == o for r in rows) for o in ("before", "after", "neither")},
                    "tracebacks": sum(r["traceback"] for r in rows),
                }
                failures += [{"group": group, "signal": name, **r} for r in rows if not r["consistent"]]
                print(f"{group:<15} {name:<8} every step {result['signals'][name]['every_step']:>7}  "
                      f"random {result['signals'][name]['random_moments']:>6}", flush=True)
            groups[group] = result
            shutil.rmtree(tree)
    report = {"machine": machine, "seed": args.seed, "groups": groups, "inconsistent": failures}
    RESULT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{one_line(machine)}; {len(failures)} inconsistent runs; written to {RESULT.relative_to(ROOT)}")
    return 1 if failures else 0


def _count_steps(tree: Path, command: list[str]) -> None:
    """Run the command in this process once, so that faults.steps counts its write steps."""
    from rewardpatch.cli import main as cli

    assert cli(command) == 0


if __name__ == "__main__":
    sys.exit(main())
