"""The GPU checks of issue 16, in one prepared run for a session lent a CUDA device.

1. bench_reward.py --device cuda --fused (19, 150 and 171 classes, eager and fused by
   torch.compile, alternated; writes results/reward_cuda.json);
2. the reward loss step (forward + backward through `loss_by_feat`) of the default, local
   per image, reinforce and class-weighted local under
   torch.cuda.set_sync_debug_mode('error'): no host synchronisation;
3. the kernels one default step launches (torch.profiler) at two image sizes and two
   batch sizes: the same number (the GPU policy of reward_device.py);
4. the AMP float16 training test on CUDA (tests/test_mixed_precision.py -k cuda);
5. `rewardpatch verify --device cuda` on the 1.2.2 checkout.

    .venv/bin/python benchmarks/cuda_checks.py

Not run by CI (no GPU there); every step prints its outcome and the JSON names the GPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from machine import describe  # noqa: E402

SYNC_CASES = {
    "default": {},
    "local, image": {"scope": "image"},
    "reinforce": {"mode": "reinforce"},
    "default, fused": {"fuse": True},
}


def reward_step(classes, height, width, reward_cfg, batch=8, class_weight=False, device="cuda"):
    """A reward head's loss step (the estimator alone: `reward_losses` at label resolution)."""
    from bench_reward import inputs
    from mmseg.registry import MODELS

    loss = dict(type="CrossEntropyRewardLoss")
    if class_weight:
        loss["class_weight"] = [1.0] * classes
    head = MODELS.build(dict(type="RewardFCNHead", in_channels=4, channels=4, num_convs=1, num_classes=classes,
                             loss_decode=loss, reward_cfg=reward_cfg)).to(device)
    logits, gt, _ = inputs(device, (classes, height, width))
    logits, gt = logits[:batch].contiguous(), gt[:batch, None].contiguous()

    def run():
        param = logits.clone().requires_grad_(True)
        losses = head.reward_losses(param, gt)
        sum(v for k, v in losses.items() if "loss" in k).backward()
        return param.grad

    return run


def sync_free_step() -> dict:
    """Loss steps on CUDA with synchronising calls made errors."""
    import torch
    from patched_tree import import_patched_mmseg

    import_patched_mmseg()
    outcome = {}
    cases = [(name, cfg, False) for name, cfg in SYNC_CASES.items()] + [("local, class weights", {}, True)]
    for classes, height, width in [(19, 512, 1024), (150, 256, 256)]:
        for name, reward_cfg, weighted in cases:
            step = reward_step(classes, height, width, reward_cfg, class_weight=weighted)
            step()  # lazy initialisation (cuBLAS handles, cached tensors) may synchronise once
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            key = f"{name} 8x{classes}x{height}x{width}"
            try:
                step()
                outcome[key] = "no host synchronisation"
            except RuntimeError as error:
                outcome[key] = f"synchronises: {error}".splitlines()[0]
            finally:
                torch.cuda.set_sync_debug_mode("default")
    return outcome


def launches_per_step() -> dict:
    """Kernels launched by one default step (forward + backward), by input size."""
    import torch
    from patched_tree import import_patched_mmseg
    from torch.profiler import ProfilerActivity, profile

    import_patched_mmseg()
    launches = {}
    for fuse in (False, True):
        for batch, height, width in [(4, 256, 512), (8, 256, 512), (8, 512, 1024)]:
            step = reward_step(19, height, width, {"fuse": fuse}, batch=batch)
            step()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                step()
                torch.cuda.synchronize()
            name = f"{batch}x19x{height}x{width}" + (", fused" if fuse else "")
            launches[name] = sum(1 for e in prof.events() if "LaunchKernel" in e.name)
    return launches


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check", file=sys.stderr)
        return 2
    python = sys.executable
    steps = {
        "bench_reward": [python, str(HERE / "bench_reward.py"), "--device", "cuda", "--fused"],
        "amp_fp16_training": [python, "-m", "pytest", "-q", str(ROOT / "tests" / "test_mixed_precision.py"),
                              "-k", "cuda"],
        "verify_cuda": [python, "-m", "rewardpatch", "verify", "mmsegmentation", "--device", "cuda"],
    }
    result = {"machine": describe(torch.cuda.get_device_name(0)), "sync": sync_free_step(),
              "launches_per_default_step": launches_per_step()}
    print(json.dumps({key: result[key] for key in ("sync", "launches_per_default_step")}, indent=2), flush=True)
    for name, command in steps.items():
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        result[name] = {"exit": done.returncode, "tail": (done.stdout + done.stderr)[-2000:]}
        print(f"{name}: exit {done.returncode}", flush=True)
    (HERE / "results" / "cuda_checks.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
