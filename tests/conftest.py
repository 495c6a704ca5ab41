"""Fixtures: realistic MMSeg checkouts (PyPI sdist + configs, one git commit), cached on
disk after the first download, and the MMSeg stack for the tests that import a tree.

Tests that need the stack skip only outside CI (`CI` unset) when it is missing; in CI a
missing stack fails them. A session that executes no test fails too.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest
from click.testing import CliRunner

from rewardpatch import checkout
from rewardpatch.cli import cli, main
from rewardpatch.planning import plan_apply
from rewardpatch.tree import MMSegTree

IN_CI = bool(os.environ.get("CI"))
VERSIONS = ("1.0.0", "1.2.2")
STACK = ("torch", "mmengine", "mmcv.ops", "matplotlib")


def pytest_configure(config):
    """The journal key (journal.key_path) of this test session's own, in a folder of its own:
    the tests never write into the user's ~/.local/state, and every process they start
    (start_cli, benchmarks' children) shares it through the environment."""
    import tempfile

    os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="rewardpatch-state-")


def pytest_unconfigure(config):
    shutil.rmtree(os.environ.get("XDG_STATE_HOME", ""), ignore_errors=True)


# The fixtures that bring a stack (skipping outside CI, failing in CI without it). A test that
# requests one, directly or through another fixture (patched_tree, tree_modules, ...), is marked `stack`
# here; a test that needs a stack some other way (a venv of its module's own, torch imported
# in the test, getfixturevalue) carries the mark itself. `CI=true pytest -m "not stack"` in a
# venv without the stacks fails on any test that needs one and is not marked.
STACK_FIXTURES = ("stack", "python_0x")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(name in item.fixturenames for name in STACK_FIXTURES):
            item.add_marker(pytest.mark.stack)


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    passed = len(reporter.stats.get("passed", [])) if reporter else 0
    if exitstatus == 0 and passed == 0:
        print("\nno test was executed: that is a failure, not a pass", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _missing_stack() -> str | None:
    for name in STACK:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any failure means the stack is unusable
            return f"{name}: {exc}"
    return None


@pytest.fixture(scope="session")
def stack() -> None:
    missing = _missing_stack()
    if missing:
        if IN_CI:
            pytest.fail(f"the MMSeg stack is missing in CI ({missing})")
        pytest.skip(f"MMSeg stack not installed ({missing}); `make test` installs it")


@pytest.fixture(scope="session")
def python_0x() -> str:
    """The interpreter of the MMSeg 0.x stack (`make setup0`), which `make test` names in
    REWARDPATCH_MMSEG0_PYTHON. Missing: a skip outside CI, a failure in CI."""
    python = os.environ.get("REWARDPATCH_MMSEG0_PYTHON", "")
    problem = None
    if not python or not Path(python).is_file():
        problem = f"REWARDPATCH_MMSEG0_PYTHON={python!r} names no interpreter"
    else:
        probe = subprocess.run([python, "-c", "import mmcv.ops, mmcv.runner"], capture_output=True, text=True)
        if probe.returncode != 0:
            problem = f"{python} lacks mmcv-full with ops: {(probe.stderr.strip().splitlines() or ['?'])[-1]}"
    if problem:
        if IN_CI:
            pytest.fail(f"the MMSeg 0.x stack is missing in CI ({problem})")
        pytest.skip(f"MMSeg 0.x stack not available ({problem}); `make test` sets it up")
    return python


# The keys of verify's report and of its fine-tune result, the same for every MMSeg generation
# (report.py and the plot read them).
REPORT_KEYS = {
    "ok", "device", "gpu", "tree", "mmseg_version", "mode", "workdir", "notes", "heads", "finetune", "seconds", "plot",
}
HEAD_KEYS = {"name", "ok", "loss", "seconds", "error", "pixel_weight", "failed_at", "args"}
FINETUNE_KEYS = {
    "ok", "head", "ce_iters", "iters", "miou_tolerance", "world_size", "checkpoint", "miou_ce",
    "checkpoint_loads_weights_only", "load_from", "reward_cfg", "dataset_miou_before", "dataset_miou_after",
    "miou_curve", "reward_mean_first", "reward_mean_last", "reward_mean", "reward_greedy", "ce_loss",
    "reward_loss", "seconds", "device", "error",
}


@pytest.fixture(scope="session")
def pristine():
    """pristine(version) -> the cached, read-only checkout of that MMSeg version."""
    return checkout.pristine


def copy_checkout(version: str, dest: Path) -> Path:
    shutil.copytree(checkout.pristine(version), dest, symlinks=True)
    return dest


@pytest.fixture
def make_tree(tmp_path):
    """make_tree(version) -> a fresh, writable copy of the checkout (a git repo)."""

    def make(version: str = "1.2.2") -> Path:
        return copy_checkout(version, tmp_path / f"mmsegmentation-{version}")

    return make


@pytest.fixture
def tree(make_tree) -> Path:
    return make_tree("1.2.2")


def git_status(path: Path) -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=path, capture_output=True, text=True, check=True,
    ).stdout


