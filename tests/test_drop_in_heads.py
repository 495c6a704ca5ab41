"""Reward heads are drop-in: a config that swaps only `type` X -> RewardX trains.

For every reward head in the patched tree, one of the tree's own MMSeg configs that uses
X is built with nothing changed but the head types, and its whole model computes a
training loss and backpropagates. The heads' constructor defaults are covered by
`rewardpatch verify`'s stage 1 (tests/test_verify.py), which builds RewardX with the
arguments X gets there and no loss_decode.
"""

import copy
from typing import Any

import pytest

from drop_in import SIDE, SIDES, SIGMOID_CE, config_for, config_texts, sigmoid_refusal, softmax_ce, swap_types


def _reward_heads(patched_tree):
    from mmseg.models.decode_heads.reward_decode_head import RewardDecodeHead
    from mmseg.registry import MODELS

    return sorted(
        name[len("Reward"):] for name, cls in MODELS.module_dict.items()
        if name.startswith("Reward") and isinstance(cls, type) and issubclass(cls, RewardDecodeHead)
    )


def _train_step(model_cfg, side: int) -> None:
    """Build the model and run one training loss + backward on a random batch."""
    import torch
    from mmengine.registry import DefaultScope
    from mmengine.structures import PixelData

    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope("mmseg"):
        model = MODELS.build(model_cfg).train()
    decode = model.decode_head
    num_classes = (decode[-1] if isinstance(decode, torch.nn.ModuleList) else decode).num_classes
    inputs = torch.randn(2, 3, side, side)
    samples = []
    for _ in range(2):
        label = torch.randint(0, num_classes, (1, side, side))
        label[torch.rand(label.shape) < 0.2] = 255
        sample = SegDataSample(metainfo=dict(img_shape=(side, side), pad_shape=(side, side)))
        sample.gt_sem_seg = PixelData(data=label)
        samples.append(sample)
    losses = model.loss(inputs, samples)
    assert [k for k in losses if k.endswith("reward_mean")], f"no reward statistics in {sorted(losses)}"
    total: Any = sum(v.sum() if isinstance(v, torch.Tensor) else sum(x.sum() for x in v)
                     for k, v in losses.items() if "loss" in k)
    assert torch.isfinite(total), total
    total.backward()


@pytest.fixture(scope="module")
def heads(patched_tree):
    return _reward_heads(patched_tree)


def test_the_patched_tree_has_reward_heads_to_try(heads):
    assert len(heads) >= 20


def test_every_reward_head_trains_in_an_mmseg_config_that_swaps_only_its_type(patched_tree, heads):
    from mmengine.config import Config

    texts = config_texts(patched_tree)
    tried, failures = [], []
    for head in heads:
        found = config_for(texts, head, Config.fromfile)
        if found is None:
            continue
        path, cfg = found
        model_cfg = cfg.model
        model_cfg.pop("pretrained", None)
        swap_types(model_cfg, head)
        try:
            if head in SIGMOID_CE:
                with pytest.raises(ValueError, match=sigmoid_refusal(head)):
                    _train_step(copy.deepcopy(model_cfg), SIDES.get(head, SIDE))
                softmax_ce(model_cfg, head)
            _train_step(model_cfg, SIDES.get(head, SIDE))
            tried.append(head)
        except Exception as exc:  # noqa: BLE001 - collect every head's failure, then report them all
            failures.append(f"Reward{head} in {path.relative_to(patched_tree)}: {type(exc).__name__}: {exc}")
    assert not failures, "\n".join(failures)
    assert len(tried) >= 20, tried
