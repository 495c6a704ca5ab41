"""Speed and memory of the reward computation and of the reward head's loss.

1. Per-image mIoU of 8 x 19 x 512 x 1024 logits, like with like:
   - on the same predictions (one `logits.max(1).indices`, outside the clock):
     ours (`per_image_miou`, one histogram for the batch) against the manual recipe
     (a Python loop over images, host copies, a numpy histogram each);
   - from the logits, both with the same argmax call (`max(1).indices`);
   - the two argmax spellings alone, since on CPU they differ by several times.
2. `loss_by_feat` forward + backward at label resolution, batch 8, for 19 classes
   (Cityscapes, 512 x 1024), 150 (ADE20K) and 171 (COCO-Stuff) at 128 x 256 and 256 x 256,
   plus the sizes that show how the cost grows (60 classes; 128 x 128): MMSeg's CE
   (FCNHead), its LovaszLoss, the default reward loss, K=2 and each scope. The variants of
   one size are alternated in one run (round robin, median of the rounds), on the same
   logits and labels. Targets: the default <= 1.2 x CE at 150 and 171 classes, <= 1.0 x at
   19.
3. Peak memory of that step above its inputs, each variant in a fresh process, in units
   of one logits-sized float tensor (target: the default's extra over CE <= one per
   sample). On CUDA, torch.cuda.max_memory_allocated; on CPU, the peak resident size.

With `--baseline REV` (a git revision), every reward variant also runs with the estimator
of templates/ at REV (its reward_estimator.py and the templates it imports there,
BASELINE_TEMPLATES, loaded as a package of their own and put in the head in place of the
current one), alternated with the others: old against new in one run, on the same inputs.

    .venv/bin/python benchmarks/bench_reward.py [--device cpu|cuda] [--repeats 5] [--baseline REV]
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from machine import describe, one_line  # noqa: E402
from patched_tree import import_patched_mmseg  # noqa: E402

CLASSES, IGNORE = 19, 255
SHAPE = (8, CLASSES, 512, 1024)
# (classes, height, width) of the loss rows, batch 8; the first five are the targets'
SIZES = [(19, 512, 1024), (150, 128, 256), (150, 256, 256), (171, 128, 256), (171, 256, 256),
         (60, 128, 256), (150, 128, 128)]
TARGET_SIZES = SIZES[:5]
BATCH = 8
CE = "plain CE (FCNHead)"
LOVASZ = "LovaszLoss (FCNHead)"
DEFAULT = "default reward_cfg (local, dataset, T=0.5, K=1)"
# name: (head type, its reward_cfg or a plain head's loss); a baseline twin adds "baseline"
VARIANTS: dict[str, tuple] = {
    CE: ("FCNHead", None),
    LOVASZ: ("FCNHead", "lovasz"),
    DEFAULT: ("RewardFCNHead", {}),
    "default with K=2": ("RewardFCNHead", {"num_samples": 2}),
    "local, image": ("RewardFCNHead", {"scope": "image"}),
    "local, batch": ("RewardFCNHead", {"scope": "batch"}),
    "reinforce, image, K=2": ("RewardFCNHead", {"mode": "reinforce"}),
}
# LovaszLoss takes 9 to 45 x CE's time: timed once per size (after no warm-up), its
# memory measured at 8 x 150 x 128 x 256 only
SLOW = {LOVASZ}
# --fused: the default and reinforce with reward_cfg fuse=True beside them (torch.compile;
# each size compiles once, in the warm-up; for a GPU: on the CPU compiling takes minutes)
FUSED = {
    "default, fused": ("RewardFCNHead", {"fuse": True}),
    "reinforce, image, K=2, fused": ("RewardFCNHead", {"mode": "reinforce", "fuse": True}),
}
# --baseline REV: the estimator class of templates/ at REV, and the name of a variant's twin
BASELINE: dict[str, type] = {}
# What RewardEstimator needs of templates/ at any revision: reward_estimator.py and
# reward_schema.py until it was split, those of them that REV has since.
BASELINE_TEMPLATES = ("reward_schema.py", "reward_device.py", "reward_counts.py", "reward_sampling.py",
                      "reward_estimator.py")


def baseline_name(variant: str, rev: str) -> str:
    return f"{variant} [{rev}]"


def load_baseline(rev: str) -> None:
    """Add a twin of every reward variant that uses the RewardEstimator of templates/ at `rev`."""
    package = Path(tempfile.mkdtemp(prefix="reward-baseline-")) / "baseline_templates"
    package.mkdir()
    (package / "__init__.py").write_text("")
    present = subprocess.run(["git", "ls-tree", "--name-only", rev, "templates/"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    for name in BASELINE_TEMPLATES:
        if f"templates/{name}" not in present:
            continue
        text = subprocess.run(["git", "show", f"{rev}:templates/{name}"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout
        (package / name).write_text(text)
    sys.path.insert(0, str(package.parent))
    BASELINE["estimator"] = importlib.import_module("baseline_templates.reward_estimator").RewardEstimator
    for name, (kind, cfg) in list(VARIANTS.items()):
        if kind.startswith("Reward"):
            VARIANTS[baseline_name(name, rev)] = (kind, cfg, "baseline")


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


def timed(fn, device) -> float:
    """Seconds of one call, the device's queue drained before and after."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def clock(fn, device, repeats):
    fn()  # warm-up
    return statistics.median(timed(fn, device) for _ in range(repeats))


