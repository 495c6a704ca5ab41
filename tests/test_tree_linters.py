"""What apply writes into a tree passes that tree's own linters.

MMSeg 1.x's .pre-commit-config.yaml runs flake8 5.0.4, isort 5.12.0 and yapf 0.32.0,
configured by its setup.cfg (79 columns, its isort sections, yapf's pep8 base). The
files apply creates must pass them as they are; the `__init__` files it edits must gain
no problem: a fork's pre-commit hooks would otherwise rewrite them, and `check` would
then call them hand-edited.
"""

import subprocess
import sys
from importlib import metadata

import pytest

from conftest import copy_checkout

PINS = {"flake8": "5.0.4", "isort": "5.12.0", "yapf": "0.32.0"}
INITS = ("mmseg/models/decode_heads/__init__.py", "mmseg/models/losses/__init__.py")


def lint(tree, files) -> list[str]:
    """Every problem the three linters report on `files` (paths relative to `tree`)."""
    setup_cfg = str(tree / "setup.cfg")
    commands = [
        [sys.executable, "-m", "flake8", *files],
        [sys.executable, "-m", "isort", "--settings-path", setup_cfg, "--check-only", "--diff", *files],
        [sys.executable, "-m", "yapf", "--style", setup_cfg, "--diff", *files],
    ]
    problems = []
    for command in commands:
        result = subprocess.run(command, cwd=tree, capture_output=True, text=True)
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
