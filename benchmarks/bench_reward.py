"""Speed and memory of the reward computation and of the reward head's loss.

1. Per-image mIoU of 8 x 19 x 512 x 1024 logits, like with like:
   - on the same predictions (one `logits.max(1).indices`, outside the clock):
     ours (`per_image_miou`, one histogram for the batch) against the manual recipe
     (a Python loop over images, host copies, a numpy histogram each);
   - from the logits, both with the same argmax call (`max(1).indices`);
   - the two argmax spellings alone, since on CPU they differ by several times.
2. `loss_by_feat` forward + backward on 8 x 19 x 512 x 1024 logits at label resolution:
   plain CE (FCNHead) against the default reward loss and the other settings (target:
   the default <= 2x CE).
3. Peak memory of that step above its inputs, each variant in a fresh process, in units
   of one logits-sized float tensor (target: the default's extra over CE <= one per
   sample). On CUDA, torch.cuda.max_memory_allocated; on CPU, the peak resident size.

    .venv/bin/python benchmarks/bench_reward.py [--device cpu|cuda] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from machine import describe, one_line  # noqa: E402
from patched_tree import import_patched_mmseg  # noqa: E402

CLASSES, IGNORE = 19, 255
SHAPE = (8, CLASSES, 512, 1024)
VARIANTS = {
    "plain CE (FCNHead)": ("FCNHead", None),
    "default reward_cfg (local, dataset, T=0.5, K=1)": ("RewardFCNHead", {}),
    "local, image": ("RewardFCNHead", {"scope": "image"}),
    "local, batch": ("RewardFCNHead", {"scope": "batch"}),
    "default with K=2": ("RewardFCNHead", {"num_samples": 2}),
    "default with K=4": ("RewardFCNHead", {"num_samples": 4}),
    "reinforce, image, K=2": ("RewardFCNHead", {"mode": "reinforce"}),
}


def manual_recipe_miou(pred, gt):
    """The earlier recipe's shape: per image, host copies, numpy histogram and mean."""
    import numpy as np

    rewards = []
    for b in range(pred.shape[0]):
        labels = pred[b].cpu().numpy()
        truth = gt[b].cpu().numpy()
        mask = truth != IGNORE
        hist = np.bincount(CLASSES * truth[mask].astype(int) + labels[mask],
                           minlength=CLASSES**2).reshape(CLASSES, CLASSES)
        union = hist.sum(0) + hist.sum(1) - np.diag(hist)
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.diag(hist) / union
        rewards.append(np.nanmean(iou[union > 0]))
    return np.array(rewards)


def clock(fn, device, repeats):
    import torch

    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def inputs(device):
    import torch
    from mmengine.structures import PixelData

    from mmseg.structures import SegDataSample

    torch.manual_seed(0)
    logits = torch.randn(*SHAPE, device=device)
    gt = torch.randint(0, CLASSES, (SHAPE[0], *SHAPE[2:]), device=device)
    gt[:, :, :64] = IGNORE
    samples = []
    for label in gt:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=label[None])
        samples.append(sample)
    return logits, gt, samples


def build_head(kind, reward_cfg, device):
    from mmseg.registry import MODELS

    loss = dict(type="CrossEntropyLoss") if reward_cfg is None else dict(type="CrossEntropyRewardLoss")
    extra = {} if reward_cfg is None else {"reward_cfg": reward_cfg}
    return MODELS.build(dict(type=kind, in_channels=4, channels=4, num_convs=1, num_classes=CLASSES,
                             loss_decode=loss, **extra)).to(device)


def loss_step(head, logits, samples):
    def run():
        param = logits.clone().requires_grad_(True)
        losses = head.loss_by_feat(param, samples)
        sum(v for k, v in losses.items() if "loss" in k).backward()
    return run


