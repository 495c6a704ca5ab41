"""apply, check and revert on real MMSeg checkouts (git repositories): 1.2.2 mostly; the round trip,
--dry-run and --commit as rows over releases of both generations (0.x specifics: test_mmseg_0x.py)."""

import ast
import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import copy_checkout, git_status, run_cli
from rewardpatch import head_api, mmseg_generations
from rewardpatch.head_index import COMPATIBLE
from rewardpatch.manifest import Manifest
from rewardpatch.patch_plan import PatchPlan
from rewardpatch.planning import ApplyOptions, check_tree, list_heads, plan_apply, plan_revert
from rewardpatch.tree import MANIFEST_NAME, MMSegTree

HEADS = "mmseg/models/decode_heads"


# The head registry each generation's heads register with (patches/): 1.x MODELS, 0.x HEADS.
REGISTRY = {"mmseg-1.x": "MODELS", "mmseg-0.x": "HEADS"}


def snapshot(tree: Path) -> dict:
    return {p.relative_to(tree): p.read_bytes() for p in tree.rglob("*") if p.is_file() and ".git" not in p.parts}


@pytest.mark.parametrize("version", ["1.0.0", "1.2.2", "0.24.1", "0.30.0"])
def test_apply_check_revert_round_trip_leaves_the_tree_byte_for_byte(make_tree, version, capsys):
    tree = make_tree(version)
    before = snapshot(tree)
    opened = MMSegTree.open(tree)
    compatible = [h.name for h in list_heads(opened) if h.status == COMPATIBLE]
    assert run_cli(capsys, "apply", tree)[0] == 0
    generated = "".join(p.read_text() for p in (tree / HEADS).glob("reward_*.py"))
    registry = REGISTRY[opened.generation.name]
    for name in compatible:
        assert f"@{registry}.register_module()\nclass Reward{name}(" in generated
    for path in (tree / "mmseg/models").rglob("*.py"):
        compile(path.read_text(), str(path), "exec")
    assert run_cli(capsys, "check", tree)[0] == 0
    assert run_cli(capsys, "apply", tree)[1].startswith("already patched")
    assert run_cli(capsys, "revert", tree)[0] == 0
    assert git_status(tree) == ""
    assert snapshot(tree) == before


def test_a_second_apply_changes_nothing_and_says_already_patched(tree, capsys):
    run_cli(capsys, "apply", tree)
    before = {p: p.read_bytes() for p in tree.rglob("*") if p.is_file() and ".git" not in p.parts}
    code, out, _ = run_cli(capsys, "apply", tree)
    assert code == 0
    assert "already patched" in out
    after = {p: p.read_bytes() for p in tree.rglob("*") if p.is_file() and ".git" not in p.parts}
    assert after == before


def test_apply_heads_on_a_patched_tree_adds_the_head(tree, capsys):
    assert run_cli(capsys, "apply", tree, "--heads", "ASPPHead")[0] == 0
    assert run_cli(capsys, "apply", tree, "--heads", "PSPHead")[0] == 0
    manifest = Manifest.load(MMSegTree.open(tree))
    assert manifest.heads == ["ASPPHead", "PSPHead"]
    init = (tree / HEADS / "__init__.py").read_text()
    assert "from .reward_aspp_head import RewardASPPHead" in init
    assert "from .reward_psp_head import RewardPSPHead" in init
    assert run_cli(capsys, "check", tree)[0] == 0
    assert run_cli(capsys, "revert", tree)[0] == 0
    assert git_status(tree) == ""


def test_a_derived_head_brings_its_base_and_says_so(tree, capsys):
    code, out, _ = run_cli(capsys, "apply", tree, "--heads", "CCHead")
    assert code == 0
    assert "RewardFCNHead is generated too: RewardCCHead derives from it" in out
    assert "class RewardCCHead(RewardFCNHead):" in (tree / HEADS / "reward_cc_head.py").read_text()
    assert (tree / HEADS / "reward_fcn_head.py").is_file()


