"""A crash, a signal or a full disk at any write step leaves a tree the next command restores.

The writer's fault-injection seam (rewardpatch/faults.py) stops a run at its k-th step.
For every step of apply, revert, `apply --force`, `apply --adopt` and the reverts of both,
and for each way of stopping — a crash (nothing of rewardpatch runs after it, as after
SIGKILL), SIGINT, SIGTERM, a full disk — the tree after the next command is byte-identical
to the tree before the run or to the fully patched one, with no stray file, and the files
`--force` and `--adopt` kept stay reachable. No timing is involved: the steps are counted.
benchmarks/bench_crash.py does the same with real signals from outside, in child processes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import git_status, one_line_error, run_cli, start_cli
from rewardpatch import faults, journal
from rewardpatch.errors import Interrupted, StateError
from rewardpatch.planning import ApplyOptions, plan_apply, plan_revert
from rewardpatch.tree import MMSegTree
from test_adopt import follow_the_recipe
from test_backups import commit_hand_made_files

MODES = ("crash", "int", "term", "enospc")


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file and folder where rewardpatch writes (None for a folder); the root's own files."""
    state: dict[str, bytes | None] = {}
    for path in root.iterdir():
        if path.is_file():
            state[path.name] = path.read_bytes()
    for top in ("mmseg", ".rewardpatch", journal.RECOVERY_COPIES_DIR):
        if (root / top).is_dir():
            state[top] = None
        for path in (root / top).rglob("*") if (root / top).exists() else ():
            state[path.relative_to(root).as_posix()] = path.read_bytes() if path.is_file() else None
    return state


def restore(root: Path, state: dict[str, bytes | None]) -> None:
    now = snapshot(root)
    for name in sorted(set(now) - set(state), reverse=True):  # the deepest first
        path = root / name
        path.rmdir() if path.is_dir() else path.unlink()
    for name, data in sorted(state.items()):
        path = root / name
        if data is None:
            path.mkdir(exist_ok=True)
        elif now.get(name) != data:
            path.write_bytes(data)
    assert snapshot(root) == state


def _patched(tree, **options):
    plan_apply(MMSegTree.open(tree), ApplyOptions(heads=("FCNHead",), **options)).execute()
    return tree


# name -> (prepare the tree, the plan of the run to stop)
SCENARIOS = {
    "apply": (lambda tree: tree, lambda t: plan_apply(t, ApplyOptions(heads=("FCNHead",)))),
    "revert": (_patched, plan_revert),
    "apply --force": (
        lambda tree: commit_hand_made_files(tree) or tree,
        lambda t: plan_apply(t, ApplyOptions(heads=("FCNHead",), force=True)),
    ),
    "revert after --force": (
        lambda tree: _patched(commit_hand_made_files(tree) or tree, force=True),
        lambda t: plan_revert(t),
    ),
    "apply --adopt": (lambda tree: follow_the_recipe(tree) or tree, lambda t: plan_apply(t, ApplyOptions(adopt=True))),
    "revert after --adopt": (lambda tree: _patched(follow_the_recipe(tree) or tree, adopt=True), plan_revert),
}


def run(tree: MMSegTree, plan, verb: str = "apply") -> None:
    with journal.exclusive(tree.root):
        plan.execute(verb)


def recover(root: Path) -> journal.Recovery | None:
    """What the next writer does first (readers write nothing): roll an interrupted run back."""
    with journal.exclusive(root) as recovery:
        return recovery