@pytest.fixture(scope="session")
def patched_tree(tmp_path_factory, stack) -> Path:
    """A 1.2.2 checkout with every compatible head patched, first on sys.path.

    Tests that import mmseg in this process all go through this one tree, so that the
    MMSeg registries are built once, from it.
    """
    dest = copy_checkout("1.2.2", tmp_path_factory.mktemp("patched") / "mmsegmentation")
    plan_apply(MMSegTree.open(dest)).execute()
    sys.path.insert(0, str(dest))
    importlib.invalidate_caches()
    if "mmseg" in sys.modules:
        assert Path(cast(str, sys.modules["mmseg"].__file__)).is_relative_to(dest), "mmseg was imported too early"
    import mmseg.models  # noqa: F401 - registers every head, the reward ones included

    assert Path(cast(str, sys.modules["mmseg"].__file__)).is_relative_to(dest)
    return dest


@pytest.fixture(scope="module")
def tree_modules(patched_tree):
    """The modules under test, imported from the patched tree (tests of the templates)."""
    import torch as torch_
    from mmengine.structures import PixelData

    import mmseg.models.decode_heads.reward_decode_head as head_module
    import mmseg.models.losses.iou_metric_loss as rewards
    from mmseg.evaluation.metrics import IoUMetric
    from mmseg.models.losses import CrossEntropyLoss, CrossEntropyRewardLoss
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from template_modules import REWARD_MODULES, Modules

    class Namespace:
        pass

    ns = Namespace()
    ns.torch = torch_
    ns.MODELS = MODELS
    ns.rewards = rewards
    ns.head_module = head_module
    # each reward module by its name (a test replaces a name in the module that reads it),
    # and all of them read as one: tree_modules.estimator (template_modules.Modules)
    for stem in REWARD_MODULES:
        setattr(ns, stem, importlib.import_module(f"mmseg.models.losses.{stem}"))
    ns.estimator = Modules(getattr(ns, stem) for stem in REWARD_MODULES)
    ns.IoUMetric = IoUMetric
    ns.CrossEntropyLoss = CrossEntropyLoss
    ns.CrossEntropyRewardLoss = CrossEntropyRewardLoss

    def samples(gt):
        out = []
        for label in gt:
            sample = SegDataSample()
            sample.gt_sem_seg = PixelData(data=label[None])
            out.append(sample)
        return out

    ns.samples = samples
    return ns


def run_python(code: str, tree: Path, timeout: int = 600, python: str = sys.executable) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (this one's, or `python`) whose import path starts with `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [python, "-c", code], cwd=tree, env=env, capture_output=True, text=True, timeout=timeout
    )


# Running the CLI: every test goes through one of these three, all here.
REPO = Path(__file__).resolve().parents[1]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """Run the CLI in-process: (exit code, stdout, stderr). `capsys` is pytest's; None in a
    fixture wider than one test, where capsys cannot go (the output is captured here)."""
    if capsys is None:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
        return code, out.getvalue(), err.getvalue()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def start_cli(*args, cwd=None, python: str = sys.executable, path=(), env=None) -> subprocess.Popen:
    """`python -m rewardpatch ARGS` started in a fresh interpreter (this one's, or `python`: the
    0.x stack's), for what only another process shows: a kill, a lock held by another process,
    another interpreter. `path` goes on PYTHONPATH before this rewardpatch; `env` is added to
    this process's environment."""
    environ = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(map(str, [*path, REPO]))}
    return subprocess.Popen([python, "-m", "rewardpatch", *map(str, args)], cwd=cwd, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_cli_process(*args, timeout: float = 900, **kwargs) -> subprocess.CompletedProcess:
    """start_cli, waited for: the CompletedProcess (returncode, stdout, stderr)."""
    process = start_cli(*args, **kwargs)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def click_runner_cli(*args):
    """The CLI through click's CliRunner (what a user's own harness may do): click's Result."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(err: str) -> str:
    """The error a user sees: exactly one line, no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def terminal_signals():
    """SIGINT, SIGTERM and SIGHUP handled as the `rewardpatch` script handles them, whatever
    this process inherited (a background job starts with SIGINT ignored, and an ignored
    signal is dropped even while blocked); put back afterwards."""
    import signal

    from rewardpatch import signals

    saved = {s: signal.getsignal(s) for s in signals.STOPPING}
    for signum in saved:
        signal.signal(signum, signal.SIG_DFL)
    signals.install()
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)
