"""Stage 1 of verify: each reward head builds, computes a reward loss and backpropagates.

Runs inside the worker, whose import path starts with the tree. Constructor arguments
and inputs come from the generation's data (patches/), not from code.

Where the tree's BaseDecodeHead training entry (1.x `loss`, 0.x `forward_train`) takes the
generation's pixel-weight parameter (`[adapter] pixel_weight`, `seg_weight` in the
domain-adaptation forks), each head whose own entry takes it too is checked with a
pseudo-label step: a random per-pixel weight [B, H, W] handed to that entry, as a
self-training step hands the teacher's confidence. The row's `pixel_weight` names the
parameter then (None otherwise).
"""

from __future__ import annotations

import inspect
import time
import traceback

from ..mmseg_generations import VerifySpec
from ..naming import reward_name


def _tuples(value):
    # TOML has arrays only; MMSeg's heads check tuples in places (is_tuple_of)
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def head_spec(verify: VerifySpec, name: str, given: dict | None = None) -> dict:
    """Arguments, inputs and flags for `name`: the defaults overridden by its own entry (what
    verify guesses), then by `given`, the user's (--head-args; lists become tuples, as TOML's)."""
    own = verify.heads.get(name, {})
    return {
        "args": {**_tuples(verify.args), **_tuples(own.get("args", {})), **_tuples(given or {}),
                 "num_classes": verify.num_classes},
        "given": sorted(given or {}),
        "inputs": own.get("inputs", verify.inputs),
        "tokens": own.get("tokens", False),
        "cascade": own.get("cascade", False),
        "known": name in verify.heads,
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


def check_head(name: str, verify: VerifySpec, device: str, pixel_weight: str | None = None,
               given: dict | None = None) -> dict:
    """MMSeg 1.x: Reward<name> built from MODELS, its loss(inputs, data samples, train_cfg)."""
    return _check(name, verify, device, _build_1x, _loss_1x, "loss", pixel_weight, given)


def check_head_0x(name: str, verify: VerifySpec, device: str, pixel_weight: str | None = None,
                  given: dict | None = None) -> dict:
    """MMSeg 0.x: Reward<name> built by build_head, its forward_train(inputs, img_metas,
    gt_semantic_seg [B, 1, H, W], train_cfg); a cascade head's prev_output follows the inputs."""
    return _check(name, verify, device, _build_0x, _loss_0x, "forward_train", pixel_weight, given)


def takes(cls, method: str, parameter: str | None) -> bool:
    """Whether cls.method names `parameter` in its signature."""
    if not parameter or not hasattr(cls, method):
        return False
    try:
        return parameter in inspect.signature(getattr(cls, method)).parameters
    except (TypeError, ValueError):
        return False


def _tree_pixel_weight(entry: str, pixel_weight: str | None) -> str | None:
    """`pixel_weight` when the tree's own BaseDecodeHead.<entry> takes it, else None."""
    from mmseg.models.decode_heads.decode_head import BaseDecodeHead

    return pixel_weight if takes(BaseDecodeHead, entry, pixel_weight) else None


def _build_1x(config: dict):
    from mmseg.registry import MODELS

    return MODELS.build(config)


def _loss_1x(head, features, extra, labels, weight: dict):
    from mmengine.config import ConfigDict
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    samples = []
    for label in labels:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=label)
        samples.append(sample)
    return head.loss(features, *extra, samples, ConfigDict(), **weight)


def _build_0x(config: dict):
    from mmseg.models.builder import build_head

    return build_head(config)


def _loss_0x(head, features, extra, labels, weight: dict):
    from mmcv import ConfigDict

    side = labels.shape[-1]
    shape = (side, side, 3)
    img_metas = [dict(img_shape=shape, ori_shape=shape, pad_shape=shape, flip=False) for _ in labels]
    return head.forward_train(features, *extra, img_metas, labels, ConfigDict(), **weight)


# How torch and mmcv say an operation has no kernel for the device it was called on (mmcv-full
# 1.3's CrissCrossAttention on the CPU: "ca is not implemented on the CPU").
_NO_KERNEL = ("not implemented on the cpu", "not implemented for 'cpu'", "not implemented on cpu",
              "from the 'cpu' backend", "not implemented on the gpu", "not compiled with gpu support")


def _no_kernel_here(exc: BaseException) -> bool:
    return any(words in str(exc).lower() for words in _NO_KERNEL)


def _last_line(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()[-1]


def _arguments(spec: dict, name: str) -> str:
    """What a build failure names: the arguments used, and where they came from."""
    shown = ", ".join(f"{key}={value!r}" for key, value in spec["args"].items())
    if spec["given"]:
        source = f"the arguments verify guessed, {', '.join(spec['given'])} from --head-args"
    elif spec["known"]:
        source = "the arguments verify guessed"
    else:
        source = f"the arguments verify guessed (patches/ names none for {name}: the defaults)"
    return f"{source} ({shown})"


def _check(name: str, verify: VerifySpec, device: str, build, loss, entry: str, pixel_weight: str | None,
           given: dict | None = None) -> dict:
    """Build Reward<name> with exactly <name>'s arguments (a drop-in: its default
    CrossEntropyLoss becomes the reward loss), run loss (a pseudo-label step where the
    tree's training entry takes the pixel weight) and backward; a result row.

    <name> itself is built and run first, with the same arguments and inputs: when that fails,
    verify's guess is what failed (`failed_at` "build", the error names the arguments and
    --head-args), not the reward head (`failed_at` "reward")."""
    import torch

    spec = head_spec(verify, name, given)
    start = time.perf_counter()
    row = {"name": reward_name(name), "ok": False, "loss": None, "seconds": None, "error": None,
           "pixel_weight": None, "failed_at": None, "args": spec["args"]}
    stage, built = "build", False
    try:
        torch.manual_seed(0)
        batch, classes, size = verify.batch, verify.num_classes, verify.label_size
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
        built = True
        try:  # built before <name> runs, so that both draw their weights as they always have
            rewarded = build(dict(type=reward_name(name), **spec["args"])).to(device).train()
        except Exception:
            stage = "reward"
            raise
        with torch.no_grad():
            try:
                expected = _shapes(original(features, *extra))
            except RuntimeError as exc:
                if not _no_kernel_here(exc):
                    raise
                row.update(skipped=f"{name} itself does not run on {device} here ({_last_line(exc)}); "
                           "verify it on a device that has the op")
                row["seconds"] = round(time.perf_counter() - start, 3)
                return row
            stage = "reward"  # <name> built and ran with these arguments: what fails now is the reward's
            produced = _shapes(rewarded(features, *extra))
        if produced != expected:
            raise AssertionError(f"output shape {produced} differs from {name}'s {expected}")

        weight = {}
        parameter = _tree_pixel_weight(entry, pixel_weight)
        if parameter and takes(type(rewarded), entry, parameter):
            # a pseudo-label step: the teacher's confidence per pixel, at the labels' size
            weight = {parameter: torch.rand(batch, size, size, device=device)}
            row["pixel_weight"] = parameter
        losses = loss(rewarded, features, extra, labels, weight)
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
        detail = _last_line(exc)
        if stage == "build":
            arguments = _arguments(spec, name)
            what = f"{name} built with {arguments} fails on verify's inputs" if built else \
                f"could not build {name} with {arguments}"
            detail = f"{what}: {detail}; give its arguments with --head-args '{reward_name(name)}={{...}}'"
        row.update(error=detail, failed_at=stage, traceback=traceback.format_exc())
    row["seconds"] = round(time.perf_counter() - start, 3)
    return row