@pytest.fixture
def no_fault(monkeypatch, terminal_signals):
    monkeypatch.delenv(faults.ENV, raising=False)
    return monkeypatch


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_write_step_stopped_every_way_leaves_a_tree_the_next_command_restores(tree, no_fault, scenario):
    prepare, planned = SCENARIOS[scenario]
    prepare(tree)
    mmseg = MMSegTree.open(tree)
    plan = planned(mmseg)
    before = snapshot(tree)
    run(mmseg, plan)
    after, steps = snapshot(tree), faults.steps("write")
    assert after != before and steps >= 10
    outcomes = {}
    for mode in MODES:
        for step in range(1, steps + 1):
            restore(tree, before)
            no_fault.setenv(faults.ENV, f"write:{step}:{mode}")
            expected = {"crash": faults.Crash, "int": Interrupted, "term": Interrupted, "enospc": StateError}[mode]
            with pytest.raises(expected) as stopped:
                run(mmseg, plan)
            no_fault.delenv(faults.ENV)
            if mode != "crash":  # rolled back by the run itself, with one line saying so
                assert "the tree was left unchanged" in str(stopped.value)
                assert snapshot(tree) == before, (mode, step)
            recovery = recover(tree)  # what the next writer does first
            assert (recovery is not None) == (mode == "crash" and step > 1), (mode, step)  # 1: the journal
            state = snapshot(tree)
            assert state in (before, after), (mode, step, sorted(set(state) ^ set(before)))
            outcomes[mode, step] = "before" if state == before else "after"
    assert set(outcomes.values()) == {"before"}  # a crash before the commit point is rolled back


def test_a_crash_during_the_recovery_is_recovered_by_the_next_command(tree, no_fault):
    mmseg = MMSegTree.open(tree)
    plan = plan_apply(mmseg, ApplyOptions(heads=("FCNHead",)))
    before = snapshot(tree)
    run(mmseg, plan)
    steps = faults.steps("write")
    middle = steps - 4  # among the renames: files to put back and to remove
    restore(tree, before)
    no_fault.setenv(faults.ENV, f"write:{middle}:crash")
    with pytest.raises(faults.Crash):
        run(mmseg, plan)
    crashed = snapshot(tree)
    no_fault.delenv(faults.ENV)
    assert recover(tree) is not None
    recovery_steps = faults.steps("recover")
    assert recovery_steps >= 5
    for step in range(1, recovery_steps + 1):
        restore(tree, crashed)
        no_fault.setenv(faults.ENV, f"recover:{step}:crash")
        with pytest.raises(faults.Crash):
            recover(tree)
        no_fault.delenv(faults.ENV)
        recover(tree)
        assert snapshot(tree) == before, step


def apply_steps(capsys, tree: Path, tmp_path: Path) -> int:
    """The write steps of a whole apply of `tree` (counted on a copy): the journal, a temporary
    file per change, a rename per change, the commit, last. The number grows with the files a
    release inserts: a test that stops apply among its renames counts back from it."""
    copy = tmp_path / "counted"
    shutil.copytree(tree, copy, symlinks=True)
    assert run_cli(capsys, "apply", copy)[0] == 0
    return faults.steps("write")


def test_readers_report_the_interrupted_run_write_nothing_and_apply_then_completes(capsys, tree, no_fault, tmp_path):
    among_the_renames = apply_steps(capsys, tree, tmp_path) - 30
    no_fault.setenv(faults.ENV, f"write:{among_the_renames}:crash")
    with pytest.raises(faults.Crash):
        run_cli(capsys, "apply", tree)
    no_fault.delenv(faults.ENV)
    assert (tree / journal.JOURNAL_NAME).exists()
    crashed = snapshot(tree)
    code, _, err = run_cli(capsys, "check", tree)
    assert code == 1
    assert "an interrupted apply" in err and "the next apply or revert rolls back" in err
    code, out, err = run_cli(capsys, "list-heads", tree)
    assert code == 0 and "an interrupted apply" in err
    assert " 0 patched" in out  # read as the rollback will leave it: the half-written files do not count
    code, out, err = run_cli(capsys, "apply", tree, "--dry-run")
    assert code == 0 and "an interrupted apply" in err and "+++ b/.rewardpatch.json" in out
    assert snapshot(tree) == crashed  # readers wrote nothing
    code, _, err = run_cli(capsys, "apply", tree)
    assert code == 0 and "rolled back" in err
    assert run_cli(capsys, "check", tree)[0] == 0


