"""apply --adopt takes over a tree patched by hand with the old recipe; revert gives it back.

The fixture follows the recipe literally: copy fcn_head.py to reward_fcn_head.py renaming
FCNHead to RewardFCNHead on a hand-made RewardDecodeHead, write iou_metric_loss.py and
cross_entropy_reward_loss.py by hand, add their imports and __all__ names to both
__init__ files (a helper imported too, a name listed twice), and commit.
"""

import os
import subprocess
from pathlib import Path

import pytest

from conftest import git_status, one_line_error, run_cli, run_python
from rewardpatch.checkout import COMMIT_ENV
from rewardpatch.tree import APPLY_COPIES_DIR

HEADS = "mmseg/models/decode_heads"
LOSSES = "mmseg/models/losses"

REWARD_DECODE_HEAD = '''\
# Reward fine-tuning base head, from the old README.
import torch

from ..losses.iou_metric_loss import per_image_miou
from .decode_head import BaseDecodeHead


class RewardDecodeHead(BaseDecodeHead):
    """Weights each image's cross-entropy by 1 - its mIoU."""

    def loss_by_feat(self, seg_logits, batch_data_samples):
        losses = super().loss_by_feat(seg_logits, batch_data_samples)
        with torch.no_grad():
            pred = seg_logits.argmax(dim=1)
        losses['reward'] = per_image_miou(pred, pred, self.out_channels).mean()
        return losses
'''

IOU_METRIC_LOSS = '''\
import torch


def class_histogram(pred, gt, num_classes):
    """A helper the recipe exported too."""
    return torch.bincount(gt.flatten() * num_classes + pred.flatten(),
                          minlength=num_classes**2)


def per_image_miou(pred, gt, num_classes):
    return torch.ones(pred.shape[0])
'''

CROSS_ENTROPY_REWARD_LOSS = '''\
from mmseg.registry import MODELS
from .cross_entropy_loss import CrossEntropyLoss


@MODELS.register_module()
class CrossEntropyRewardLoss(CrossEntropyLoss):
    """Cross-entropy scaled by a reward (made by hand)."""
'''


def follow_the_recipe(tree, extra=None):
    """Patch `tree` by hand as the old instructions said, and commit it."""
    heads, losses = tree / HEADS, tree / LOSSES
    fcn = (heads / "fcn_head.py").read_text()
    fcn = fcn.replace("from .decode_head import BaseDecodeHead", "from .reward_decode_head import RewardDecodeHead")
    fcn = fcn.replace("class FCNHead(BaseDecodeHead)", "class RewardFCNHead(RewardDecodeHead)")
    (heads / "reward_fcn_head.py").write_text(fcn)
    (heads / "reward_decode_head.py").write_text(REWARD_DECODE_HEAD)
    (losses / "iou_metric_loss.py").write_text(IOU_METRIC_LOSS)
    (losses / "cross_entropy_reward_loss.py").write_text(CROSS_ENTROPY_REWARD_LOSS)

    init = heads / "__init__.py"
    text = init.read_text().replace(
        "from .vpd_depth_head import VPDDepthHead\n",
        "from .vpd_depth_head import VPDDepthHead\n"
        "from .reward_decode_head import RewardDecodeHead\n"
        "from .reward_fcn_head import RewardFCNHead\n",
    )
    init.write_text(text.replace(
        "'SideAdapterCLIPHead'\n]",
        "'SideAdapterCLIPHead',\n    'RewardDecodeHead', 'RewardFCNHead', 'RewardFCNHead'\n]",
    ))
    init = losses / "__init__.py"
    text = init.read_text().replace(
        "from .utils import", "from .cross_entropy_reward_loss import CrossEntropyRewardLoss\n"
        "from .iou_metric_loss import class_histogram, per_image_miou\nfrom .utils import"
    )
    init.write_text(text.replace(
        "'SiLogLoss'\n]", "'SiLogLoss', 'CrossEntropyRewardLoss',\n    'per_image_miou', 'class_histogram'\n]"
    ))
    for path, text in (extra or {}).items():
        (tree / path).write_text(text)
    env = {**os.environ, **COMMIT_ENV}
    subprocess.run(["git", "add", "--all"], cwd=tree, env=env, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "reward heads by hand"], cwd=tree, env=env, check=True)
    assert git_status(tree) == ""


