"""The patch engine on MMSeg 0.x trees (0.24.1 and 0.30.0, and 0.16.0 for the flags; git repositories).

The same guarantees as on 1.x: list-heads' verdicts come from patches/mmseg-0.x.toml
(forward_train/losses hand on gt_semantic_seg/seg_label), apply writes the 0.x adapter and
the shared templates with 0.x's registries, revert is byte-exact, apply is atomic and
idempotent, and --commit, --force and --adopt behave as on 1.x (--dry-run: test_apply_revert.py).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import copy_checkout, git_status, one_line_error, run_cli
from rewardpatch.checkout import COMMIT_ENV
from rewardpatch.head_index import COMPATIBLE, INCOMPATIBLE
from rewardpatch.mmseg_generations import data_dir, generation_for
from rewardpatch.planning import list_heads, plan_apply
from rewardpatch.tree import APPLY_COPIES_DIR, MMSegTree

VERSIONS = ["0.24.1", "0.30.0"]
HEADS = "mmseg/models/decode_heads"
LOSSES = "mmseg/models/losses"
COMPATIBLE_0X = {
    "ANNHead", "APCHead", "ASPPHead", "CCHead", "DAHead", "DMHead", "DNLHead", "DPTHead",
    "DepthwiseSeparableASPPHead", "DepthwiseSeparableFCNHead", "EMAHead", "EncHead", "FCNHead",
    "FPNHead", "GCHead", "ISAHead", "LRASPPHead", "NLHead", "OCRHead", "PSAHead", "PSPHead",
    "SETRMLAHead", "SETRUPHead", "SegformerHead", "SegmenterMaskTransformerHead", "UPerHead",
}
OWN_LOSS = {  # head -> the override that computes its own loss
    "PointHead": "forward_train",  # samples points and scores them itself
    "STDCHead": "losses",  # hands boundary targets, not seg_label, to super()
    "IterativeDecodeHead": "losses",  # K-Net's stages
}
NOT_HEADS = {"KernelUpdateHead", "KernelUpdator"}


def snapshot(tree):
    return {p.relative_to(tree): p.read_bytes() for p in tree.rglob("*") if p.is_file() and ".git" not in p.parts}


def commit(tree, message):
    env = {**os.environ, **COMMIT_ENV}
    subprocess.run(["git", "add", "--all"], cwd=tree, env=env, check=True)
    subprocess.run(["git", "commit", "-q", "-m", message], cwd=tree, env=env, check=True)
    assert git_status(tree) == ""


@pytest.mark.parametrize("version", VERSIONS)
def test_every_registered_head_gets_the_0x_verdict(pristine, version):
    heads = {h.name: h for h in list_heads(MMSegTree.open(pristine(version)))}
    assert set(heads) == COMPATIBLE_0X | set(OWN_LOSS) | NOT_HEADS
    assert {n for n, h in heads.items() if h.status == COMPATIBLE} == COMPATIBLE_0X
    for name, method in OWN_LOSS.items():
        assert heads[name].status == INCOMPATIBLE
        parameter = generation_for(version).loss_methods[method]
        assert f"{name}.{method} computes its own loss without handing {parameter} to super()" in heads[name].reason
    for name in NOT_HEADS:
        assert heads[name].reason.startswith("not a decode head")


def test_list_heads_names_the_version_and_its_generation(capsys, pristine):
    code, out, _ = run_cli(capsys, "list-heads", pristine("0.30.0"))
    assert code == 0
    assert "MMSegmentation 0.30.0" in out.splitlines()[0]
    assert out.splitlines()[1] == (
        "rewardpatch supports MMSegmentation 0.6.0 to 0.30.0, 1.0.0rc0 to 1.2.2 (mmseg-0.x for this tree)"
    )


def test_apply_inserts_the_0x_adapter_and_the_shared_templates_with_0x_registries(capsys, make_tree):
    tree = make_tree("0.30.0")
    assert run_cli(capsys, "apply", tree, "--heads", "FCNHead")[0] == 0
    templates = data_dir("templates")
    # the mathematics is the very file 1.x gets (below rewardpatch's header)
    assert (tree / LOSSES / "reward_estimator.py").read_text().endswith((templates / "reward_estimator.py").read_text())
    adapter = (tree / HEADS / "reward_decode_head.py").read_text()
    assert adapter.endswith((templates / "reward_decode_head_0x.py").read_text())
    assert "def losses(self, seg_logit, seg_label):" in adapter
    for name in ("iou_metric_loss.py", "cross_entropy_reward_loss.py"):
        text = (tree / LOSSES / name).read_text()
        assert "from ..builder import LOSSES\n" in text and "@LOSSES.register_module()\n" in text
        assert "MODELS" not in text
        # everything else is 1.x's template, line for line
        shared = (templates / name).read_text().replace(
            "from mmseg.registry import MODELS", "from ..builder import LOSSES"
        )
        assert text.endswith(shared.replace("@MODELS.", "@LOSSES."))
    fcn = (tree / HEADS / "reward_fcn_head.py").read_text()
    assert "from ..builder import HEADS\n" in fcn
    assert "from .reward_decode_head import RewardDecodeHead\n" in fcn


@pytest.mark.parametrize("version", ["0.30.0", "0.16.0"])  # 0.16.0: the DAFormer family's base
def test_a_write_failing_half_way_leaves_the_tree_unchanged(make_tree, monkeypatch, version):
    tree = make_tree(version)
    before = snapshot(tree)
    plan = plan_apply(MMSegTree.open(tree))
    real_replace = os.replace
    calls = {"n": 0}

    def failing_replace(src, dst, **at):
        calls["n"] += 1
        if calls["n"] == len(plan.changes):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst, **at)

    monkeypatch.setattr("rewardpatch.treefs.os.replace", failing_replace)
    with pytest.raises(Exception, match="the tree was left unchanged"):
        plan.execute()
    assert snapshot(tree) == before


def test_an_incompatible_0x_head_is_refused_with_the_reason(capsys, make_tree):
    tree = make_tree("0.30.0")
    code, _, err = run_cli(capsys, "apply", tree, "--heads", "PointHead")
    assert code == 2
    assert "PointHead.forward_train computes its own loss without handing gt_semantic_seg" in one_line_error(err)
    assert git_status(tree) == ""


def test_a_release_older_than_0_6_is_refused_naming_the_supported_ones(capsys, make_tree):
    tree = make_tree("0.30.0")
    version_file = tree / "mmseg/version.py"
    version_file.write_text(version_file.read_text().replace("0.30.0", "0.5.0"))
    before = snapshot(tree)
    code, _, err = run_cli(capsys, "apply", tree)
    assert code == 2
    line = one_line_error(err)
    assert "MMSegmentation 0.5.0 is not supported" in line
    assert "0.6.0 to 0.30.0" in line and "1.0.0rc0 to 1.2.2" in line
    assert snapshot(tree) == before


@pytest.mark.parametrize("version", ["0.30.0", "0.16.0"])  # 0.16.0: the DAFormer family's base
def test_apply_force_keeps_a_hand_made_loss_and_revert_puts_it_back(capsys, make_tree, version):
    tree = make_tree(version)
    hand_made = b"# from the old README\r\nclass IoUMetricLoss:\r\n    pass"
    (tree / LOSSES / "iou_metric_loss.py").write_bytes(hand_made)
    commit(tree, "my loss")
    code, _, err = run_cli(capsys, "apply", tree)
    assert code == 1 and "--force" in one_line_error(err)
    assert run_cli(capsys, "apply", tree, "--force")[0] == 0
    assert (tree / APPLY_COPIES_DIR / "original" / LOSSES / "iou_metric_loss.py").read_bytes() == hand_made
    assert run_cli(capsys, "check", tree)[0] == 0
    assert run_cli(capsys, "revert", tree)[0] == 0
    assert (tree / LOSSES / "iou_metric_loss.py").read_bytes() == hand_made
    assert git_status(tree) == ""


def _add_to_init(init, imports, names):
    """The recipe's edit of an __init__: imports after the last one, names at the end of __all__."""
    text = init.read_text()
    last = list(re.finditer(r"^from \..*\n", text, re.M))[-1]
    text = text[: last.end()] + imports + text[last.end():]
    text = re.sub(r"'\n\]\n", "', " + ", ".join(repr(n) for n in names) + "\n]\n", text)
    init.write_text(text)