@pytest.mark.parametrize("at", ["the journal", "a temporary file", "a rename", "the commit"])
def test_a_killed_process_leaves_its_lock_and_journal_and_the_next_command_recovers(capsys, tree, no_fault, tmp_path,
                                                                                    at):
    """os._exit at a step: no Python code runs after it, the kernel lets go of the lock."""
    steps = apply_steps(capsys, tree, tmp_path)
    step = {"the journal": 2, "a temporary file": 20, "a rename": steps - 20, "the commit": steps}[at]
    before = snapshot(tree)
    killed = start_cli("apply", tree, env={faults.ENV: f"write:{step}:exit"})
    killed.communicate(timeout=300)
    assert killed.returncode == 137
    assert (tree / journal.LOCK_NAME).exists()
    assert (tree / journal.JOURNAL_NAME).exists() or (tree / journal.JOURNAL_TEMP).exists()
    again = start_cli("apply", tree)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "an interrupted apply" in err
    checked = start_cli("check", tree)
    assert checked.communicate(timeout=300)[0].startswith("ok:")
    assert not (tree / journal.LOCK_NAME).exists() and not (tree / journal.JOURNAL_NAME).exists()
    reverted = start_cli("revert", tree)
    reverted.communicate(timeout=300)
    assert reverted.returncode == 0
    assert snapshot(tree) == before
    assert git_status(tree) == ""


def test_a_second_writer_refuses_at_once_naming_the_holder(capsys, tree):
    before = snapshot(tree)
    with journal.locked(tree):
        for verb in ("apply", "revert"):
            code, _, err = run_cli(capsys, verb, tree)
            assert code == 1
            line = one_line_error(err)
            assert f"(pid {os.getpid()}) is changing" in line and journal.LOCK_NAME in line
        code, _, err = run_cli(capsys, "check", tree)  # a reader goes on: nothing was written yet
        assert code == 1 and "not patched" in err
    assert snapshot(tree) == before
    assert not (tree / journal.LOCK_NAME).exists()


def test_a_lock_file_left_behind_by_a_dead_process_is_taken_over(capsys, tree):
    (tree / journal.LOCK_NAME).write_text("999999\n")  # no process holds it
    assert run_cli(capsys, "apply", tree, "--heads", "FCNHead")[0] == 0
    assert not (tree / journal.LOCK_NAME).exists()


@pytest.mark.parametrize("first, second", [("FCNHead", "ASPPHead"), ("ASPPHead", "revert")])
def test_two_writers_racing_never_lose_a_change(tree, first, second):
    """Started together, 10 times per pair: each exits 0, or 1 naming the holder; the tree
    ends as the runs that exited 0, in some order, would leave it."""
    pristine = snapshot(tree)
    plan_apply(MMSegTree.open(tree), ApplyOptions(heads=("FCNHead",))).execute()
    patched = snapshot(tree)
    for trial in range(10):
        restore(tree, patched)
        commands = [["apply", tree, "--heads", first]]
        commands.append(["revert", tree] if second == "revert" else ["apply", tree, "--heads", second])
        processes = [start_cli(*args) for args in commands]
        results = [(p.wait(timeout=300), p.stderr.read()) for p in processes]
        for p in processes:
            p.stdout.close(), p.stderr.close()
        for code, err in results:
            assert code in (0, 1), err
            if code == 1:
                assert "is changing" in one_line_error(err)
        won = [args for args, (code, _) in zip(commands, results) if code == 0]
        assert won, results
        if (tree / ".rewardpatch.json").exists():
            checked = start_cli("check", tree, "--json")
            out, _ = checked.communicate(timeout=300)
            assert checked.returncode == 0, out
            heads = set(json.loads(out)["heads"])
            applied = {args[-1] for args in won if args[0] == "apply"}
            reverted_first = any(args[0] == "revert" for args in won)  # the apply that won came after it
            assert heads == applied | (set() if reverted_first else {"FCNHead"}), (trial, results)
        else:
            assert any(args[0] == "revert" for args in won)
            assert snapshot(tree) == pristine, trial
        assert not (tree / journal.LOCK_NAME).exists()


def test_a_patched_tree_whose_manifest_was_deleted_is_recorded_again_and_reverts_clean(capsys, tree):
    assert run_cli(capsys, "apply", tree)[0] == 0
    (tree / ".rewardpatch.json").unlink()
    code, _, err = run_cli(capsys, "check", tree)
    assert code == 1 and "not patched" in err
    code, out, _ = run_cli(capsys, "apply", tree)
    assert code == 0 and "recorded again" in out
    assert run_cli(capsys, "check", tree)[0] == 0
    assert run_cli(capsys, "revert", tree)[0] == 0
    assert git_status(tree) == ""