def snapshot(tree):
    return {p.relative_to(tree): p.read_bytes() for p in tree.rglob("*") if p.is_file() and ".git" not in p.parts}


@pytest.fixture
def hand_patched(tree):
    follow_the_recipe(tree)
    return tree


def test_apply_without_adopt_refuses_naming_adopt(capsys, hand_patched):
    before = snapshot(hand_patched)
    for extra in ((), ("--force",)):
        code, _, err = run_cli(capsys, "apply", hand_patched, *extra)
        assert code == 1
        line = one_line_error(err)
        assert "--adopt" in line and f"{HEADS}/reward_fcn_head.py" in line
    assert snapshot(hand_patched) == before


def test_adopt_prints_one_line_per_adopted_file_and_how_to_keep_the_old_behaviour(capsys, hand_patched):
    code, out, _ = run_cli(capsys, "apply", hand_patched, "--adopt")
    assert code == 0
    adopted = [line for line in out.splitlines() if line.startswith("  adopted ")]
    assert sorted(line.split()[1].rstrip(":") for line in adopted) == sorted([
        f"{HEADS}/__init__.py", f"{HEADS}/reward_decode_head.py", f"{HEADS}/reward_fcn_head.py",
        f"{LOSSES}/__init__.py", f"{LOSSES}/cross_entropy_reward_loss.py", f"{LOSSES}/iou_metric_loss.py",
    ])
    assert "reward_cfg=dict(mode='weighted_ce')" in out


def test_adopt_keeps_each_hand_made_file_byte_for_byte(capsys, hand_patched):
    before = snapshot(hand_patched)
    assert run_cli(capsys, "apply", hand_patched, "--adopt")[0] == 0
    for path in (f"{HEADS}/reward_fcn_head.py", f"{LOSSES}/iou_metric_loss.py", f"{HEADS}/__init__.py"):
        assert (hand_patched / APPLY_COPIES_DIR / "original" / path).read_bytes() == before[Path(path)]


def test_the_adopted_head_is_generated_under_the_same_class_name(capsys, hand_patched):
    assert run_cli(capsys, "apply", hand_patched, "--adopt")[0] == 0
    generated = (hand_patched / HEADS / "reward_fcn_head.py").read_text()
    assert generated.startswith("# Generated by rewardpatch")
    assert "class RewardFCNHead(RewardDecodeHead):" in generated


def test_the_adopted_init_files_import_each_name_once_and_no_hand_made_helper(capsys, hand_patched):
    assert run_cli(capsys, "apply", hand_patched, "--adopt")[0] == 0
    heads = (hand_patched / HEADS / "__init__.py").read_text()
    assert heads.count("'RewardFCNHead'") == 1 and heads.count("import RewardFCNHead") == 1
    assert heads.count("'RewardDecodeHead'") == 1
    losses = (hand_patched / LOSSES / "__init__.py").read_text()
    assert "class_histogram" not in losses
    assert losses.count("'per_image_miou'") == 1 and losses.count("'CrossEntropyRewardLoss'") == 1


def test_check_passes_after_adopt(capsys, hand_patched):
    assert run_cli(capsys, "apply", hand_patched, "--adopt")[0] == 0
    code, out, err = run_cli(capsys, "check", hand_patched)
    assert code == 0, err


def test_revert_after_adopt_restores_the_hand_made_tree_byte_for_byte(capsys, hand_patched):
    before = snapshot(hand_patched)
    assert run_cli(capsys, "apply", hand_patched, "--adopt")[0] == 0
    code, _, err = run_cli(capsys, "revert", hand_patched)
    assert code == 0, err
    assert snapshot(hand_patched) == before
    assert git_status(hand_patched) == ""


def test_a_reward_class_in_a_file_apply_does_not_write_is_removed_then_put_back(capsys, tree):
    psp = (tree / HEADS / "psp_head.py").read_text()
    psp = psp.replace("class PSPHead(BaseDecodeHead)", "class RewardPSPHead(BaseDecodeHead)")
    follow_the_recipe(tree, {f"{HEADS}/reward_psp.py": psp})
    before = snapshot(tree)
    code, out, _ = run_cli(capsys, "apply", tree, "--adopt")
    assert code == 0
    assert not (tree / HEADS / "reward_psp.py").exists()
    assert "class RewardPSPHead(" in (tree / HEADS / "reward_psp_head.py").read_text()
    assert f"adopted {HEADS}/reward_psp.py: removed, RewardPSPHead generated in {HEADS}/reward_psp_head.py" in out
    assert run_cli(capsys, "revert", tree)[0] == 0
    assert snapshot(tree) == before