# 1.x, and 0.x (0.16.0: the DAFormer family's base); test_mmseg_0x.py holds the rest of 0.x's
@pytest.mark.parametrize("version", ["1.2.2", "0.30.0", "0.16.0"])
def test_dry_run_prints_a_unified_diff_and_writes_nothing(make_tree, version, capsys):
    tree = make_tree(version)
    code, out, _ = run_cli(capsys, "apply", tree, "--dry-run")
    assert code == 0
    assert f"+++ b/{HEADS}/reward_aspp_head.py" in out
    assert f"--- a/{HEADS}/__init__.py" in out
    assert "--- a/mmseg/models/losses/__init__.py" in out
    assert git_status(tree) == ""


@pytest.mark.parametrize("version, heads", [
    ("1.2.2", "ASPPHead,FCNHead"),
    ("0.24.1", "OCRHead,PSPHead"),
    ("0.16.0", "OCRHead,PSPHead"),  # 0.16.0: the DAFormer family's base
])
def test_commit_records_the_patch_with_the_heads_in_the_message(make_tree, version, heads, capsys):
    tree = make_tree(version)
    assert run_cli(capsys, "apply", tree, "--heads", heads, "--commit")[0] == 0
    assert git_status(tree) == ""
    message = subprocess.run(["git", "log", "-1", "--format=%B"], cwd=tree, capture_output=True, text=True).stdout
    assert f"Heads: {heads.replace(',', ', ')}" in message
    if "OCRHead" in heads:  # a cascade head keeps its cascade base
        assert "class RewardOCRHead(RewardCascadeDecodeHead):" in (tree / HEADS / "reward_ocr_head.py").read_text()


def test_a_write_failing_half_way_leaves_the_tree_unchanged(tree, monkeypatch):
    plan = plan_apply(MMSegTree.open(tree))
    last = 1 + len(plan.changes)  # the journal's, then each file's: the manifest's, after both __init__ files
    real_replace = os.replace
    calls = {"n": 0}

    def failing_replace(src, dst, **at):
        calls["n"] += 1
        if calls["n"] == last:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst, **at)

    monkeypatch.setattr("rewardpatch.treefs.os.replace", failing_replace)
    with pytest.raises(Exception, match="No space left on device; the tree was left unchanged"):
        plan.execute()
    assert calls["n"] == last + 2  # the rollback rewrote both __init__ files
    assert git_status(tree) == ""


