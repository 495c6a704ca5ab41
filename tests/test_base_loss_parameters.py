"""Forks whose BaseDecodeHead's loss method takes more than upstream's: each extra parameter
is read by its kind (`[adapter.parameters]`, patches/common.toml; head_api.py).

Per-pixel weights under another name (`pixel_weights`) scale the reward as `seg_weight`
does; context (`train_cfg`, `img_metas`, `features`) reaches the other losses of
loss_decode by keyword, as **kwargs do. The forks are written by tests/forks.py: a 0.14-like
0.x base with `train_cfg, pixel_weights`, a 0.18-like one with `img_metas`, and 1.x bases
with `features` and with `train_cfg, pixel_weights`.
"""

import json

import pytest

import forks
from conftest import copy_checkout, run_cli, run_python
from rewardpatch.planning import plan_apply
from rewardpatch.tree import MMSegTree
from test_da_forks import relaxed_import
from test_mmseg_0x import snapshot
from test_tree_linters import lint

HEADS = forks.HEADS
ADAPTER = f"{HEADS}/reward_decode_head.py"

# fork -> (release, what the adapter's loss method hands to reward_losses)
FORKS = {
    "pixel_weights_0x": ("0.16.0", "self.reward_losses(\n"
                                   "            seg_logit, seg_label, pixel_weights, train_cfg=train_cfg)"),
    "img_metas_0x": ("0.30.0", "self.reward_losses(seg_logit, seg_label, img_metas=img_metas)"),
    "features_1x": ("1.2.2", "self.reward_losses(seg_logits, seg_label, features=features)"),
    "pixel_weights_1x": ("1.2.2", "self.reward_losses(\n"
                                  "            seg_logits, seg_label, pixel_weights, train_cfg=train_cfg)"),
}


@pytest.fixture(params=sorted(FORKS))
def fork(request, make_tree):
    release, _ = FORKS[request.param]
    return request.param, getattr(forks, request.param)(make_tree(release))


def verdicts(capsys, tree) -> dict:
    code, out, _ = run_cli(capsys, "list-heads", tree, "--json")
    assert code == 0
    return {h["name"]: h for h in json.loads(out)}


def test_a_base_with_extra_loss_parameters_leaves_every_head_as_upstream_calls_it(capsys, fork, pristine):
    name, tree = fork
    upstream = verdicts(capsys, pristine(FORKS[name][0]))
    assert {h: v["status"] for h, v in verdicts(capsys, tree).items()} == {h: v["status"] for h, v in upstream.items()}
    assert sum(v["status"] == "compatible" for v in upstream.values()) >= 22


def test_apply_fits_the_adapter_and_check_finds_it_intact(capsys, fork):
    name, tree = fork
    before = snapshot(tree)
    assert run_cli(capsys, "apply", tree)[0] == 0
    assert f"return {FORKS[name][1]}\n" in (tree / ADAPTER).read_text()
    assert run_cli(capsys, "check", tree)[0] == 0
    assert run_cli(capsys, "revert", tree)[0] == 0
    assert snapshot(tree) == before


def test_the_fitted_adapter_of_a_1x_fork_passes_the_trees_linters(tmp_path, stack):
    tree = forks.pixel_weights_1x(copy_checkout("1.2.2", tmp_path / "fork"))
    plan_apply(MMSegTree.open(tree)).execute()
    assert lint(tree, [ADAPTER]) == []


def test_the_fitted_adapter_of_a_0x_fork_passes_the_trees_linters(tmp_path, python_0x):
    tree = forks.pixel_weights_0x(copy_checkout("0.30.0", tmp_path / "fork"))
    plan_apply(MMSegTree.open(tree)).execute()
    assert lint(tree, [ADAPTER], python_0x) == []


