"""Stage 1 of verify: each reward head builds, computes a reward loss and backpropagates.

Runs inside the worker, whose import path starts with the tree. Constructor arguments
and inputs come from the generation's data (patches/), not from code.
"""

from __future__ import annotations

import time
import traceback

from ..heads import reward_name


def _tuples(value):
    # TOML has arrays only; MMSeg's heads check tuples in places (is_tuple_of)
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def head_spec(verify: dict, name: str) -> dict:
    """Arguments, inputs and flags for `name`, the defaults overridden by its own entry."""
    own = verify.get("heads", {}).get(name, {})
    return {
        "args": {**_tuples(verify["args"]), **_tuples(own.get("args", {})), "num_classes": verify["num_classes"]},
        "inputs": own.get("inputs", verify["inputs"]),
        "tokens": own.get("tokens", False),
        "cascade": own.get("cascade", False),
        "known": name in verify.get("heads", {}),
    }


def _shapes(output):
    if isinstance(output, (list, tuple)):
        return [_shapes(o) for o in output]
    return tuple(output.shape)


def _loss_total(losses: dict):
    import torch

    total = 0.0
    for key, value in losses.items():
        if "loss" in key:
            total = total + (sum(v.mean() for v in value) if isinstance(value, (list, tuple)) else value.mean())
    return total if isinstance(total, torch.Tensor) else None


def _classifier(head):
    """conv_seg, or the whole head for those that replace it (Segmenter's mask transformer)."""
    classifier = getattr(head, "conv_seg", None)
    return classifier if classifier is not None else head


def check_head(name: str, verify: dict, device: str) -> dict:
    """MMSeg 1.x: Reward<name> built from MODELS, its loss(inputs, data samples, train_cfg)."""
    return _check(name, verify, device, _build_1x, _loss_1x)


def check_head_0x(name: str, verify: dict, device: str) -> dict:
    """MMSeg 0.x: Reward<name> built by build_head, its forward_train(inputs, img_metas,
    gt_semantic_seg [B, 1, H, W], train_cfg); a cascade head's prev_output follows the inputs."""
    return _check(name, verify, device, _build_0x, _loss_0x)


def _build_1x(config: dict):
    from mmseg.registry import MODELS

    return MODELS.build(config)


def _loss_1x(head, features, extra, labels):
    from mmengine.config import ConfigDict
    from mmengine.structures import PixelData

    from mmseg.structures import SegDataSample

    samples = []
    for label in labels:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=label)
        samples.append(sample)
    return head.loss(features, *extra, samples, ConfigDict())


def _build_0x(config: dict):
    from mmseg.models.builder import build_head

    return build_head(config)


def _loss_0x(head, features, extra, labels):
    from mmcv import ConfigDict

    side = labels.shape[-1]
    shape = (side, side, 3)
    img_metas = [dict(img_shape=shape, ori_shape=shape, pad_shape=shape, flip=False) for _ in labels]
    return head.forward_train(features, *extra, img_metas, labels, ConfigDict())


def _check(name: str, verify: dict, device: str, build, loss) -> dict:
    """Build Reward<name> with exactly <name>'s arguments (a drop-in: its default
    CrossEntropyLoss becomes the reward loss), run loss and backward; a result row."""
    import torch

    spec = head_spec(verify, name)
    start = time.perf_counter()
    row = {"name": reward_name(name), "ok": False, "loss": None, "seconds": None, "error": None}
    try:
        torch.manual_seed(0)
        batch, classes, size = verify["batch"], verify["num_classes"], verify["label_size"]
        features = []
        for channels, side in spec["inputs"]:
            x = torch.randn(batch, channels, side, side, device=device)
            features.append([x, torch.randn(batch, channels, device=device)] if spec["tokens"] else x)
        # a cascade head reads the previous head's logits at its own input's resolution
        side = spec["inputs"][-1][1]
        extra = [torch.randn(batch, classes, side, side, device=device)] if spec["cascade"] else []
        labels = torch.randint(0, classes, (batch, 1, size, size), device=device)
        labels[torch.rand(labels.shape, device=device) < 0.2] = 255

        original = build(dict(type=name, **spec["args"])).to(device).train()
        rewarded = build(dict(type=reward_name(name), **spec["args"])).to(device).train()
        with torch.no_grad():
            expected = _shapes(original(features, *extra))
            produced = _shapes(rewarded(features, *extra))
        if produced != expected:
            raise AssertionError(f"output shape {produced} differs from {name}'s {expected}")

        losses = loss(rewarded, features, extra, labels)
        if type(rewarded.loss_decode).__name__ != "CrossEntropyRewardLoss":
            raise AssertionError(f"its default loss became {type(rewarded.loss_decode).__name__}, not the reward loss")
        if not any(key.endswith("reward_mean") for key in losses):
            raise AssertionError(f"no reward statistics in the loss dict ({', '.join(losses)})")
        total = _loss_total(losses)
        if total is None or not torch.isfinite(total):
            raise AssertionError(f"loss is not finite ({total})")
        total.backward()
        classifier = _classifier(rewarded)
        grads = [p.grad for p in classifier.parameters() if p.requires_grad]
        if not grads or any(g is None or not torch.isfinite(g).all() for g in grads) or not any(
            g.abs().sum() > 0 for g in grads
        ):
            raise AssertionError("the classifier got no finite, non-zero gradient")
        row.update(ok=True, loss=float(total.detach()))
    except Exception as exc:  # noqa: BLE001 - every failure is a result to report, not a crash
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()[-1]
        if not spec["known"]:
            detail += f" (no verify arguments for {name} in patches/; defaults were used)"
        row["error"] = detail
        row["traceback"] = traceback.format_exc()
    row["seconds"] = round(time.perf_counter() - start, 3)
    return row
