"""Speed of the reward computation and of the reward head's loss, against references.

1. Reward of a batch of 8 x 19 x 512 x 1024 logits (per-image mIoU of the argmax):
   - ours: `per_image_miou` on the batch (one histogram for all images, on the device);
   - the manual recipe's style: a Python loop over images, each argmax copied to the host
     and histogrammed with numpy, the mean taken with numpy;
   - the argmax alone, the floor on CPU (both torch spellings: argmax(1), max(1).indices).
2. `loss_by_feat` forward + backward, REINFORCE with K=2 samples against plain CE, on
   8 x 19 x 128 x 256 logits resized to 512 x 1024 (target: <= 2.5x CE on CPU).

    .venv/bin/python benchmarks/bench_reward.py [--device cpu|cuda] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from machine import describe, one_line  # noqa: E402
from patched_tree import import_patched_mmseg  # noqa: E402

CLASSES, IGNORE = 19, 255


def manual_recipe_miou(logits, gt):
    """The earlier recipe's shape: per image, host copies, numpy histogram and mean."""
    rewards = []
    for b in range(logits.shape[0]):
        pred = logits[b].argmax(0).cpu().numpy()
        label = gt[b].cpu().numpy()
        mask = label != IGNORE
        hist = np.bincount(CLASSES * label[mask].astype(int) + pred[mask], minlength=CLASSES**2).reshape(CLASSES, CLASSES)
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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import_patched_mmseg()
    import torch
    from mmengine.structures import PixelData

    from mmseg.models.losses.iou_metric_loss import per_image_miou
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    device, repeats = args.device, args.repeats
    torch.manual_seed(0)
    logits = torch.randn(8, CLASSES, 512, 1024, device=device)
    gt = torch.randint(0, CLASSES, (8, 512, 1024), device=device)
    gt[:, :, :64] = IGNORE

    ours_miou = per_image_miou(logits.max(1).indices, gt, CLASSES, IGNORE).cpu().numpy()
    assert np.allclose(ours_miou, manual_recipe_miou(logits, gt), atol=1e-5), "the two rewards disagree"
    reward = {
        "ours (per_image_miou of max(1).indices)": clock(lambda: per_image_miou(logits.max(1).indices, gt, CLASSES, IGNORE), device, repeats),
        "manual recipe (loop over images, numpy)": clock(lambda: manual_recipe_miou(logits, gt), device, repeats),
        "argmax alone: logits.argmax(1)": clock(lambda: logits.argmax(1), device, repeats),
        "argmax alone: logits.max(1).indices": clock(lambda: logits.max(1).indices, device, repeats),
    }

    small = torch.randn(8, CLASSES, 128, 256, device=device)
    samples = []
    for label in gt:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=label[None])
        samples.append(sample)

    def head(kind):
        loss = dict(type="CrossEntropyLoss") if kind == "FCNHead" else dict(type="CrossEntropyRewardLoss")
        return MODELS.build(dict(type=kind, in_channels=4, channels=4, num_convs=1, num_classes=CLASSES,
                                 loss_decode=loss)).to(device)

    def loss_step(module):
        def run():
            logits_ = small.clone().requires_grad_(True)
            losses = module.loss_by_feat(logits_, samples)
            sum(v for k, v in losses.items() if "loss" in k).backward()
        return run

    loss = {
        "plain CE (FCNHead)": clock(loss_step(head("FCNHead")), device, repeats),
        "REINFORCE K=2 (RewardFCNHead)": clock(loss_step(head("RewardFCNHead")), device, repeats),
    }
    ratio = loss["REINFORCE K=2 (RewardFCNHead)"] / loss["plain CE (FCNHead)"]
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else None
    machine = describe(gpu)
    result = {
        "benchmark": "reward computation and loss_by_feat cost", "device": device, "machine": machine,
        "reward_8x19x512x1024_s": {k: round(v, 4) for k, v in reward.items()},
        "loss_by_feat_fwd_bwd_s": {k: round(v, 4) for k, v in loss.items()},
        "reinforce_over_ce": round(ratio, 2), "reinforce_over_ce_target": 2.5,
    }
    out = HERE / "results" / f"reward_{device}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"reward computation, 8 x 19 x 512 x 1024 logits, median of {repeats} ({device}; {one_line(machine)})")
    for name, seconds in reward.items():
        print(f"  {name:<44}{seconds * 1000:>9.1f} ms")
    print("loss_by_feat forward + backward, 8 x 19 x 128 x 256 logits resized to 512 x 1024")
    for name, seconds in loss.items():
        print(f"  {name:<44}{seconds * 1000:>9.1f} ms")
    print(f"  REINFORCE / CE: {ratio:.2f}x (target <= 2.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