@pytest.mark.parametrize("version", ["0.30.0", "0.16.0"])  # 0.16.0: the DAFormer family's base
def test_adopt_takes_over_a_0x_tree_patched_by_hand_and_revert_gives_it_back(capsys, make_tree, version):
    tree = make_tree(version)
    heads, losses = tree / HEADS, tree / LOSSES
    fcn = (heads / "fcn_head.py").read_text()
    fcn = fcn.replace("from .decode_head import BaseDecodeHead", "from .reward_decode_head import RewardDecodeHead")
    (heads / "reward_fcn_head.py").write_text(
        fcn.replace("class FCNHead(BaseDecodeHead)", "class RewardFCNHead(RewardDecodeHead)")
    )
    (heads / "reward_decode_head.py").write_text(
        "from .decode_head import BaseDecodeHead\n\n\nclass RewardDecodeHead(BaseDecodeHead):\n"
        "    \"\"\"Made by hand.\"\"\"\n"
    )
    (losses / "cross_entropy_reward_loss.py").write_text(
        "from ..builder import LOSSES\nfrom .cross_entropy_loss import CrossEntropyLoss\n\n\n"
        "@LOSSES.register_module()\nclass CrossEntropyRewardLoss(CrossEntropyLoss):\n    \"\"\"Made by hand.\"\"\"\n"
    )
    _add_to_init(heads / "__init__.py", "from .reward_decode_head import RewardDecodeHead\n"
                 "from .reward_fcn_head import RewardFCNHead\n", ["RewardDecodeHead", "RewardFCNHead"])
    _add_to_init(losses / "__init__.py", "from .cross_entropy_reward_loss import CrossEntropyRewardLoss\n",
                 ["CrossEntropyRewardLoss"])
    commit(tree, "reward heads by hand")
    hand_patched = snapshot(tree)

    code, _, err = run_cli(capsys, "apply", tree)
    assert code == 1 and "--adopt" in one_line_error(err)
    code, out, _ = run_cli(capsys, "apply", tree, "--adopt")
    assert code == 0
    assert f"  adopted {HEADS}/reward_fcn_head.py:" in out
    assert (
        "@HEADS.register_module()\nclass RewardFCNHead(RewardDecodeHead):" in (heads / "reward_fcn_head.py").read_text()
    )
    assert run_cli(capsys, "check", tree)[0] == 0
    assert run_cli(capsys, "revert", tree)[0] == 0
    assert snapshot(tree) == hand_patched
    assert git_status(tree) == ""


