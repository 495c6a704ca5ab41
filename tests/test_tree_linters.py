"""What apply writes into a tree passes that tree's own linters.

MMSeg 1.x's .pre-commit-config.yaml runs flake8 5.0.4, isort 5.12.0 and yapf 0.32.0,
MMSeg 0.x's flake8 3.8.3, isort 5.10.1 and yapf 0.30.0 (installed in the 0.x stack),
each configured by the tree's setup.cfg (79 columns, its isort sections, yapf's pep8
base). The files apply creates must pass them as they are; the `__init__` files it edits
must gain no problem: a fork's pre-commit hooks would otherwise rewrite them, and `check`
would then call them hand-edited.
"""

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import forks
from conftest import copy_checkout
from rewardpatch.planning import plan_apply
from rewardpatch.tree import MMSegTree

PINS = {"flake8": "5.0.4", "isort": "5.12.0", "yapf": "0.32.0"}
PINS_0X = {"flake8": "3.8.3", "isort": "5.10.1", "yapf": "0.30.0"}
INITS = ("mmseg/models/decode_heads/__init__.py", "mmseg/models/losses/__init__.py")


def lint(tree, files, python=sys.executable, isort_path=None) -> list[str]:
    """Every problem the three linters of `python` report on `files` (relative to `tree`);
    `isort_path`: a directory holding another isort, put first on isort's import path."""
    setup_cfg = str(tree / "setup.cfg")
    commands = [
        [python, "-m", "flake8", *files],
        [python, "-m", "isort", "--settings-path", setup_cfg, "--check-only", "--diff", *files],
        [python, "-m", "yapf", "--style", setup_cfg, "--diff", *files],
    ]
    problems = []
    for command in commands:
        env = {**os.environ, "PYTHONPATH": str(isort_path)} if isort_path and command[2] == "isort" else None
        result = subprocess.run(command, cwd=tree, capture_output=True, text=True, env=env)
        problems += [f"{command[2]}: {line}" for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return problems


def created_files(tree) -> list[str]:
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=tree,
                            capture_output=True, text=True, check=True).stdout
    return sorted(line[3:] for line in status.splitlines() if line.startswith("??") and line.endswith(".py"))


def test_the_installed_linters_are_the_ones_mmseg_pins():
    assert {name: metadata.version(name) for name in PINS} == PINS


def test_every_file_apply_creates_passes_the_trees_linters(patched_tree):
    files = created_files(patched_tree)
    assert len(files) >= 25
    assert lint(patched_tree, files) == []


@pytest.mark.parametrize("init", INITS)
def test_the_edited_init_files_gain_no_problem(patched_tree, tmp_path, init):
    pristine = copy_checkout("1.2.2", tmp_path / "mmsegmentation")
    before = lint(pristine, [init])
    assert lint(patched_tree, [init]) == before


def test_the_0x_stack_has_the_linters_mmseg_0x_pins(python_0x):
    code = f"from importlib import metadata; print({{n: metadata.version(n) for n in {sorted(PINS_0X)!r}}})"
    result = subprocess.run([python_0x, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == repr(dict(sorted(PINS_0X.items())))


# 0.x DAHead calls super(DAHead, self).losses(...) on lines that, with the class renamed
# RewardDAHead, would run to 83 columns: apply splits them as yapf does (codemods/layout.py).
DA_HEAD_0X = "mmseg/models/decode_heads/reward_da_head.py"


def patched_0x(tmp_path, version):
    pristine = copy_checkout(version, tmp_path / "pristine")
    tree = copy_checkout(version, tmp_path / "mmsegmentation")
    plan_apply(MMSegTree.open(tree)).execute()
    return pristine, tree


@pytest.mark.parametrize("version", ["0.24.1", "0.30.0"])
def test_what_apply_writes_into_a_0x_tree_passes_its_linters(python_0x, tmp_path, version):
    pristine, tree = patched_0x(tmp_path, version)
    files = created_files(tree)
    assert DA_HEAD_0X in files and len(files) >= 26
    assert lint(tree, files, python_0x) == []
    for init in INITS:
        assert lint(tree, [init], python_0x) == lint(pristine, [init], python_0x)


def test_the_0x_da_head_copy_passes_its_linters(python_0x, tmp_path):
    _, tree = patched_0x(tmp_path, "0.30.0")
    assert lint(tree, [DA_HEAD_0X], python_0x) == []


def test_the_adapter_fitted_to_a_domain_adaptation_port_passes_its_linters(tmp_path, stack):
    """seg_weight makes the 1.x loss_by_feat too long for one line: laid out as yapf would."""
    tree = forks.daformer_1x(copy_checkout("1.2.2", tmp_path / "port"))
    plan_apply(MMSegTree.open(tree)).execute()
    assert lint(tree, ["mmseg/models/decode_heads/reward_decode_head.py"]) == []


# The sdists of MMSeg 0.11 to 0.23 carry no .pre-commit-config.yaml. Up to 0.20 the
# setup.cfg is written for isort 4 (`known_standard_library` replaces isort 5's list of
# the standard library), which DAFormer's pre-commit pins: isort 4.3.21, kept apart by
# `make setup0`; 0.23 moved to isort 5's settings. flake8 and yapf are 0.x's pins.
ISORT4_RELEASES = {"0.11.0", "0.16.0", "0.20.2"}


def test_the_0x_stack_keeps_the_isort_older_0x_releases_pin(python_0x):
    isort4 = Path(python_0x).parent.parent / "isort4"
    code = "import isort; print(isort.__version__)"
    result = subprocess.run([python_0x, "-c", code], env={**os.environ, "PYTHONPATH": str(isort4)},
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "4.3.21"


@pytest.mark.parametrize("version", ["0.11.0", "0.16.0", "0.20.2", "0.23.0", "DAFormer 0.16.0"])
def test_what_apply_writes_into_an_older_0x_tree_passes_its_linters(python_0x, tmp_path, version):
    release = version.split()[-1]
    tree = copy_checkout(release, tmp_path / "mmsegmentation")
    if version.startswith("DAFormer"):
        forks.daformer_0x(tree)
    plan_apply(MMSegTree.open(tree)).execute()
    # the DAFormer fork's EncHead hands seg_weight on in a super(EncHead, self) call of 74
    # columns, 80 once renamed RewardEncHead: split as yapf splits it, as DAHead's lines are
    files = created_files(tree)
    assert DA_HEAD_0X in files and len(files) >= 21
    isort4 = Path(python_0x).parent.parent / "isort4" if release in ISORT4_RELEASES else None
    assert lint(tree, files, python_0x, isort4) == []
