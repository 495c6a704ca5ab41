"""Mixed precision (AMP): the reward head's gradient under float16 and bfloat16 logits.

For 4 x 19 x 256 x 512 logits, every mode and scope, and MMSeg's CrossEntropyLoss (FCNHead)
beside them: `loss_by_feat` inside autocast, as AmpOptimWrapper runs it, on float16 logits
whose loss is multiplied by a loss scale before backward (1, 256, 512: the static one of
MMSeg's AMP configs, 32768, 65536: AMP's initial dynamic one), and on bfloat16 logits
(scale 1). Each against the float32 gradient on the same rounded logits with the same
samples (one seed):

- cosine with the float32 gradient (the low-precision one divided by the scale);
- the fraction of finite entries;
- the fraction flushed to zero: entries whose float32 gradient is not zero and whose
  low-precision one is;

beside the same figures for the ideal: the float32 gradient times the scale, cast to the
low-precision dtype (the best that dtype can hold).

    REWARDPATCH_CACHE=/tmp/cache .venv/bin/python benchmarks/bench_amp.py [--device cpu|cuda]

Writes results/amp_<device>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_reward import build_head  # noqa: E402
from machine import describe, one_line  # noqa: E402
from patched_tree import import_patched_mmseg  # noqa: E402

CLASSES, IGNORE = 19, 255
SHAPE = (4, CLASSES, 256, 512)
VARIANTS = {
    "MMSeg CrossEntropyLoss (FCNHead)": None,
    "local, image": {"scope": "image"},
    "local, batch": {"scope": "batch"},
    "local, dataset (default)": {},
    "reinforce, image, K=2": {"mode": "reinforce"},
    "reinforce, batch, K=2": {"mode": "reinforce", "scope": "batch"},
    "reinforce, dataset, K=2": {"mode": "reinforce", "scope": "dataset"},
    "weighted_ce, image": {"mode": "weighted_ce"},
    "local, dataset, mle_weight=0.5": {"mle_weight": 0.5},
}
TREATMENTS = [("float16", 1.0), ("float16", 256.0), ("float16", 512.0), ("float16", 32768.0), ("float16", 65536.0),
              ("bfloat16", 1.0)]
SEED = 1


def inputs(device):
    import torch
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    torch.manual_seed(0)
    logits = torch.randn(*SHAPE, device=device)
    gt = torch.randint(0, CLASSES, (SHAPE[0], *SHAPE[2:]), device=device)
    gt[:, :32] = IGNORE
    samples = [SegDataSample(gt_sem_seg=PixelData(data=label[None])) for label in gt]
    return logits, samples


def gradient(reward_cfg, logits, samples, dtype, scale, amp):
    """(loss dtype, gradient on the logits) of a fresh head's loss_by_feat."""
    import torch

    kind = "FCNHead" if reward_cfg is None else "RewardFCNHead"
    head = build_head(kind, reward_cfg, logits.device, CLASSES)
    param = logits.detach().to(dtype).clone().requires_grad_(True)
    torch.manual_seed(SEED)
    context = torch.autocast(logits.device.type, dtype=dtype) if amp else contextlib.nullcontext()
    with context:
        losses = head.loss_by_feat(param, samples)
    loss = sum(value for key, value in losses.items() if "loss" in key)
    (loss * scale).backward()
    return loss.dtype, param.grad


def figures(grad, scale, reference) -> dict:
    import torch

    low = grad.double() / scale
    ref = reference.double()
    norms = low.norm() * ref.norm()
    cosine = float((low.flatten() @ ref.flatten()) / norms) if torch.isfinite(norms) and norms > 0 else None
    nonzero = ref != 0
    return {
        "cosine": None if cosine is None or cosine != cosine else round(cosine, 6),
        "finite": round(float(torch.isfinite(grad).double().mean()), 6),
        "flushed": round(float(((grad == 0) & nonzero).double().sum() / nonzero.sum().clamp(min=1)), 6),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    import_patched_mmseg()
    import torch

    device = args.device
    base, samples = inputs(device)
    start = time.perf_counter()
    results = {}
    for name, reward_cfg in VARIANTS.items():
        references = {}
        rows = {}
        for dtype_name, scale in TREATMENTS:
            dtype = getattr(torch, dtype_name)
            logits = base.to(dtype).float()  # the values both runs see
            if dtype_name not in references:
                references[dtype_name] = gradient(reward_cfg, logits, samples, torch.float32, 1.0, amp=False)[1]
            reference = references[dtype_name]
            loss_dtype, grad = gradient(reward_cfg, logits, samples, dtype, scale, amp=True)
            ideal = (reference * scale).to(dtype)
            rows[f"{dtype_name} x{scale:g}"] = {
                "loss_dtype": str(loss_dtype).replace("torch.", ""),
                "grad_dtype": str(grad.dtype).replace("torch.", ""),
                "ours": figures(grad, scale, reference),
                "ideal": figures(ideal, scale, reference),
            }
        results[name] = rows
    seconds = time.perf_counter() - start

    gpu = torch.cuda.get_device_name(0) if device == "cuda" else None
    machine = describe(gpu)
    result = {
        "benchmark": "mixed precision: gradient of the reward loss under float16 / bfloat16 logits",
        "device": device, "machine": machine, "shape": list(SHAPE), "seed": SEED,
        "how": "loss_by_feat inside torch.autocast on logits of the dtype, loss x scale, backward; against "
               "float32 on the same rounded logits and samples. flushed: fraction of the entries whose float32 "
               "gradient is not zero that are zero. ideal: the float32 gradient x scale cast to the dtype.",
        "reward_cfg": {name: cfg for name, cfg in VARIANTS.items()},
        "results": results, "seconds": round(seconds, 1),
    }
    out = HERE / "results" / f"amp_{device}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"gradient under AMP, {' x '.join(map(str, SHAPE))} logits, against float32 ({device}; "
          f"{one_line(machine)}): cosine / finite / flushed to zero, ours | ideal")

    def show(f):
        cosine = "  nan " if f["cosine"] is None else f"{f['cosine']:.4f}"
        return f"{cosine} {f['finite']:6.1%} {f['flushed']:6.1%}"

    for name, rows in results.items():
        print(f"  {name}")
        for treatment, row in rows.items():
            print(f"    {treatment:<16} loss {row['loss_dtype']:<8} {show(row['ours'])}  |  {show(row['ideal'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