@pytest.mark.parametrize("name, why", [("RewardMagicHead", "not Reward<X> for a head X"),
                                       ("RewardPointHead", "PointHead cannot get a reward version"),
                                       ("MyRewardHead", "not Reward<X> for a head X")])
def test_a_hand_made_class_adopt_cannot_generate_is_refused_by_name(capsys, tree, name, why):
    extra = {f"{HEADS}/reward_fcn_head_v2.py": f"from .reward_decode_head import RewardDecodeHead\n\n\n"
             f"class {name}(RewardDecodeHead):\n    pass\n"}
    follow_the_recipe(tree, extra)
    before = snapshot(tree)
    code, _, err = run_cli(capsys, "apply", tree, "--adopt")
    assert code == 1
    line = one_line_error(err)
    assert f"{HEADS}/reward_fcn_head_v2.py defines {name}" in line and why in line
    assert snapshot(tree) == before


def test_revert_refuses_when_an_adopted_init_changed_since(capsys, hand_patched):
    assert run_cli(capsys, "apply", hand_patched, "--adopt")[0] == 0
    init = hand_patched / LOSSES / "__init__.py"
    init.write_text(init.read_text() + "# mine\n")
    code, _, err = run_cli(capsys, "revert", hand_patched)
    assert code == 1
    assert "--force" in one_line_error(err)


def test_the_adopted_tree_builds_a_config_naming_the_hand_made_class(capsys, hand_patched, stack):
    assert run_cli(capsys, "apply", hand_patched, "--adopt")[0] == 0
    code = (
        "import mmseg.models\n"
        "from mmseg.registry import MODELS\n"
        "head = MODELS.build(dict(type='RewardFCNHead', in_channels=8, channels=4, num_classes=3))\n"
        "print(type(head).__name__, type(head).__module__)\n"
    )
    result = run_python(code, hand_patched)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].split() == ["RewardFCNHead", "mmseg.models.decode_heads.reward_fcn_head"]


def test_adopt_on_a_patched_tree_gives_back_the_hand_made_lines_without_rewardpatch_exports(capsys, tree):
    init = tree / HEADS / "__init__.py"
    unpatched = init.read_text()
    assert run_cli(capsys, "apply", tree, "--heads", "PSPHead")[0] == 0
    fcn = (tree / HEADS / "fcn_head.py").read_text()
    (tree / HEADS / "reward_fcn_head.py").write_text(fcn.replace("class FCNHead(", "class RewardFCNHead("))
    vpd = "from .vpd_depth_head import VPDDepthHead\n"
    init.write_text(init.read_text().replace(vpd, vpd + "from .reward_fcn_head import RewardFCNHead\n"))
    assert run_cli(capsys, "apply", tree, "--adopt", "--allow-dirty")[0] == 0
    assert run_cli(capsys, "check", tree)[0] == 0
    assert run_cli(capsys, "revert", tree)[0] == 0
    assert init.read_text() == unpatched.replace(vpd, vpd + "from .reward_fcn_head import RewardFCNHead\n")
    assert (tree / HEADS / "reward_fcn_head.py").read_text() == fcn.replace("class FCNHead(", "class RewardFCNHead(")


def test_a_hand_made_loss_alone_is_refused_with_force_and_adopt_as_the_ways_out(capsys, tree):
    (tree / LOSSES / "iou_metric_loss.py").write_text(IOU_METRIC_LOSS)
    code, _, err = run_cli(capsys, "apply", tree, "--allow-dirty")
    assert code == 1
    line = one_line_error(err)
    assert f"{LOSSES}/iou_metric_loss.py already exists" in line and "--force" in line and "--adopt" in line


def test_adopt_dry_run_shows_the_kept_copies_and_writes_nothing(capsys, hand_patched):
    before = snapshot(hand_patched)
    code, out, _ = run_cli(capsys, "apply", hand_patched, "--adopt", "--dry-run")
    assert code == 0
    assert f"+++ b/{APPLY_COPIES_DIR}/original/{HEADS}/reward_fcn_head.py" in out
    assert "-from .iou_metric_loss import class_histogram, per_image_miou" in out
    assert snapshot(hand_patched) == before
