"""A stand-in for torchvision, installed only into the MMSeg 0.x verification venv.

The Makefile copies this file to `.venv-mmseg0/.../site-packages/torchvision/__init__.py`;
it is never installed anywhere else and never imported by rewardpatch itself.

Why: mmcv-full 1.7's `mmcv.runner` imports torchvision at module level, so `import
mmseg.models` needs it; but the package index offers torchvision only as CUDA builds,
whose `_C.so` needs libc10_cuda.so and fails to import next to torch 2.13.0+cpu. Nothing
`rewardpatch verify` runs uses torchvision. Whatever does (a `torchvision://` checkpoint,
torchvision.ops, torchvision.models) fails (AttributeError or ImportError naming this file) instead of running wrong.
"""

__version__ = "0.0.0"


def __getattr__(name):
    # an AttributeError, so that hasattr() probes (mmcv's device modules make them) stay False
    raise AttributeError(
        f"torchvision.{name}: this venv's torchvision is rewardpatch's stand-in (no CPU build of torchvision "
        "exists for its torch); install a real torchvision to use it"
    )