def inputs(device, size=(CLASSES, *SHAPE[2:])):
    import torch
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    classes, height, width = size
    torch.manual_seed(0)
    logits = torch.randn(BATCH, classes, height, width, device=device)
    gt = torch.randint(0, classes, (BATCH, height, width), device=device)
    gt[:, :, : width // 16] = IGNORE
    samples = []
    for label in gt:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=label[None])
        samples.append(sample)
    return logits, gt, samples


def build_head(kind, reward_cfg, device, classes=CLASSES, *baseline):
    """The head of a variant; a baseline twin's holds the baseline's estimator."""
    from mmseg.registry import MODELS

    if reward_cfg == "lovasz":
        loss, extra = dict(type="LovaszLoss", loss_type="multi_class", per_image=False, reduction="none"), {}
    elif reward_cfg is None:
        loss, extra = dict(type="CrossEntropyLoss"), {}
    else:
        loss, extra = dict(type="CrossEntropyRewardLoss"), {"reward_cfg": reward_cfg}
    head = MODELS.build(dict(type=kind, in_channels=4, channels=4, num_convs=1, num_classes=classes,
                             loss_decode=loss, **extra))
    if baseline:
        head.reward_estimator = BASELINE["estimator"](reward_cfg, classes, head.ignore_index)
    return head.to(device)


def loss_step(head, logits, samples):
    def run():
        param = logits.clone().requires_grad_(True)
        losses = head.loss_by_feat(param, samples)
        sum(v.sum() for k, v in losses.items() if "loss" in k).backward()
    return run


def peak_memory(variant: str, device: str, size) -> float:
    """In a fresh process: peak memory of one step above its inputs, in logits-sized tensors."""
    import torch

    import_patched_mmseg()
    kind, reward_cfg, *baseline = VARIANTS[variant]
    head = build_head(kind, reward_cfg, device, size[0], *baseline)
    logits, _, samples = inputs(device, size)
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


