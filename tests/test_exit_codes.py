"""The documented exit codes hold however the CLI is run, after Ctrl-C and without the stack."""

import os
import signal
import sys
import types

import pytest

from conftest import click_runner_cli, git_status, one_line_error, run_cli
from rewardpatch.cli import cli

HEADS = "mmseg/models/decode_heads"


def snapshot(tree):
    return {p.relative_to(tree): p.read_bytes() for p in tree.rglob("*") if p.is_file() and ".git" not in p.parts}


def test_click_runner_gets_0_on_success(pristine):
    assert click_runner_cli("list-heads", pristine("1.2.2")).exit_code == 0


def test_click_runner_gets_1_when_a_check_fails(pristine):
    result = click_runner_cli("check", pristine("1.2.2"))
    assert result.exit_code == 1
    assert "not patched" in result.stderr


def test_click_runner_gets_1_with_one_line_when_the_tree_refuses(tree):
    (tree / "mmseg/models/losses/iou_metric_loss.py").write_text("# mine\n")
    result = click_runner_cli("apply", tree)
    assert result.exit_code == 1
    assert "already exists" in one_line_error(result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("args", [["check", "/no/such/tree"], ["apply", ".", "--frobnicate"], ["no-such-verb"]])
def test_click_runner_gets_2_with_one_line_for_usage_and_input_errors(args):
    result = click_runner_cli(*args)
    assert result.exit_code == 2
    assert one_line_error(result.stderr).startswith("rewardpatch: error: ")


def test_standalone_mode_exits_with_the_documented_code(pristine, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["check", str(pristine("1.2.2"))], standalone_mode=True)
    assert exited.value.code == 1


def test_without_standalone_mode_the_code_is_returned(pristine, capsys):
    assert cli.main(["check", str(pristine("1.2.2"))], standalone_mode=False) == 1
    assert cli.main(["list-heads", str(pristine("1.2.2"))], standalone_mode=False) == 0


@pytest.fixture(autouse=True)
def _signals(terminal_signals):
    pass


def interrupt_at(monkeypatch, step, mode="int"):
    """A real signal (SIGINT by default) sent to this process at the writer's `step`-th step."""
    monkeypatch.setenv("REWARDPATCH_FAULT", f"write:{step}:{mode}")


def test_ctrl_c_during_apply_rolls_back_and_exits_130(capsys, tree, monkeypatch):
    before = snapshot(tree)
    interrupt_at(monkeypatch, 5)
    code, _, err = run_cli(capsys, "apply", tree)
    assert code == 130
    assert "interrupted (SIGINT) while writing" in one_line_error(err)
    assert "the tree was left unchanged" in err
    assert snapshot(tree) == before
    assert git_status(tree) == ""


@pytest.mark.parametrize("mode, code", [("term", 143), ("hup", 129)])
def test_sigterm_and_sighup_roll_back_like_ctrl_c(capsys, tree, monkeypatch, mode, code):
    before = snapshot(tree)
    interrupt_at(monkeypatch, 30, mode)  # among the renames
    exit_code, _, err = run_cli(capsys, "apply", tree)
    assert exit_code == code
    assert f"interrupted (SIG{mode.upper()}) while writing" in one_line_error(err)
    assert snapshot(tree) == before


def test_ctrl_c_during_revert_rolls_back_and_exits_130(capsys, tree, monkeypatch):
    run_cli(capsys, "apply", tree)
    before = snapshot(tree)
    interrupt_at(monkeypatch, 3)
    code, _, err = run_cli(capsys, "revert", tree)
    assert code == 130
    assert "the tree was left unchanged" in one_line_error(err)
    assert snapshot(tree) == before


def test_more_signals_cannot_interrupt_the_rollback(capsys, tree, monkeypatch):
    """Ctrl-C, then Ctrl-C and SIGTERM at every step of the rollback: it completes, once."""
    import rewardpatch.faults

    real_step = rewardpatch.faults.step
    steps, restores = [], []

    def step(phase, what):
        steps.append(what)
        if len(steps) == 50:  # among the renames: the run rolls back
            os.kill(os.getpid(), signal.SIGINT)
        elif what.startswith("restore "):  # at every step of putting files back
            restores.append(what)
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(phase, what)

    monkeypatch.setattr(rewardpatch.faults, "step", step)
    before = snapshot(tree)
    # Python's own handler, whatever the test runner inherited: the run must leave it as it found it
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code, _, err = run_cli(capsys, "apply", tree)
        restored = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert code == 130
    assert "the tree was left unchanged" in one_line_error(err)
    assert len(restores) > 5
    assert restored is signal.default_int_handler
    assert snapshot(tree) == before
    assert git_status(tree) == ""


def test_ctrl_c_through_the_click_runner_exits_130_too(tree, monkeypatch):
    interrupt_at(monkeypatch, 3)
    result = click_runner_cli("apply", tree)
    assert result.exit_code == 130
    assert git_status(tree) == ""


@pytest.mark.parametrize("verb, args, module", [
    # config reads a config with mmengine, or with mmcv 1.x's Config where mmengine is missing
    ("config", ["src.py", "--tree", "tree", "-o", "out.py"], "mmengine or mmcv"),
    ("config", ["src.py", "--tree", "tree", "-o", "out.py"], "torch"),
    ("verify", ["tree"], "torch"),
    ("verify", ["tree"], "mmcv"),
])
def test_config_and_verify_without_the_stack_end_in_one_line_naming_the_package(
    capsys, monkeypatch, verb, args, module
):
    for other in ("torch", "mmengine", "mmcv"):  # present or not on this machine, only `module` is missing
        monkeypatch.setitem(sys.modules, other, types.ModuleType(other))
    for missing in module.split(" or "):
        monkeypatch.setitem(sys.modules, missing, None)  # `import missing` now fails
    code, _, err = run_cli(capsys, verb, *args)
    assert code == 2
    assert one_line_error(err).startswith(f"rewardpatch: error: {verb} needs {module}, which cannot be imported")


def test_a_signal_landing_on_another_thread_still_rolls_back(capsys, tree, monkeypatch):
    """torch and gitpython keep threads; the kernel may hand a process-wide signal to any of them."""
    import threading

    stop = threading.Event()
    waiting = threading.Thread(target=stop.wait, daemon=True)
    waiting.start()
    before = snapshot(tree)
    try:
        for step in (2, 40, 60):
            interrupt_at(monkeypatch, step, "term")
            code, _, err = run_cli(capsys, "apply", tree)
            assert code == 143 and "the tree was left unchanged" in one_line_error(err)
            assert snapshot(tree) == before
    finally:
        stop.set()


def test_ctrl_c_wrapped_by_python_in_another_error_is_an_interrupt_too(capsys, tree, monkeypatch):
    """Ctrl-C landing in a class body's __set_name__ (libcst's nodes, imported on first use)
    reaches the CLI as a RuntimeError caused by it."""
    import rewardpatch.engine

    def interrupted_import(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise RuntimeError("Error calling __set_name__ on 'Field' instance") from exc

    monkeypatch.setattr(rewardpatch.engine, "plan_apply", interrupted_import)
    code, _, err = run_cli(capsys, "apply", tree)
    assert code == 130
    assert one_line_error(err) == "rewardpatch: error: interrupted (SIGINT)"
