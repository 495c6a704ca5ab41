"""The tool on every Python that setup.cfg claims (3.8 to 3.13).

`make setup-pythons` makes a venv per interpreter with rewardpatch installed as users get it
(`pip install .`), and `make test` names their folder in REWARDPATCH_PYTHONS. Each venv's
`rewardpatch` script, run on a fresh copy of the MMSeg 1.x and 0.x reference checkouts, prints
what this interpreter's in-process run prints, exits with its codes and leaves the same tree,
byte for byte; and the modules that run inside a user's training environment (plugin mode,
verify's worker, config) import there, or fail with the tool's own one line where they need
what the venv lacks (mmseg, torch).

A missing or stale venv skips outside CI (`CI` unset) and fails in CI, as the 0.x stack does.
"""

from __future__ import annotations

import configparser
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import IN_CI, REPO, copy_checkout, git_status, one_line_error, run_cli

pytestmark = pytest.mark.stack  # every test runs a venv of another Python

CLASSIFIER = "Programming Language :: Python :: "
VERBS = ("apply", "check", "config", "list-heads", "plot", "revert", "stats", "verify")
MMSEG_VERSIONS = ("1.2.2", "0.30.0")
TREE = "TREE"  # stands for the tree's path in COMMANDS
HELP = (("--help",), *((verb, "--help") for verb in VERBS))
# What a user runs on a checkout, in order; None: the tree is read after the command before it.
COMMANDS = (
    ("list-heads", TREE),
    ("list-heads", "--json", TREE),
    ("apply", "--dry-run", TREE),
    ("apply", TREE),
    None,
    ("check", "--json", TREE),
    ("list-heads", TREE),
    ("revert", TREE),
    None,
)


def claimed_pythons() -> list[str]:
    """'3.8', ... as setup.cfg's classifiers list them."""
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg", encoding="utf-8")
    lines = (line.strip() for line in setup["metadata"]["classifiers"].splitlines())
    return [line[len(CLASSIFIER):] for line in lines if line.startswith(CLASSIFIER + "3.")]


def package_files(package: Path) -> dict[str, bytes]:
    """The files of the package whose folder is `package`, by their path in it: its modules, and
    templates/ and patches/, which lie inside it once installed and beside it in this repository."""
    files = {
        p.relative_to(package).as_posix(): p.read_bytes() for p in package.rglob("*.py") if "__pycache__" not in p.parts
    }
    for name, pattern in (("templates", "*.py"), ("patches", "*.toml")):
        folder = package / name if (package / name).is_dir() else package.parent / name
        files.update((f"{name}/{p.name}", p.read_bytes()) for p in folder.glob(pattern))
    return files


@pytest.fixture(scope="module", params=claimed_pythons())
def venv(request) -> Path:
    """The venv of one claimed Python, with this tree's rewardpatch installed (not editable)."""
    version = request.param
    folder = os.environ.get("REWARDPATCH_PYTHONS", "")
    venv = Path(folder) / version
    problem = None
    if not folder:
        problem = "REWARDPATCH_PYTHONS names no folder of venvs"
    elif not (venv / "bin" / "rewardpatch").is_file():
        problem = f"{venv} has no rewardpatch script"
    else:
        probe = subprocess.run(
            [venv / "bin" / "python", "-c",
             "import sys, rewardpatch; print('%d.%d' % sys.version_info[:2]); print(rewardpatch.__file__)"],
            capture_output=True, text=True, env=_without_pythonpath(), cwd=venv,
        )
        lines = probe.stdout.split()
        if probe.returncode != 0 or len(lines) != 2:
            problem = f"{venv}/bin/python cannot import rewardpatch: {(probe.stderr.strip().splitlines() or ['?'])[-1]}"
        elif lines[0] != version:
            problem = f"{venv} runs Python {lines[0]}, not {version}"
        elif package_files(Path(lines[1]).parent) != package_files(REPO / "rewardpatch"):
            problem = f"{venv} holds another rewardpatch than this tree's (a stale install)"
    if problem:
        if IN_CI:
            pytest.fail(f"the Python {version} venv is missing or stale in CI ({problem})")
        pytest.skip(f"no usable Python {version} venv ({problem}); `make setup-pythons` makes it")
    return venv