# A training step through the tree's own entry point, with a loss beside the reward that
# records the keywords it gets (where the release's loss_decode takes a list); then, where
# the base takes per-pixel weights, the gradient on the logits through the fork's
# parameter: it doubles with the weights, is zero where they are, and equals the gradient
# with the same weights given as seg_weight (RewardHeadMixin.reward_losses).
TRAINING_STEP = """
import torch
{imports}

@REGISTRY.register_module()
class KeywordProbe(torch.nn.Module):
    seen = []

    def __init__(self, loss_name='loss_probe'):
        super().__init__()
        self._loss_name = loss_name

    def forward(self, cls_score, label, weight=None, ignore_index=255, **kwargs):
        KeywordProbe.seen.append(sorted(kwargs))
        return cls_score.sum() * 0

    @property
    def loss_name(self):
        return self._loss_name

head = build(dict(type='RewardFCNHead', in_channels=8, channels=8, num_convs=1,
                  num_classes=4, dropout_ratio=0.0, concat_input=False,
                  {loss_decode}reward_cfg=dict(scope='image')))  # no history: calls compare
torch.manual_seed(0)
features = [torch.randn(2, 8, 16, 16)]
gt = torch.randint(0, 4, (2, 1, 16, 16))
gt[:, :, :2] = 255
weight = torch.rand(2, 16, 16)
losses = {train_step}
loss = sum(v for k, v in losses.items() if 'loss' in k)
loss.backward()
assert torch.isfinite(loss) and head.conv_seg.weight.grad.abs().sum() > 0
assert 'loss_ce_reward' in losses, sorted(losses)
print('probe', KeywordProbe.seen)

def logits_gradient(loss_method, w):
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 16, 16, requires_grad=True)
    torch.manual_seed(2)
    losses = loss_method(logits, w)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    return logits.grad

if {weighted}:
    fork = lambda logits, w: {loss_method}
    seg_weight = lambda logits, w: head.reward_losses(logits, gt, w)
    once = logits_gradient(fork, weight)
    assert torch.allclose(logits_gradient(fork, 2 * weight), 2 * once, atol=1e-6)
    half = weight.clone()
    half[:, 8:] = 0
    masked = logits_gradient(fork, half)
    assert masked[:, :, 8:].abs().sum() == 0 and masked[:, :, :8].abs().sum() > 0
    assert torch.allclose(once, logits_gradient(seg_weight, weight), atol=1e-7)
    assert not torch.allclose(once, logits_gradient(fork, None), atol=1e-4)
    print('weighted')
print('ok')
"""

IMPORTS_1X = (
    "import mmseg.models\nfrom mmengine.structures import PixelData\n"
    "from mmseg.registry import MODELS as REGISTRY\nfrom mmseg.structures import SegDataSample\n"
    "build = REGISTRY.build\n"
    "def samples(gt):\n"
    "    out = []\n"
    "    for label in gt:\n"
    "        s = SegDataSample(); s.gt_sem_seg = PixelData(data=label); out.append(s)\n"
    "    return out\n"
)
IMPORTS_0X = "from mmseg.models.builder import LOSSES as REGISTRY, build_head as build\n"
PROBED = "loss_decode=[dict(type='CrossEntropyLoss'), dict(type='KeywordProbe')],\n                  "

# fork -> (loss_decode, training step, loss method with weights w, what the probe must see)
STEPS = {
    "pixel_weights_0x": ("", "head.forward_train(features, [{}] * 2, gt, dict(), pixel_weights=weight)",
                         "head.losses(logits, gt, dict(), w)", None),
    "img_metas_0x": (PROBED, "head.forward_train(features, [{}] * 2, gt, dict())", None, ["img_metas"]),
    "features_1x": (PROBED, "head.loss(features, samples(gt), None)", None, ["features"]),
    "pixel_weights_1x": (PROBED, "head.loss(features, samples(gt), dict(), pixel_weights=weight)",
                         "head.loss_by_feat(logits, samples(gt), dict(), w)", ["train_cfg"]),
}


@pytest.mark.stack  # its stack, 0.x's or 1.x's by the fork, comes through getfixturevalue
def test_a_training_step_hands_each_parameter_on_by_its_kind(capsys, fork, request):
    name, tree = fork
    assert run_cli(capsys, "apply", tree)[0] == 0
    loss_decode, train_step, loss_method, probed = STEPS[name]
    if name.endswith("_0x"):
        python = request.getfixturevalue("python_0x")
        # 0.16.0 asserts an older mmcv-full than the 0.x stack's; 0.30.0 takes it
        imports = (relaxed_import(tree) if FORKS[name][0] == "0.16.0" else "import mmseg.models\n") + IMPORTS_0X
    else:
        request.getfixturevalue("stack")
        python, imports = None, IMPORTS_1X
    code = TRAINING_STEP.format(imports=imports, loss_decode=loss_decode, train_step=train_step,
                                loss_method=loss_method, weighted=loss_method is not None)
    result = run_python(code, tree, **({"python": python} if python else {}))
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "ok"
    assert ("weighted" in lines) == (loss_method is not None)
    if probed is not None:
        assert f"probe [{probed!r}]" in lines
