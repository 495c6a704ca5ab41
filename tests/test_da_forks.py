"""Domain-adaptation forks, as their own code is: the tree's BaseDecodeHead decides.

Two forks written by tests/forks.py: DAFormer's MMSeg 0.16.0 (BaseDecodeHead hands
pseudo-label weights, `seg_weight`, to `losses`) and a 1.2.2 port of that family
(`seg_weight` in `loss_by_feat`, no cascade decode head). The reward base takes what the
tree's base passes, imports only what the tree has, and weights each pixel's reward
term by `seg_weight`; a base the reward cannot honour is refused before anything is written.
"""

import re

import pytest

import forks
from conftest import git_status, one_line_error, run_cli, run_python
from test_mmseg_0x import snapshot

HEADS = forks.HEADS


@pytest.fixture
def port_1x(make_tree):
    return forks.daformer_1x(make_tree("1.2.2"))


@pytest.fixture
def daformer(make_tree):
    return forks.daformer_0x(make_tree("0.16.0"))


def test_the_1x_port_gets_a_reward_base_without_a_cascade_head(capsys, port_1x):
    assert run_cli(capsys, "apply", port_1x)[0] == 0
    adapter = (port_1x / HEADS / "reward_decode_head.py").read_text()
    assert "cascade" not in adapter.split('"""')[-1].lower()  # the code, not the docstring
    assert "RewardCascadeDecodeHead" not in (port_1x / HEADS / "__init__.py").read_text()
    assert "                     seg_weight=None) -> dict:" in adapter
    assert "return self.reward_losses(seg_logits, seg_label, seg_weight)" in adapter
    assert run_cli(capsys, "check", port_1x)[0] == 0


def test_the_0x_fork_gets_a_losses_that_takes_seg_weight(capsys, daformer):
    assert run_cli(capsys, "apply", daformer)[0] == 0
    adapter = (daformer / HEADS / "reward_decode_head.py").read_text()
    assert "    def losses(self, seg_logit, seg_label, seg_weight=None):" in adapter
    assert "return self.reward_losses(seg_logit, seg_label, seg_weight)" in adapter
    assert "from .cascade_decode_head import BaseCascadeDecodeHead" in adapter  # 0.16.0 has it


@pytest.mark.parametrize("fork", ["port_1x", "daformer"])
def test_revert_gives_the_fork_back_byte_for_byte(capsys, request, fork):
    tree = request.getfixturevalue(fork)
    before = snapshot(tree)
    assert run_cli(capsys, "apply", tree)[0] == 0
    assert run_cli(capsys, "revert", tree)[0] == 0
    assert snapshot(tree) == before
    assert git_status(tree) == ""


# One pseudo-label step: the tree's own training entry point with seg_weight, then the
# gradient on the logits for weights w, 2w and w with half the pixels at zero, each time
# with the same samples (the same seed).
PSEUDO_LABEL_STEP = """
import torch
{imports}
head = build(dict(type='RewardFCNHead', in_channels=8, channels=8, num_convs=1,
                  num_classes=4, dropout_ratio=0.0, concat_input=False,
                  reward_cfg=dict(scope='image')))  # no history: calls compare
torch.manual_seed(0)
features = [torch.randn(2, 8, 16, 16)]
gt = torch.randint(0, 4, (2, 1, 16, 16))
gt[:, :, :2] = 255
weight = torch.rand(2, 16, 16)
losses = {train_step}
loss = sum(v for k, v in losses.items() if 'loss' in k)
loss.backward()
assert torch.isfinite(loss) and head.conv_seg.weight.grad.abs().sum() > 0

def logits_gradient(w):
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 16, 16, requires_grad=True)
    torch.manual_seed(2)
    losses = {loss_method}
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    return logits.grad

once, twice = logits_gradient(weight), logits_gradient(2 * weight)
assert torch.allclose(twice, 2 * once, atol=1e-6), (twice - 2 * once).abs().max()
half = weight.clone()
half[:, 8:] = 0
masked = logits_gradient(half)
assert masked[:, :, 8:].abs().sum() == 0 and masked[:, :, :8].abs().sum() > 0
assert torch.allclose(masked[:, :, :8], once[:, :, :8], atol=1e-6)
print('ok', sorted(k for k in losses))
"""


