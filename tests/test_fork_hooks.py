"""A fork's own pre-commit hooks leave the patch as apply wrote it.

15 of 23 MMSeg forks run OpenMMLab's check-copyright hook (open-mmlab/pre-commit-hooks,
`args: ["mmseg", "tools", "tests", "demo"]`), and every fork runs the yapf and isort
MMSeg pins (yapf 0.32.0 / isort 5.12.0 for 1.x, yapf 0.30.0 / isort 5.10.1 for 0.x),
configured by the tree's setup.cfg. Here they run on every file apply created or
edited, as `pre-commit run --all-files` would; the patch is committed, and `check`
must find nothing while `revert` gives back the pristine commit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import forks
from conftest import run_cli
from rewardpatch import planning as planner
from rewardpatch.manifest import Manifest
from rewardpatch.naming import is_generated
from rewardpatch.planning import desired
from rewardpatch.tree import MMSegTree

HEADS = "mmseg/models/decode_heads"
ISORT4_RELEASES = {"0.11.0", "0.16.0", "0.20.2"}  # their setup.cfg is written for isort 4
OPENMMLAB_HEADER = "# Copyright (c) OpenMMLab. All rights reserved.\n"


def check_copyright(path: Path) -> bool:
    """The check-copyright hook, from its documented behaviour: a file none of whose
    lines has the word "Copyright" or "License" (words split at spaces) gets OpenMMLab's
    copyright line first. True: it changed the file."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if any({"Copyright", "License"} & set(line.split(" ")) for line in lines):
        return False
    path.write_text(OPENMMLAB_HEADER + "".join(lines), encoding="utf-8")
    return True


def git(tree: Path, *args: str) -> str:
    env = {**os.environ, **forks.COMMIT_ENV}
    return subprocess.run(["git", *args], cwd=tree, env=env, capture_output=True, text=True, check=True).stdout


def patched_files(tree: Path) -> list[str]:
    manifest = Manifest.load(MMSegTree.open(tree))
    assert manifest is not None
    return sorted(path for path in manifest.files if path.endswith(".py"))


def run_hooks(tree: Path, files: list[str], python: str, isort_path: Path | None = None) -> list[str]:
    """check-copyright, isort and yapf on `files`, in place; the files they changed."""
    before = {f: (tree / f).read_bytes() for f in files}
    for f in files:
        check_copyright(tree / f)
    env = {**os.environ, "PYTHONPATH": str(isort_path)} if isort_path else None
    subprocess.run([python, "-m", "isort", "--settings-path", "setup.cfg", *files], cwd=tree, env=env,
                   capture_output=True, check=True)
    subprocess.run([python, "-m", "yapf", "--in-place", "--style", "setup.cfg", *files], cwd=tree,
                   capture_output=True, check=True)
    return [f for f in files if (tree / f).read_bytes() != before[f]]


def commit_hook_and_round_trip(capsys, tree: Path, python: str, isort_path: Path | None = None) -> None:
    # a fork that runs check-copyright has the line in every file already (MMSeg < 0.17 lacks it)
    if [path for path in sorted((tree / "mmseg").rglob("*.py")) if check_copyright(path)]:
        git(tree, "commit", "-qam", "check-copyright")
    pristine = git(tree, "rev-parse", "HEAD").strip()
    assert run_cli(capsys, "apply", tree)[0] == 0
    files = patched_files(tree)
    assert any(f.startswith(f"{HEADS}/reward_") for f in files)
    assert run_hooks(tree, files, python, isort_path) == []
    git(tree, "add", "-A")
    git(tree, "commit", "-qm", "rewardpatch apply")
    code, out, _ = run_cli(capsys, "check", tree)
    assert code == 0, out
    assert run_cli(capsys, "revert", tree)[0] == 0
    git(tree, "add", "-A")
    assert git(tree, "diff", "--cached", "--name-only", pristine) == ""


def test_the_hooks_of_a_1x_fork_leave_the_patch_valid(tree, capsys):
    commit_hook_and_round_trip(capsys, tree, sys.executable)


def test_the_hooks_of_a_0x_fork_leave_the_patch_valid(make_tree, python_0x, capsys):
    tree = make_tree("0.30.0")
    commit_hook_and_round_trip(capsys, tree, python_0x)
    assert "super(RewardDAHead, self)" in git(tree, "show", f"HEAD:{HEADS}/reward_da_head.py")