def test_revert_removes_only_what_apply_added_from_the_init_files(tree):
    tree_ = MMSegTree.open(tree)
    plan_apply(tree_).execute()
    init = tree / HEADS / "__init__.py"
    init.write_text(init.read_text().replace(
        "from .uper_head import UPerHead\n", "from .uper_head import UPerHead\nfrom .my_head import MyHead\n"
    ))
    plan_revert(tree_).execute()
    diff = subprocess.run(["git", "diff"], cwd=tree, capture_output=True, text=True).stdout
    added = [line for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert added == ["+from .my_head import MyHead"]


def test_check_reports_each_kind_of_drift(tree, capsys):
    tree_ = MMSegTree.open(tree)
    plan_apply(tree_).execute()
    (tree / HEADS / "reward_aspp_head.py").write_text("# mine now\n")
    (tree / HEADS / "reward_psp_head.py").unlink()
    psp = tree / HEADS / "fcn_head.py"
    psp.write_text(psp.read_text() + "\n# upstream change\n")
    init = tree / HEADS / "__init__.py"
    init.write_text(init.read_text().replace("from .reward_uper_head import RewardUPerHead\n", ""))
    kinds = {(p.path.rsplit("/", 1)[-1], p.kind) for p in check_tree(tree_, Manifest.load(tree_))}
    assert ("reward_aspp_head.py", "hand-edited") in kinds
    assert ("reward_psp_head.py", "missing") in kinds
    assert ("reward_fcn_head.py", "stale") in kinds
    assert ("__init__.py", "missing-export") in kinds
    assert ("__init__.py", "unbound-import") in kinds  # RewardASPPHead, gone with the hand edit
    assert ("reward_sep_aspp_head.py", "unresolved-import") in kinds  # its base, RewardASPPHead, too
    code, out, _ = run_cli(capsys, "check", tree, "--json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False and len(report["problems"]) == 6


def test_check_on_an_unpatched_tree_fails_saying_so(tree, capsys):
    code, _, err = run_cli(capsys, "check", tree)
    assert code == 1
    assert "not patched" in err


def test_a_template_change_after_an_upgrade_refreshes_untouched_files(tree, tmp_path, monkeypatch, capsys):
    plan_apply(MMSegTree.open(tree)).execute()
    (tree / HEADS / "reward_aspp_head.py").write_text("# hand-edited\n")
    upgraded = tmp_path / "templates"
    upgraded.mkdir()
    for source in (mmseg_generations.data_dir("templates")).glob("*.py"):
        (upgraded / source.name).write_text(source.read_text() + "\n# new in the next release\n")
    real = mmseg_generations.data_dir
    monkeypatch.setattr(mmseg_generations, "data_dir", lambda name: upgraded if name == "templates" else real(name))
    opened = MMSegTree.open(tree)
    kinds = {p.kind for p in check_tree(opened, Manifest.load(opened))}
    assert kinds == {"stale", "hand-edited", "unbound-import", "unresolved-import"}
    code, _, err = run_cli(capsys, "apply", tree)
    assert code == 1
    assert "hand-edited generated file(s): mmseg/models/decode_heads/reward_aspp_head.py" in err
    (tree / HEADS / "reward_aspp_head.py").unlink()
    assert run_cli(capsys, "apply", tree)[0] == 0
    assert "# new in the next release" in (tree / HEADS / "reward_decode_head.py").read_text()
    assert check_tree(opened := MMSegTree.open(tree), Manifest.load(opened)) == []


# The modules reward_estimator.py was split into (test_a_tree_patched_before_the_split_...): the
# release before the split inserted them as one reward_estimator.py, in this order.
SPLIT_MODULES = ("reward_device", "reward_counts", "reward_sampling", "reward_estimator", "reward_head")


def release_before_the_split(root: Path) -> Path:
    """templates/ and patches/ as the release before the split had them, made from this one's:
    one reward_estimator.py holding the split modules (their imports of each other dropped),
    imported from by the other templates, and no [[templates]] table for the other four."""
    templates, patches = root / "templates", root / "patches"
    templates.mkdir(parents=True)
    patches.mkdir()
    real = mmseg_generations.data_dir
    split = {f"{stem}.py" for stem in SPLIT_MODULES}
    parts = []
    for stem in SPLIT_MODULES:
        text = (real("templates") / f"{stem}.py").read_text()
        lines = text.splitlines(keepends=True)
        for node in reversed(ast.parse(text).body):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and f"{node.module}.py" in split:
                del lines[node.lineno - 1:node.end_lineno]
        parts.append("".join(lines))
    (templates / "reward_estimator.py").write_text("\n\n".join(parts))
    for source in real("templates").glob("*.py"):
        if source.name not in split:
            text = source.read_text()
            for stem in SPLIT_MODULES:
                text = text.replace(f"from .{stem} import", "from .reward_estimator import")
                text = text.replace(f"from ..losses.{stem} import", "from ..losses.reward_estimator import")
            (templates / source.name).write_text(text)
    for source in real("patches").glob("*.toml"):
        tables = source.read_text().split("\n[[templates]]\n")
        kept = [tables[0]] + [table for table in tables[1:] if not any(
            f'source = "{name}"' in table for name in split - {"reward_estimator.py"})]
        (patches / source.name).write_text("\n[[templates]]\n".join(kept))
    return root


@pytest.mark.parametrize("version", ["1.2.2", "0.30.0"])
def test_a_tree_patched_before_the_split_of_reward_estimator_upgrades_and_reverts_byte_for_byte(
        make_tree, tmp_path, monkeypatch, capsys, version):
    """apply on a tree that the release before the split patched writes the new modules and
    reward_estimator.py as a fresh apply does; revert then gives back the tree unpatched."""
    tree = make_tree(version)
    before = snapshot(tree)
    previous = release_before_the_split(tmp_path / "previous")
    real = mmseg_generations.data_dir
    try:
        with monkeypatch.context() as patch:
            patch.setattr(mmseg_generations, "data_dir", lambda name: previous / name)
            # that release read the reward loss functions' parameters from reward_estimator.py
            patch.setattr(head_api, "HEAD_TEMPLATE", "reward_estimator.py")
            mmseg_generations.generations.cache_clear()
            assert run_cli(capsys, "apply", tree)[0] == 0
    finally:
        mmseg_generations.generations.cache_clear()
        head_api.template_parameters.cache_clear()
    losses = tree / "mmseg/models/losses"
    assert "class RewardHeadMixin" in (losses / "reward_estimator.py").read_text()
    assert not [stem for stem in SPLIT_MODULES if stem != "reward_estimator" and (losses / f"{stem}.py").exists()]
    assert run_cli(capsys, "apply", tree)[0] == 0
    for stem in SPLIT_MODULES:
        assert (losses / f"{stem}.py").read_text().endswith((real("templates") / f"{stem}.py").read_text())
    fresh = copy_checkout(version, tmp_path / "fresh")
    assert run_cli(capsys, "apply", fresh)[0] == 0
    assert snapshot(tree) == snapshot(fresh)
    opened = MMSegTree.open(tree)
    assert check_tree(opened, Manifest.load(opened)) == []
    assert run_cli(capsys, "revert", tree)[0] == 0
    assert git_status(tree) == ""
    assert snapshot(tree) == before


def test_revert_refuses_a_hand_edited_generated_file_unless_forced(tree, capsys):
    plan_apply(MMSegTree.open(tree)).execute()
    (tree / HEADS / "reward_fcn_head.py").write_text("# mine\n")
    code, _, err = run_cli(capsys, "revert", tree)
    assert code == 1
    assert "reward_fcn_head.py" in err
    assert (tree / MANIFEST_NAME).is_file()
    assert run_cli(capsys, "revert", tree, "--force")[0] == 0
    assert git_status(tree) == ""


def test_every_file_operation_goes_through_one_plan(tree):
    plan = plan_apply(MMSegTree.open(tree), ApplyOptions(heads=("ASPPHead",)))
    assert isinstance(plan, PatchPlan)
    assert {c.path for c in plan.changes} == {
        f"{HEADS}/reward_decode_head.py", f"{HEADS}/reward_aspp_head.py", f"{HEADS}/__init__.py",
        "mmseg/models/losses/iou_metric_loss.py", "mmseg/models/losses/cross_entropy_reward_loss.py",
        "mmseg/models/losses/reward_estimator.py", "mmseg/models/losses/reward_schema.py",
        "mmseg/models/losses/reward_device.py", "mmseg/models/losses/reward_counts.py",
        "mmseg/models/losses/reward_sampling.py", "mmseg/models/losses/reward_head.py",
        "mmseg/models/losses/__init__.py", MANIFEST_NAME,
    }


def test_a_symlinked_init_keeps_its_link_and_its_target_is_patched_and_put_back(capsys, tree):
    """A fork that keeps decode_heads/__init__.py as a link to a file elsewhere in the tree."""
    init = tree / HEADS / "__init__.py"
    shared = tree / "mmseg" / "shared_heads_init.py"
    original = init.read_bytes()
    shared.write_bytes(original)
    init.unlink()
    init.symlink_to(os.path.relpath(shared, init.parent))
    assert run_cli(capsys, "apply", tree, "--allow-dirty")[0] == 0
    assert init.is_symlink() and b"RewardFCNHead" in shared.read_bytes()
    assert run_cli(capsys, "check", tree)[0] == 0
    assert run_cli(capsys, "revert", tree)[0] == 0
    assert init.is_symlink() and shared.read_bytes() == original