def test_the_0x_templates_replace_lines_that_exist():
    """A `replace` whose line left the shared template would silently keep 1.x's registry."""
    generation = generation_for("0.30.0")
    for spec in generation.templates:
        text = spec.text  # raises when a replaced line is missing
        for old, new in spec.replace:
            assert old not in text and new in text
    assert {s.target for s in generation.templates} == {s.target for s in generation_for("1.2.2").templates}


def _reward_numbers(python, version, dest, out):
    tree = copy_checkout(version, dest)
    plan_apply(MMSegTree.open(tree)).execute()
    worker = Path(__file__).parent / "workers" / "reward_numbers.py"
    result = subprocess.run([python, "-P", str(worker), str(tree), str(out)], cwd=dest.parent,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    import torch

    return torch.load(out)


def test_the_0x_reward_head_gives_the_numbers_of_the_1x_one(tmp_path, python_0x, stack):
    """Every mode, scope, reward and baseline, class weights and sparse labels, under the
    estimator's CPU and GPU policies: the same completed reward_cfg, loss items and logits
    gradients, bit for bit, through each generation's own head API (same torch, same seeds)."""
    one = _reward_numbers(sys.executable, "1.2.2", tmp_path / "one" / "mmsegmentation", tmp_path / "one.pt")
    zero = _reward_numbers(python_0x, "0.30.0", tmp_path / "zero" / "mmsegmentation", tmp_path / "zero.pt")
    assert (one["mmseg"], zero["mmseg"]) == ("1.2.2", "0.30.0")
    assert len(one["results"]) == len(zero["results"]) >= 20
    assert {a["policy"] for a in one["results"]} == {"cpu", "gpu"}
    for a, b in zip(one["results"], zero["results"]):
        assert (a["case"], a["policy"]) == (b["case"], b["policy"])
        assert a["reward_cfg"] == b["reward_cfg"], a["case"]
        for step_a, step_b in zip(a["steps"], b["steps"]):
            assert step_a["losses"].keys() == step_b["losses"].keys(), a["case"]
            for key in step_a["losses"]:
                assert step_a["losses"][key].equal(step_b["losses"][key]), (a["case"], key)
            assert step_a["grad"].abs().sum() > 0
            assert step_a["grad"].equal(step_b["grad"]), a["case"]