@pytest.mark.parametrize("release", ["0.30.0", "0.16.0"])
def test_the_renamed_da_head_is_in_the_patch(make_tree, python_0x, capsys, release):
    """The lines `super(RewardDAHead, self)` lengthens are the formatter's already."""
    tree = make_tree(release)
    assert run_cli(capsys, "apply", tree)[0] == 0
    text = (tree / HEADS / "reward_da_head.py").read_text()
    assert "super(RewardDAHead, self).losses(" in text
    assert max(len(line) for line in text.splitlines()) <= 79
    isort4 = Path(python_0x).parent.parent / "isort4" if release in ISORT4_RELEASES else None
    assert run_hooks(tree, [f"{HEADS}/reward_da_head.py"], python_0x, isort4) == []


def test_the_hooks_of_a_domain_adaptation_fork_leave_the_patch_valid(make_tree, python_0x, capsys):
    tree = forks.daformer_0x(make_tree("0.16.0"))
    commit_hook_and_round_trip(capsys, tree, python_0x, Path(python_0x).parent.parent / "isort4")


def test_every_file_apply_writes_names_its_copyright_and_license(tree, capsys):
    assert run_cli(capsys, "apply", tree)[0] == 0
    opened = MMSegTree.open(tree)
    created = Manifest.load(opened).created()
    templates = [p for p, r in created.items() if r.kind == "template"]
    heads = [p for p, r in created.items() if r.kind == "head"]
    assert sorted(templates) == sorted(s.target for s in opened.generation.templates) and heads
    for path in templates:
        assert planner.TEMPLATE_COPYRIGHT in (tree / path).read_text().splitlines()[:4]
    for path in heads:
        lines = (tree / path).read_text().splitlines()
        assert lines[3] == planner.DERIVED_COPYRIGHT
        assert lines[4] == OPENMMLAB_HEADER.strip()  # the source's own line, kept
    assert not any(check_copyright(tree / path) for path in created)


def test_a_tree_patched_before_the_copyright_line_shows_drift_and_apply_refreshes_it(tree, capsys, monkeypatch):
    header = desired._header
    monkeypatch.setattr(desired, "_header", lambda origin, digest, template=False: header(origin, digest)[:3])
    assert run_cli(capsys, "apply", tree)[0] == 0
    git(tree, "add", "-A")
    git(tree, "commit", "-qm", "rewardpatch apply (the previous release)")
    monkeypatch.setattr(desired, "_header", header)
    old = {path: (tree / path).read_text() for path in Manifest.load(MMSegTree.open(tree)).created()}
    assert all(is_generated(text) for text in old.values())
    problems = planner.check_tree(opened := MMSegTree.open(tree), Manifest.load(opened))
    assert problems and {p.kind for p in problems} == {"drift"}
    assert {p.path for p in problems} >= set(old)
    code, out, err = run_cli(capsys, "apply", tree)
    assert code == 0, err
    assert planner.check_tree(opened := MMSegTree.open(tree), Manifest.load(opened)) == []
    assert "Copyright" in (tree / HEADS / "reward_decode_head.py").read_text()


def test_a_line_the_rename_lengthens_is_split_and_its_continuation_moves_with_its_bracket():
    from rewardpatch.codemods.layout import fit_renamed_super_lines

    renamed = (
        "class RewardDAHead(RewardDecodeHead):\n\n"
        "    def losses(self, seg_logit, seg_label):\n"
        "        loss.update(\n"
        "            add_prefix(\n"
        "                super(RewardDAHead, self).losses(pam_seg_logit, seg_label), 'pam'))\n"
        "        loss.update(\n"
        "            super(RewardDAHead, self).losses(seg_logit, seg_label,\n"
        "                                       seg_weight))\n"
    )
    assert fit_renamed_super_lines(renamed, {"RewardDAHead": "DAHead"}) == (
        "class RewardDAHead(RewardDecodeHead):\n\n"
        "    def losses(self, seg_logit, seg_label):\n"
        "        loss.update(\n"
        "            add_prefix(\n"
        "                super(RewardDAHead, self).losses(pam_seg_logit, seg_label),\n"
        "                'pam'))\n"
        "        loss.update(\n"
        "            super(RewardDAHead, self).losses(seg_logit, seg_label,\n"
        "                                             seg_weight))\n"
    )
    aligned = "x = super(RewardFCNHead, self).__init__(a,\n" + " " * 34 + "b)\n"  # as FCNHead's was
    realigned = aligned.replace(" " * 34, " " * 40)
    assert fit_renamed_super_lines(aligned, {"RewardFCNHead": "FCNHead"}) == realigned
    assert fit_renamed_super_lines(realigned, {"RewardFCNHead": "FCNHead"}) == realigned
    assert fit_renamed_super_lines(aligned, {}) == aligned
