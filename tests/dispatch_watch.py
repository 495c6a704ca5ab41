"""What a computation asks of the device, seen on the CPU: every operation it dispatches.

Three TorchDispatchModes, each a context manager that watches the aten operations run
inside it (forward and backward alike):

- `OperationCount`: how many operations run, by name: a GPU launches about one kernel
  each, so a count that does not change with the input's size means launches that do not.
- `HostWaitGuard`: every operation that makes the host wait for a GPU, recorded with the
  Python line that called it: a value read back (`.item()`, `int()`, `float()`, `bool()`
  of a tensor), an output whose size depends on values (nonzero, a boolean mask, bincount,
  unique), a Python number or list made into a tensor (`torch.tensor`, `t[i] = 0`), and,
  when a device is named, any tensor on another device (a copy to or from the host).
  `tolist()` and `.numpy()` dispatch nothing on the CPU: run on the meta device to catch
  them (a meta tensor has no values to read).
- `LiveTensorMemory`: bytes held by the tensors that operations inside it made, and their
  peak: what torch.cuda.max_memory_allocated would count on a GPU, less the scratch space
  of single kernels.
"""

from __future__ import annotations

import traceback
import weakref
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

# aten operations that read a value back to the host, or whose output size depends on values
WAITING = {
    "_local_scalar_dense", "nonzero", "nonzero_numpy", "argwhere", "masked_select", "bincount", "histc",
    "_unique", "_unique2", "unique_dim", "unique_consecutive", "unique_dim_consecutive", "equal",
    "is_nonzero",
}
# a Python number or list becoming a tensor: on a GPU, a copy from the host's memory
FROM_HOST = {"lift_fresh", "lift_fresh_copy"}
INDEXING = {"index", "index_put", "index_put_", "_index_put_impl_"}


def _tensors(tree):
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


class OperationCount(TorchDispatchMode):
    """counts: aten operation name -> how many times it ran."""

    def __init__(self):
        super().__init__()
        self.counts = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class HostWaitGuard(TorchDispatchMode):
    """problems: one line per operation that would make the host wait for a GPU.

    device: when given, every tensor an operation takes or makes must be on it."""

    def __init__(self, device=None):
        super().__init__()
        self.device = None if device is None else torch.device(device)
        self.problems = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        reason = None
        if name in WAITING:
            reason = "reads values back or sizes its output by them"
        elif name in FROM_HOST:
            reason = "makes a tensor of host data"
        elif name in INDEXING and any(t.dtype in (torch.bool, torch.uint8) for t in _tensors(args[1:2])):
            reason = "indexes with a boolean mask"
        elif name == "repeat_interleave" and isinstance(args[1] if len(args) > 1 else None, torch.Tensor):
            reason = "repeats by counts held in a tensor"
        out = func(*args, **kwargs)
        if reason is None and self.device is not None:
            elsewhere = [t.device for t in _tensors((args, kwargs, out)) if t.device != self.device]
            if elsewhere:
                reason = f"takes or makes a tensor on {elsewhere[0]}"
        if reason:
            self.problems.append(f"{func}: {reason}, at {_caller()}")
        return out


def _caller() -> str:
    """The innermost frame outside torch and this file: the line that asked."""
    for frame in reversed(traceback.extract_stack()):
        if "/torch/" not in frame.filename and not frame.filename.endswith("dispatch_watch.py"):
            return f"{frame.filename}:{frame.lineno} {frame.line}"
    return "?"


class LiveTensorMemory(TorchDispatchMode):
    """live and peak: bytes of the storages that operations inside it made and that some
    tensor still holds (a view, or an in-place result, of a tensor made before counts
    nothing)."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._holders = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        before = {t.untyped_storage().data_ptr() for t in _tensors((args, kwargs))}
        for tensor in _tensors(out):
            key = tensor.untyped_storage().data_ptr()
            if key and not (key in before and key not in self._holders):
                self._hold(tensor, key)
        return out

    def _hold(self, tensor, key):
        nbytes = tensor.untyped_storage().nbytes()
        if key not in self._holders:
            self._holders[key] = 0
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        self._holders[key] += 1
        weakref.finalize(tensor, self._release, key, nbytes)

    def _release(self, key, nbytes):
        self._holders[key] -= 1
        if not self._holders[key]:
            del self._holders[key]
            self.live -= nbytes
