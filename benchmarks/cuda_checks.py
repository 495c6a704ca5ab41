"""The GPU checks of issue 16, in one prepared run for a session lent a CUDA device.

1. bench_reward.py --device cuda (19, 150 and 171 classes; writes results/reward_cuda.json);
2. the default reward loss step (forward + backward through `loss_by_feat`) under
   torch.cuda.set_sync_debug_mode('error'): no host synchronisation (results/cuda_sync.json);
3. the AMP float16 training test on CUDA (tests/test_mixed_precision.py -k cuda);
4. `rewardpatch verify --device cuda` on the 1.2.2 checkout.

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


def sync_free_step() -> dict:
    """One default loss step on CUDA with synchronising calls made errors."""
    import torch

    from bench_reward import build_head, inputs, loss_step
    from patched_tree import import_patched_mmseg

    import_patched_mmseg()
    outcome = {}
    for classes, height, width in [(19, 512, 1024), (150, 256, 256)]:
        head = build_head("RewardFCNHead", {}, "cuda", classes)
        logits, _, samples = inputs("cuda", (classes, height, width))
        step = loss_step(head, logits, samples)
        step()  # lazy initialisation (cuBLAS handles, the first allocation) may synchronise once
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            step()
            outcome[f"8x{classes}x{height}x{width}"] = "no host synchronisation"
        except RuntimeError as error:
            outcome[f"8x{classes}x{height}x{width}"] = f"synchronises: {error}".splitlines()[0]
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return outcome


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check", file=sys.stderr)
        return 2
    python = sys.executable
    steps = {
        "bench_reward": [python, str(HERE / "bench_reward.py"), "--device", "cuda"],
        "amp_fp16_training": [python, "-m", "pytest", "-q", str(ROOT / "tests" / "test_mixed_precision.py"),
                              "-k", "cuda"],
        "verify_cuda": [python, "-m", "rewardpatch", "verify", "mmsegmentation", "--device", "cuda"],
    }
    result = {"machine": describe(torch.cuda.get_device_name(0)), "sync": sync_free_step()}
    print(json.dumps(result["sync"], indent=2), flush=True)
    for name, command in steps.items():
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        result[name] = {"exit": done.returncode, "tail": (done.stdout + done.stderr)[-2000:]}
        print(f"{name}: exit {done.returncode}", flush=True)
    (HERE / "results" / "cuda_checks.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
