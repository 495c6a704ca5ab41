"""The older MMSeg 0.x releases (0.11.0 to 0.23.0; 0.6.0 to 0.10.0: test_early_releases.py),
where the domain-adaptation family lives.

Reference trees of 0.11.0, 0.16.0, 0.20.2 and 0.23.0 (PyPI sdists; 0.11.0's wheel
carries no configs): the same verdict rules and guarantees as 0.24.1 and 0.30.0 in
test_mmseg_0x.py, and a patched tree imports in the 0.x stack with every reward head
registered and built. These releases predate CrossEntropyLoss's `loss_name` (0.20) and
`avg_non_ignore` (0.23); the inserted reward loss works with the tree's own.
"""

import json

import pytest

from conftest import git_status, run_cli, run_python
from rewardpatch.head_index import COMPATIBLE, INCOMPATIBLE
from rewardpatch.planning import list_heads
from rewardpatch.tree import MMSegTree
from test_da_forks import relaxed_import
from test_mmseg_0x import COMPATIBLE_0X, NOT_HEADS, OWN_LOSS, snapshot

RELEASES = ["0.11.0", "0.16.0", "0.20.2", "0.23.0"]
# heads that came later than a release: DPT, ISA, Segformer and STDC in 0.20, K-Net and
# Segmenter in 0.22-0.23, SETR in 0.16
ADDED = {
    "0.11.0": {"DPTHead", "ISAHead", "SegformerHead", "SETRMLAHead", "SETRUPHead", "STDCHead",
               "SegmenterMaskTransformerHead", "IterativeDecodeHead", "KernelUpdateHead", "KernelUpdator"},
    "0.16.0": {"DPTHead", "ISAHead", "SegformerHead", "STDCHead", "SegmenterMaskTransformerHead",
               "IterativeDecodeHead", "KernelUpdateHead", "KernelUpdator"},
    "0.20.2": {"SegmenterMaskTransformerHead", "IterativeDecodeHead", "KernelUpdateHead", "KernelUpdator"},
    "0.23.0": set(),
}


@pytest.mark.parametrize("version", RELEASES)
def test_every_head_of_an_older_release_gets_the_0x_verdict(pristine, version):
    heads = {h.name: h for h in list_heads(MMSegTree.open(pristine(version)))}
    absent = ADDED[version]
    assert set(heads) == (COMPATIBLE_0X | set(OWN_LOSS) | NOT_HEADS) - absent
    assert {n for n, h in heads.items() if h.status == COMPATIBLE} == COMPATIBLE_0X - absent
    assert {n for n, h in heads.items() if h.status == INCOMPATIBLE} == (set(OWN_LOSS) | NOT_HEADS) - absent


@pytest.mark.parametrize("version", RELEASES)
def test_an_older_release_round_trips_byte_for_byte(capsys, make_tree, version):
    tree = make_tree(version)
    before = snapshot(tree)
    code, _, err = run_cli(capsys, "apply", tree)
    assert code == 0, err
    assert run_cli(capsys, "check", tree)[0] == 0
    assert run_cli(capsys, "apply", tree)[0] == 0  # idempotent
    assert run_cli(capsys, "revert", tree)[0] == 0
    assert snapshot(tree) == before
    assert git_status(tree) == ""


BUILD_EVERY_REWARD_HEAD = """
import json
import torch
from mmseg.models.builder import HEADS, build_loss
names = sorted(n for n in HEADS.module_dict if n.startswith('Reward') and n != 'RewardDecodeHead'
               and n != 'RewardCascadeDecodeHead')
loss = build_loss(dict(type='CrossEntropyRewardLoss'))
logits = torch.randn(2, 3, 8, 8, requires_grad=True)
gt = torch.randint(0, 3, (2, 8, 8))
value = loss(logits, gt, ignore_index=255)
value.backward()
assert torch.isfinite(value) and logits.grad.abs().sum() > 0
head = HEADS.build(dict(type='RewardFCNHead', in_channels=8, channels=8, num_convs=1, num_classes=3))
losses = head.forward_train([torch.randn(2, 8, 8, 8)], [{}] * 2, gt[:, None], None)
print(json.dumps(dict(names=names, loss_name=loss.loss_name, keys=sorted(losses))))
"""


@pytest.mark.parametrize("version", RELEASES)
def test_a_patched_older_release_imports_in_the_0x_stack_and_trains_a_reward_head(
    capsys, make_tree, python_0x, version
):
    tree = make_tree(version)
    assert run_cli(capsys, "apply", tree)[0] == 0
    result = run_python(relaxed_import(tree) + BUILD_EVERY_REWARD_HEAD, tree, python=python_0x)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(found["names"]) == {f"Reward{n}" for n in COMPATIBLE_0X - ADDED[version]}
    assert found["loss_name"] == "loss_ce_reward"
    assert "loss_ce_reward" in found["keys"] and "reward_mean" in found["keys"]
