"""Where the reward's per-pixel passes run, and how they are cut.

The passes over every pixel (sampling and the local expectation gradient,
reward_sampling.py; counting, reward_counts.py) follow a device policy, the
CPU's or the GPU's, and run over the slices of the pixels that
`pixel_slices` cuts for it; with reward_cfg fuse=True, their slice functions
are compiled by torch.compile (`fused`, `fusion`).
"""
import contextlib
import math
import warnings

import torch
from torch import Tensor

# The per-pixel passes (sampling, the local expectation gradient, counting)
# run over slices of the pixels (`pixel_slices`). On the CPU they are slabs
# small enough to stay in its caches; on a GPU every slice costs a few dozen
# kernel launches, so there they are as few as memory allows.
# elements of the logits per slab on the CPU
SLAB_ELEMENTS = 1 << 20
# on a GPU, the temporaries of one slice stay within this many logits-sized
# float tensors
GPU_SLICE_LOGITS = 1.0

# The device policy, chosen here alone: the CPU's reads small values back to
# the host and cuts the passes for its caches; the GPU policy (every other
# device: CUDA and other accelerators) never makes the host wait. Nothing is
# read back, no host value is copied in per step, no operation has an output
# whose size depends on values (nonzero, boolean masks, bincount), and the
# kernels a step launches do not grow with the image size or the batch.
# Tests run it on CPU tensors: `with device_policy('gpu'): ...`.

# the policies `device_policy` forces, innermost last
_FORCED_POLICY = []


@contextlib.contextmanager
def device_policy(name: str):
    """Within it, every tensor follows policy `name` ('cpu' or 'gpu'),
    whatever its device."""
    if name not in ('cpu', 'gpu'):
        raise ValueError(f"policy must be 'cpu' or 'gpu', got {name!r}")
    _FORCED_POLICY.append(name == 'gpu')
    try:
        yield
    finally:
        _FORCED_POLICY.pop()


def gpu_policy(tensor: Tensor) -> bool:
    """Whether the passes over `tensor` follow the GPU policy."""
    if _FORCED_POLICY:
        return _FORCED_POLICY[-1]
    return tensor.device.type != 'cpu'


def pixel_slices(like: Tensor, temporaries: int):
    """Slices of the last dimension of `like` [B, C, N] (logits, or their
    probabilities) for a pass that holds `temporaries` floats per pixel and
    image besides.

    CPU: slabs of SLAB_ELEMENTS elements of `like`. GPU: as few slices as
    keep the temporaries within GPU_SLICE_LOGITS logits-sized tensors; their
    number depends on C and the pass (K), not on B or N.
    """
    batch, classes, pixels = like.shape
    if gpu_policy(like) and pixels:
        budget = max(1.0, GPU_SLICE_LOGITS * classes)
        parts = min(pixels, math.ceil(temporaries / budget))
        bounds = [part * pixels // parts for part in range(parts + 1)]
        return [slice(*pair) for pair in zip(bounds, bounds[1:])]
    step = max(1, SLAB_ELEMENTS // max(1, batch * classes))
    return [slice(start, start + step) for start in range(0, pixels, step)]


class _Fused:
    """A pass's slice function compiled by torch.compile (reward_cfg
    fuse=True): on a GPU its few dozen small kernels become a few. The eager
    function runs where torch has no torch.compile (< 2.0) and, with one
    warning, for good once compiling it has failed."""

    def __init__(self, function):
        self.eager = function
        self.compiled = None
        if hasattr(torch, 'compile'):
            self.compiled = torch.compile(function)

    def __call__(self, *args):
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as error:  # the compiler's: Triton, a C compiler
                warnings.warn(
                    f'reward_cfg fuse=True: torch.compile failed on '
                    f'{self.eager.__name__} ({type(error).__name__}: '
                    f'{error}); the reward runs eagerly')
                self.compiled = None
        return self.eager(*args)


# slice function -> its _Fused, made on first use
_FUSED = {}
# what `fusion` asks, innermost last
_FUSING = []


def fused(function):
    """`function` fused by torch.compile, compiled once per process."""
    if function not in _FUSED:
        _FUSED[function] = _Fused(function)
    return _FUSED[function]


@contextlib.contextmanager
def fusion(on: bool):
    """Within it, the per-pixel passes run `fused` where `on` is True (the
    estimator's step, with reward_cfg fuse=True)."""
    _FUSING.append(bool(on))
    try:
        yield
    finally:
        _FUSING.pop()


def fusing() -> bool:
    """Whether the per-pixel passes run fused here."""
    return bool(_FUSING) and _FUSING[-1]