def test_a_pseudo_label_step_through_a_reward_head_of_the_1x_port(capsys, port_1x, stack):
    assert run_cli(capsys, "apply", port_1x)[0] == 0
    code = PSEUDO_LABEL_STEP.format(
        imports=(
            "import mmseg.models\nfrom mmengine.structures import PixelData\n"
            "from mmseg.registry import MODELS\nfrom mmseg.structures import SegDataSample\n"
            "build = MODELS.build\n"
            "def samples(gt):\n"
            "    out = []\n"
            "    for label in gt:\n"
            "        s = SegDataSample(); s.gt_sem_seg = PixelData(data=label); out.append(s)\n"
            "    return out\n"
        ),
        train_step="head.loss(features, samples(gt), None, seg_weight=weight)",
        loss_method="head.loss_by_feat(logits, samples(gt), w)",
    )
    result = run_python(code, port_1x)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1].startswith("ok")


def test_a_pseudo_label_step_through_a_reward_head_of_the_0x_fork(capsys, daformer, python_0x):
    assert run_cli(capsys, "apply", daformer)[0] == 0
    code = PSEUDO_LABEL_STEP.format(
        imports=relaxed_import(daformer) + "from mmseg.models.builder import build_head as build\n",
        train_step="head.forward_train(features, [{}] * 2, gt, None, seg_weight=weight)",
        loss_method="head.losses(logits, gt, w)",
    )
    result = run_python(code, daformer, python=python_0x)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'loss_ce_reward'" in result.stdout


def relaxed_import(tree) -> str:
    """`import mmseg.models` of an older 0.x tree in the 0.x stack, whose mmcv-full 1.7.2 is
    newer than the tree's own check allows: mmcv's version reads as the tree's maximum
    while mmseg imports (the check is the tree's only objection)."""
    found = re.search(r"MMCV_MAX = '([\d.]+)'", (tree / "mmseg" / "__init__.py").read_text())
    assert found is not None
    highest = found.group(1)
    return (
        f"import mmcv\nreal, mmcv.__version__ = mmcv.__version__, {highest!r}\n"
        "import mmseg.models\nmmcv.__version__ = real\n"
    )


def test_a_base_loss_method_the_reward_cannot_honour_refuses_every_head_and_apply(capsys, make_tree):
    tree = make_tree("0.16.0")
    forks.edit(tree, f"{HEADS}/decode_head.py", (
        "def losses(self, seg_logit, seg_label):",
        "def losses(self, seg_logit, seg_label, avg_factor=None):",
    ))
    forks.commit(tree, "a loss that takes its normaliser")
    code, out, _ = run_cli(capsys, "list-heads", tree)
    assert code == 0
    assert " 0 compatible" in out.splitlines()[0]
    assert "BaseDecodeHead.losses takes avg_factor (a setting of the loss that the reward loss does not take), " \
        "which the reward loss cannot honour" in out
    before = snapshot(tree)
    code, _, err = run_cli(capsys, "apply", tree)
    assert code == 1
    assert "avg_factor" in one_line_error(err)
    assert snapshot(tree) == before and git_status(tree) == ""


def test_check_names_a_created_file_whose_import_the_tree_no_longer_has(capsys, tree):
    assert run_cli(capsys, "apply", tree, "--heads", "FCNHead")[0] == 0
    (tree / HEADS / "cascade_decode_head.py").unlink()
    code, _, err = run_cli(capsys, "check", tree)
    assert code == 1
    assert (
        f"{HEADS}/reward_decode_head.py:21: imports from mmseg.models.decode_heads.cascade_decode_head, "
        "which the tree does not have"
    ) in err


def test_keywords_the_trees_base_hands_on_reach_the_other_losses(capsys, daformer):
    """VBLC's base takes **kwargs for its other losses: the reward base takes and hands them on."""
    forks.edit(daformer, f"{HEADS}/decode_head.py", (
        "def losses(self, seg_logit, seg_label, seg_weight=None):",
        "def losses(self, seg_logit, seg_label, seg_weight=None, **kwargs):",
    ))
    forks.commit(daformer, "**kwargs for the other losses")
    assert run_cli(capsys, "apply", daformer)[0] == 0
    adapter = (daformer / HEADS / "reward_decode_head.py").read_text()
    assert "    def losses(self, seg_logit, seg_label, seg_weight=None, **kwargs):" in adapter
    assert "return self.reward_losses(seg_logit, seg_label, seg_weight, **kwargs)" in adapter