def alternated(steps: dict, device: str, repeats: int) -> dict:
    """Median seconds of each step, the steps run in turn, round after round."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for name, step in steps.items():
        if name not in SLOW:
            step()  # warm-up
    for round_ in range(repeats):
        for name, step in steps.items():
            if name not in SLOW or round_ == 0:
                times[name].append(timed(step, device))
    return {name: statistics.median(values) for name, values in times.items()}


def size_name(size) -> str:
    classes, height, width = size
    return f"{BATCH}x{classes}x{height}x{width}"


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


def miou_rows(device: str, repeats: int) -> dict:
    """Part 1: per-image mIoU, ours against the manual recipe, like with like."""
    import numpy as np
    from mmseg.models.losses.iou_metric_loss import per_image_miou

    logits, gt, samples = inputs(device)
    pred = logits.max(1).indices
    assert np.allclose(per_image_miou(pred, gt, CLASSES, IGNORE).cpu().numpy(), manual_recipe_miou(pred, gt),
                       atol=1e-5), "the two rewards disagree"
    return {
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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", help="a git revision whose estimator runs beside the current one")
    parser.add_argument("--fused", action="store_true", help="time reward_cfg fuse=True too")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)  # one variant, in a child process
    parser.add_argument("--size", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fused:
        VARIANTS.update(FUSED)
    if args.baseline:
        load_baseline(args.baseline)
    if args.memory_of:
        size = tuple(int(v) for v in args.size.split(","))
        print(json.dumps(peak_memory(args.memory_of, args.device, size)))
        return 0
    import_patched_mmseg()
    import torch
    from mmseg.models.losses.reward_estimator import check_reward_cfg

    device, repeats = args.device, args.repeats
    reward = miou_rows(device, repeats)
    loss: dict[str, dict[str, float]] = {}  # size: variant: seconds
    ratios: dict[str, dict[str, float]] = {}  # size: variant: times CE's
    for size in SIZES:
        logits, _, samples = inputs(device, size)
        steps = {name: loss_step(build_head(kind, cfg, device, size[0], *baseline), logits, samples)
                 for name, (kind, cfg, *baseline) in VARIANTS.items()}
        medians = alternated(steps, device, repeats)
        loss[size_name(size)] = {k: round(v, 4) for k, v in medians.items()}
        ratios[size_name(size)] = {k: round(v / medians[CE], 2) for k, v in medians.items()}
        print(f"  {size_name(size)}: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios[size_name(size)].items()),
              flush=True)
        del logits, samples, steps

    memory: dict[str, dict[str, float | str]] = {}  # size: variant: logits-sized tensors, or why not
    extra: dict[str, dict[str, float]] = {}  # size: variant: memory above CE's
    for size in TARGET_SIZES:
        row: dict[str, float | str] = {}
        for name in VARIANTS:
            if name in SLOW and size != TARGET_SIZES[1]:
                continue
            baseline: list[str] = ["--baseline", args.baseline] if args.baseline else []
            baseline += ["--fused"] if args.fused else []
            child = subprocess.run([sys.executable, __file__, "--device", device, "--memory-of", name,
                                    "--size", ",".join(map(str, size)), *baseline], capture_output=True, text=True)
            if child.returncode:
                row[name] = f"failed: exit {child.returncode}, {(child.stderr.strip().splitlines() or [''])[-1]}"
                continue
            row[name] = round(json.loads(child.stdout.strip().splitlines()[-1]), 2)
        memory[size_name(size)] = row
        ce = row[CE]
        assert isinstance(ce, float), f"CE's memory at {size_name(size)}: {ce}"  # what the others are measured against
        extra[size_name(size)] = {name: round(value - ce, 2) for name, value in row.items()
                                  if isinstance(value, float)}

    targets = {}
    for size in TARGET_SIZES:
        limit = 1.0 if size[0] == 19 else 1.2
        over = ratios[size_name(size)][DEFAULT]
        targets[size_name(size)] = {"default_over_ce": over, "limit": limit, "met": over <= limit,
                                    "extra_memory": extra[size_name(size)][DEFAULT],
                                    "memory_met": extra[size_name(size)][DEFAULT] <= 1.0}

    gpu = torch.cuda.get_device_name(0) if device == "cuda" else None
    machine = describe(gpu)
    if args.baseline:
        commit = subprocess.run(["git", "rev-parse", args.baseline], cwd=ROOT, capture_output=True, text=True)
        for size in TARGET_SIZES:
            twin = ratios[size_name(size)][baseline_name(DEFAULT, args.baseline)]
            targets[size_name(size)]["baseline_default_over_ce"] = twin
    result = {
        "benchmark": "reward computation, loss_by_feat cost and memory", "device": device, "machine": machine,
        "baseline": {"rev": args.baseline, "commit": commit.stdout.strip()} if args.baseline else None,
        "batch": BATCH, "repeats": repeats, "default_reward_cfg": check_reward_cfg(None),
        "miou_8x19x512x1024_s": {k: round(v, 4) for k, v in reward.items()},
        "loss_by_feat_fwd_bwd_s": loss, "over_ce": ratios,
        "peak_memory_logits": memory, "extra_memory_over_ce_logits": extra,
        "targets": targets,
        "target_rule": "default <= 1.2x MMSeg CE at 150 and 171 classes (<= 1.0x at 19); extra memory over CE "
                       "<= one logits-sized float tensor per sample",
    }
    out = HERE / "results" / f"reward_{device}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"per-image mIoU, 8 x 19 x 512 x 1024, median of {repeats} ({device}; {one_line(machine)})")
    for name, seconds in reward.items():
        print(f"  {name:<48}{seconds * 1000:>9.1f} ms")
    print("loss_by_feat forward + backward, logits at label resolution; peak memory above the inputs "
          "(logits-sized tensors)")
    for label, timings in loss.items():
        print(label)
        for name, seconds in timings.items():
            above = extra.get(label, {}).get(name)
            mem = f"   extra memory vs CE {above:+.2f}" if above is not None else ""
            print(f"  {name:<50}{seconds * 1000:>9.1f} ms  {ratios[label][name]:>6.2f}x CE{mem}")
    for label, target in targets.items():
        print(f"target {label}: default {target['default_over_ce']}x CE (limit {target['limit']}): "
              f"{'met' if target['met'] else 'MISSED'}; extra memory {target['extra_memory']:+.2f}: "
              f"{'met' if target['memory_met'] else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