def _without_pythonpath() -> dict[str, str]:
    """This environment, less PYTHONPATH: the venv must run its installed rewardpatch."""
    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


def tree_state(tree: Path) -> tuple[str, dict[str, tuple[int, str]]]:
    """git status, and every file outside .git/ with its mode and the sha256 of its bytes."""
    files = {
        path.relative_to(tree).as_posix(): (path.lstat().st_mode, hashlib.sha256(path.read_bytes()).hexdigest())
        for path in sorted(tree.rglob("*"))
        if ".git" not in path.relative_to(tree).parts and path.is_file()
    }
    return git_status(tree), files


def session(run, tree: Path, version: str) -> list:
    """COMMANDS run with `run(args) -> (exit code, stdout, stderr)` on a fresh copy of
    checkout `version` at `tree`, which is removed afterwards; what each printed, and the tree
    where COMMANDS reads it."""
    copy_checkout(version, tree)
    try:
        return [
            tree_state(tree) if args is None else run([str(tree) if a == TREE else a for a in args])
            for args in COMMANDS
        ]
    finally:
        shutil.rmtree(tree)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pythons")


@pytest.fixture(scope="module")
def reference(workdir):
    """session() of each MMSeg version run in this process, at the path each venv's run uses."""
    results = {}

    def get(version: str) -> list:
        if version not in results:
            results[version] = session(lambda args: run_cli(None, *args), workdir / "mmsegmentation", version)
        return results[version]

    return get


def run_script(venv: Path, args, cwd: Path) -> tuple[int, str, str]:
    """The venv's `rewardpatch ARGS`: (exit code, stdout, stderr)."""
    done = subprocess.run(
        [venv / "bin" / "rewardpatch", *args], capture_output=True, text=True, cwd=cwd,
        env={**_without_pythonpath(), "COLUMNS": "80"}, timeout=300,
    )
    return done.returncode, done.stdout, done.stderr


def test_each_python_shows_the_same_help(venv, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # click wraps help to the terminal: the same width for both
    for args in HELP:
        assert run_script(venv, args, venv) == run_cli(None, *args), f"{venv.name}: rewardpatch {' '.join(args)}"


@pytest.mark.slow
@pytest.mark.parametrize("version", MMSEG_VERSIONS)
def test_each_python_prints_and_leaves_what_this_one_does(venv, reference, workdir, version):
    expected = reference(version)
    got = session(lambda args: run_script(venv, args, workdir), workdir / "mmsegmentation", version)
    for args, want, have in zip(COMMANDS, expected, got):
        assert have == want, f"{venv.name}: {'the tree after' if args is None else 'rewardpatch'} {args or ''}"


def test_the_modules_of_a_training_environment_import(venv):
    """verify's worker and config's command import; plugin mode, whose import registers heads
    in an installed MMSeg, and config and verify, which need torch, say so in one line."""
    def python(code: str) -> subprocess.CompletedProcess:
        return subprocess.run([venv / "bin" / "python", "-c", code], capture_output=True, text=True,
                              cwd=venv, env=_without_pythonpath(), timeout=120)

    imported = python("import rewardpatch.verify.worker, rewardpatch.configs.command, rewardpatch.cli")
    assert imported.returncode == 0, imported.stderr
    plugin = python("import rewardpatch.plugin")
    assert plugin.returncode == 1
    assert plugin.stderr.strip().splitlines()[-1] == (
        "rewardpatch.plugin.PluginError: MMSegmentation is not importable "
        "(ModuleNotFoundError: No module named 'mmseg')"
    )
    for args, needs in ((("config", "src.py", "-o", "out.py"), "mmengine or mmcv"), (("verify", "."), "torch")):
        done = subprocess.run([venv / "bin" / "rewardpatch", *args], capture_output=True, text=True,
                              cwd=venv, env=_without_pythonpath(), timeout=120)
        assert (done.returncode, one_line_error(done.stderr)) == (2, (
            f"rewardpatch: error: {args[0]} needs {needs}, which cannot be imported here: "
            "`make setup` installs the verification stack (README, Set-up)"
        ))