def peak_memory(variant: str, device: str) -> float:
    """In a fresh process: peak memory of one step above its inputs, in logits-sized tensors."""
    import torch

    import_patched_mmseg()
    kind, reward_cfg = VARIANTS[variant]
    head = build_head(kind, reward_cfg, device)
    logits, _, samples = inputs(device)
    # run the code paths once on a small input: lazy allocations do not count
    loss_step(head, logits[:, :, :16, :16].contiguous(), _crop(samples, 16))()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        loss_step(head, logits, samples)()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        # the kernel's high-water mark of resident memory, reset just before the step
        # (getrusage's ru_maxrss cannot be reset, so an earlier peak would mask the step's)
        Path("/proc/self/clear_refs").write_text("5")
        base = _status_bytes("VmRSS")
        loss_step(head, logits, samples)()
        peak = _status_bytes("VmHWM")
    return (peak - base) / (logits.numel() * 4)


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _crop(samples, size):
    from mmengine.structures import PixelData

    from mmseg.structures import SegDataSample

    cropped = []
    for sample in samples:
        small = SegDataSample()
        small.gt_sem_seg = PixelData(data=sample.gt_sem_seg.data[:, :size, :size])
        cropped.append(small)
    return cropped


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)  # one variant, in a child process
    args = parser.parse_args()
    if args.memory_of:
        print(json.dumps(peak_memory(args.memory_of, args.device)))
        return 0
    import_patched_mmseg()
    import numpy as np
    import torch

    from mmseg.models.losses.iou_metric_loss import per_image_miou
    from mmseg.models.losses.reward_estimator import check_reward_cfg

    device, repeats = args.device, args.repeats
    logits, gt, samples = inputs(device)
    pred = logits.max(1).indices
    assert np.allclose(per_image_miou(pred, gt, CLASSES, IGNORE).cpu().numpy(), manual_recipe_miou(pred, gt),
                       atol=1e-5), "the two rewards disagree"
    reward = {
        "same predictions: ours (per_image_miou)": clock(lambda: per_image_miou(pred, gt, CLASSES, IGNORE),
                                                         device, repeats),
        "same predictions: manual recipe (loop, numpy)": clock(lambda: manual_recipe_miou(pred, gt), device,
                                                               repeats),
        "from logits: ours, max(1).indices": clock(
            lambda: per_image_miou(logits.max(1).indices, gt, CLASSES, IGNORE), device, repeats),
        "from logits: manual recipe, max(1).indices": clock(
            lambda: manual_recipe_miou(logits.max(1).indices, gt), device, repeats),
        "argmax alone: logits.argmax(1)": clock(lambda: logits.argmax(1), device, repeats),
        "argmax alone: logits.max(1).indices": clock(lambda: logits.max(1).indices, device, repeats),
    }

    loss = {name: clock(loss_step(build_head(kind, cfg, device), logits, samples), device, repeats)
            for name, (kind, cfg) in VARIANTS.items()}
    ce = loss["plain CE (FCNHead)"]
    ratios = {name: round(seconds / ce, 2) for name, seconds in loss.items()}

    del logits, gt, samples, pred
    memory = {}
    for name in VARIANTS:
        child = subprocess.run([sys.executable, __file__, "--device", device, "--memory-of", name],
                               capture_output=True, text=True, check=True)
        memory[name] = round(json.loads(child.stdout.strip().splitlines()[-1]), 2)
    extra = {name: round(value - memory["plain CE (FCNHead)"], 2) for name, value in memory.items()}

    gpu = torch.cuda.get_device_name(0) if device == "cuda" else None
    machine = describe(gpu)
    result = {
        "benchmark": "reward computation, loss_by_feat cost and memory", "device": device, "machine": machine,
        "shape": list(SHAPE), "repeats": repeats, "default_reward_cfg": check_reward_cfg(None),
        "miou_8x19x512x1024_s": {k: round(v, 4) for k, v in reward.items()},
        "loss_by_feat_fwd_bwd_s": {k: round(v, 4) for k, v in loss.items()},
        "over_ce": ratios, "default_over_ce_target": 2.0,
        "peak_memory_logits": memory, "extra_memory_over_ce_logits": extra,
        "extra_memory_target": "<= one logits-sized float tensor per sample",
    }
    out = HERE / "results" / f"reward_{device}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"per-image mIoU, 8 x 19 x 512 x 1024, median of {repeats} ({device}; {one_line(machine)})")
    for name, seconds in reward.items():
        print(f"  {name:<48}{seconds * 1000:>9.1f} ms")
    print("loss_by_feat forward + backward, logits at label resolution; peak memory above the inputs "
          "(logits-sized tensors)")
    for name, seconds in loss.items():
        print(f"  {name:<50}{seconds * 1000:>9.1f} ms  {ratios[name]:>5.2f}x CE   memory {memory[name]:5.2f} "
              f"({extra[name]:+.2f} vs CE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
