"""Reward heads are drop-in: a config that swaps only `type` X -> RewardX trains.

For every reward head in the patched tree, one of the tree's own MMSeg configs that uses
X is built with nothing changed but the head types, and its whole model computes a
training loss and backpropagates. The heads' constructor defaults are covered by
`rewardpatch verify`'s stage 1 (tests/test_verify.py), which builds RewardX with the
arguments X gets there and no loss_decode.
"""

import copy
import re
from pathlib import Path

import pytest

# Backbones that build without extra packages and run on a 64x64 image; a head whose
# configs use none of them is tried with the first config of its own that builds.
LIGHT_BACKBONES = ("ResNetV1c", "ResNet", "ResNetV1d", "MobileNetV2", "MobileNetV3", "HRNet",
                   "MixVisionTransformer", "STDCContextPathNet", "BiSeNetV1", "CGNet", "FastSCNN")
SIDE = 64
SIDES = {"LRASPPHead": 416}  # its image pooling is a fixed 49x49 window on 1/8 of the input
# Fast-SCNN's configs use CrossEntropyLoss(use_sigmoid=True): a sigmoid per class, which the
# reward head refuses by name (it samples from a softmax); with use_sigmoid=False it trains.
SIGMOID_CE = {"DepthwiseSeparableFCNHead"}


def _reward_heads(patched_tree):
    from mmseg.models.decode_heads.reward_decode_head import RewardDecodeHead
    from mmseg.registry import MODELS

    return sorted(
        name[len("Reward"):] for name, cls in MODELS.module_dict.items()
        if name.startswith("Reward") and isinstance(cls, type) and issubclass(cls, RewardDecodeHead)
    )


def _head_cfgs(model_cfg):
    for key in ("decode_head", "auxiliary_head"):
        heads = model_cfg.get(key)
        yield from heads if isinstance(heads, (list, tuple)) else [heads] if heads else []


def _configs_using(texts: dict[Path, str], head: str) -> list[Path]:
    """Configs of the tree that may build `head`: files naming it, and those inheriting a base that does."""
    pattern = re.compile(rf"type\s*=\s*['\"]{head}['\"]")
    naming = [p for p, text in texts.items() if pattern.search(text)]
    found = [p for p in naming if "_base_" not in p.parts]
    for base in (p for p in naming if "_base_" in p.parts):
        found += [p for p, text in texts.items() if "_base_" not in p.parts and base.name in text]
    return sorted(set(found), key=lambda p: (len(p.name), p.name))


def _config_for(texts: dict[Path, str], head: str):
    from mmengine.config import Config

    fallback = None
    for path in _configs_using(texts, head)[:40]:
        try:
            cfg = Config.fromfile(path)
        except Exception:  # noqa: BLE001 - configs that need packages we do not install
            continue
        if head not in [c["type"] for c in _head_cfgs(cfg.model)]:
            continue
        if cfg.model.get("backbone", {}).get("type") in LIGHT_BACKBONES:
            return path, cfg
        fallback = fallback or (path, cfg)
    return fallback


def _swap_types(model_cfg, head: str) -> None:
    for cfg in _head_cfgs(model_cfg):
        if cfg["type"] == head:
            cfg["type"] = f"Reward{head}"


def _softmax_ce(model_cfg, head: str) -> None:
    for cfg in _head_cfgs(model_cfg):
        losses = cfg.get("loss_decode", [])
        for loss in losses if isinstance(losses, (list, tuple)) else [losses]:
            if cfg["type"] == f"Reward{head}" and loss.get("use_sigmoid"):
                loss["use_sigmoid"] = False


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
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(x.sum() for x in v)
                for k, v in losses.items() if "loss" in k)
    assert torch.isfinite(total), total
    total.backward()


@pytest.fixture(scope="module")
def heads(patched_tree):
    return _reward_heads(patched_tree)


def test_the_patched_tree_has_reward_heads_to_try(heads):
    assert len(heads) >= 20


def test_every_reward_head_trains_in_an_mmseg_config_that_swaps_only_its_type(patched_tree, heads):
    texts = {p: p.read_text(errors="replace") for p in (patched_tree / "configs").rglob("*.py")}
    tried, failures = [], []
    for head in heads:
        found = _config_for(texts, head)
        if found is None:
            continue
        path, cfg = found
        model_cfg = cfg.model
        model_cfg.pop("pretrained", None)
        _swap_types(model_cfg, head)
        try:
            if head in SIGMOID_CE:
                with pytest.raises(ValueError, match=f"loss_decode: Reward{head} samples from a softmax"):
                    _train_step(copy.deepcopy(model_cfg), SIDES.get(head, SIDE))
                _softmax_ce(model_cfg, head)
            _train_step(model_cfg, SIDES.get(head, SIDE))
            tried.append(head)
        except Exception as exc:  # noqa: BLE001 - collect every head's failure, then report them all
            failures.append(f"Reward{head} in {path.relative_to(patched_tree)}: {type(exc).__name__}: {exc}")
    assert not failures, "\n".join(failures)
    assert len(tried) >= 20, tried
