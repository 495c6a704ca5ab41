"""Checkpoints that torch >= 2.6 loads safely, and converting mmengine's into them.

Since torch 2.6, `torch.load` defaults to `weights_only=True`: it refuses any pickled
object other than tensors and plain containers, because unpickling one runs code from
the file. mmengine 0.10.7 calls `torch.load(filename, map_location)` without the
argument in `load_checkpoint` and the Runner's `load_from`, so under torch 2.13 those
refuse a checkpoint that mmengine itself saved (its `message_hub` holds HistoryBuffer
objects, its meta may hold numpy scalars). A weights-only checkpoint - a `state_dict`
of tensors plus plain meta - loads everywhere, with nothing disabled.

    check_weights_only(path)        -> WeightsOnlyCheck (ok, reason); never runs pickled code
    loads_weights_only(path)        -> bool
    convert_to_weights_only(src, dst) -> ConvertedCheckpoint; runs pickled code from src
    weights_only_copy_path(out)     -> where `rewardpatch config` puts the copy for OUT

Errors a user can cause raise `InputError` (missing or unreadable file, no state dict).
"""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .errors import InputError

COPY_SUFFIX = "_weights.pth"


@dataclass(frozen=True)
class WeightsOnlyCheck:
    """Whether `torch.load(path, weights_only=True)` succeeds, and if not, why."""

    path: Path
    ok: bool
    reason: str | None = None  # one line, set when not ok, or when it could not be checked
    unsafe_globals: tuple[str, ...] = ()  # the pickled classes/functions torch refused
    checked: bool = True  # False: this torch has no weights-only loader (before 1.13), see check_weights_only


@dataclass(frozen=True)
class ConvertedCheckpoint:
    """A weights-only copy: `{'state_dict': tensors, 'meta': plain values}`."""

    path: Path
    source: Path
    tensors: int
    dropped: tuple[str, ...] = field(default_factory=tuple)  # top-level and meta keys left out


def _local_file(path: str | os.PathLike) -> Path:
    text = os.fspath(path)
    if "://" in text:
        raise InputError(f"{text}: a checkpoint URL cannot be checked; download it and pass the local file")
    file = Path(text)
    if not file.exists():
        raise InputError(f"{file}: no such checkpoint file")
    if not file.is_file():
        raise InputError(f"{file}: not a file")
    return file


def _is_zip_checkpoint(file: Path) -> bool:
    with file.open("rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def _is_legacy_checkpoint(file: Path) -> bool:
    # torch.save(..., _use_new_zipfile_serialization=False) writes a pickle (protocol 2).
    with file.open("rb") as handle:
        return handle.read(1) == b"\x80"


def _load_parameters() -> set[str]:
    """The keywords this torch's torch.load takes: weights_only from torch 1.13, mmap from 2.1."""
    import inspect

    import torch

    return set(inspect.signature(torch.load).parameters)


def load_unrestricted(path, **kwargs):
    """torch.load with every pickled object allowed (weights_only=False where torch has the
    keyword; before torch 1.13 that is what it always does). Runs code pickled in the file:
    only for files the user trusts, or that this process wrote."""
    import torch

    if "weights_only" in _load_parameters():
        kwargs["weights_only"] = False
    return torch.load(path, **kwargs)


def _refusal_reason(exc: Exception) -> str:
    for line in str(exc).splitlines():
        line = line.strip()
        if line.startswith("WeightsUnpickler error:"):
            return line[len("WeightsUnpickler error:"):].strip()
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def check_weights_only(path: str | os.PathLike) -> WeightsOnlyCheck:
    """Try `torch.load(path, weights_only=True)`, which never executes code from the file.

    Returns ok=False with a one-line reason when torch refuses pickled objects in it;
    raises InputError when the file is missing or is no PyTorch checkpoint at all.
    """
    import torch

    file = _local_file(path)
    zipped = _is_zip_checkpoint(file)
    parameters = _load_parameters()
    if "weights_only" not in parameters:
        if not zipped and not _is_legacy_checkpoint(file):
            raise InputError(f"{file}: not a PyTorch checkpoint")
        # nothing here can load it without running the code it may hold; and this torch's
        # torch.load, as mmcv's load_checkpoint calls it, loads any checkpoint
        return WeightsOnlyCheck(file, ok=True, reason=f"torch {torch.__version__} has no weights-only loader "
                                "(torch >= 1.13): not checked", checked=False)
    try:
        loaded = torch.load(file, map_location="cpu", weights_only=True,
                            **({"mmap": zipped} if "mmap" in parameters else {}))
    except pickle.UnpicklingError as exc:
        if not zipped and not _is_legacy_checkpoint(file):
            raise InputError(f"{file}: not a PyTorch checkpoint") from None
        unsafe: tuple[str, ...] = ()
        if zipped:
            try:
                found = torch.serialization.get_unsafe_globals_in_checkpoint(file)
                # the classes tell more than the builtins used to rebuild them
                unsafe = tuple(sorted(found, key=lambda name: (name.startswith("builtins."), name)))
            except Exception:  # noqa: BLE001 - the listing is only a better message
                unsafe = ()
        if unsafe:
            shown = ", ".join(unsafe[:4]) + (", ..." if len(unsafe) > 4 else "")
            reason = f"it holds pickled Python objects ({shown})"
        else:
            reason = _refusal_reason(exc)
        return WeightsOnlyCheck(file, ok=False, reason=reason, unsafe_globals=unsafe)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
        raise InputError(f"{file}: cannot read it as a PyTorch checkpoint ({_refusal_reason(exc)})") from None
    if not isinstance(loaded, dict):
        raise InputError(f"{file}: holds a {type(loaded).__name__}, not a checkpoint dict or state dict")
    return WeightsOnlyCheck(file, ok=True)


def loads_weights_only(path: str | os.PathLike) -> bool:
    """True when torch >= 2.6 (and so mmengine's load_from) loads `path` by default."""
    return check_weights_only(path).ok


def weights_only_copy_path(out: str | os.PathLike) -> Path:
    """`<dir>/<stem>_weights.pth` beside `out` (a config or any file)."""
    out = Path(out)
    return out.with_name(out.stem + COPY_SUFFIX)


def _plain(value) -> bool:
    """JSON-like values only: what weights_only=True unpickles without any allow-list."""
    kind = type(value)
    if kind in (str, int, float, bool, type(None)):
        return True
    if kind in (list, tuple):
        return all(_plain(v) for v in value)
    if kind is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    return False


def _state_dict_of(checkpoint, source: Path):
    """What mmengine's `_load_checkpoint_to_model` loads: checkpoint['state_dict'] or the dict itself."""
    import torch

    if not isinstance(checkpoint, dict):
        raise InputError(f"{source}: holds a {type(checkpoint).__name__}, not a checkpoint dict")
    state_dict = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state_dict, dict) or not state_dict:
        raise InputError(f"{source}: no state_dict in the checkpoint")
    tensors = OrderedDict()
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise InputError(f"{source}: state_dict entry {key!r} is a {type(value).__name__}, not a tensor")
        tensors[key] = value.detach().as_subclass(torch.Tensor)
    # Module versions (e.g. BatchNorm's) that load_state_dict reads; plain dicts.
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None and _plain({str(k): v for k, v in metadata.items()}):
        # torch's convention: an attribute of the state dict itself, which no type declares
        tensors._metadata = OrderedDict(metadata)  # type: ignore[attr-defined]
    return tensors


def convert_to_weights_only(src: str | os.PathLike, dst: str | os.PathLike) -> ConvertedCheckpoint:
    """Write `dst`: the tensors of `src`'s state dict and the plain part of its meta.

    This loads `src` with `weights_only=False`, which executes any code pickled in it:
    call it only for a checkpoint the user trusts and asked to convert. `dst` loads with
    `torch.load(dst, weights_only=True)` and with mmengine's `load_checkpoint` / `load_from`;
    optimizer, scheduler and message-hub state are left out (a fine-tune starts them anew).
    The file is written to a temporary name first and checked before it replaces `dst`.
    """
    import torch

    source = _local_file(src)
    target = Path(dst)
    if source.resolve() == target.resolve():
        raise InputError(f"{target}: the weights-only copy would overwrite the checkpoint itself")
    try:
        checkpoint = load_unrestricted(source, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - anything here means the file is unusable
        raise InputError(f"{source}: cannot read it as a PyTorch checkpoint ({_refusal_reason(exc)})") from None
    state_dict = _state_dict_of(checkpoint, source)
    dropped: list[str] = []
    meta: dict = {}
    if "state_dict" in checkpoint:
        dropped += [k for k in checkpoint if k not in ("state_dict", "meta")]
        raw_meta = checkpoint.get("meta") or {}
        if isinstance(raw_meta, dict):
            for key, value in raw_meta.items():
                if type(key) is str and _plain(value):
                    meta[key] = value
                else:
                    dropped.append(f"meta.{key}")
        else:
            dropped.append("meta")
    meta["converted_by"] = f"rewardpatch {__version__}"
    meta["converted_from"] = source.name
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        torch.save({"state_dict": state_dict, "meta": meta}, tmp)
        check = check_weights_only(tmp)
        if not check.ok:  # a bug here, not the user's: never hand out such a file (on a torch that can tell)
            raise RuntimeError(f"the converted checkpoint does not load weights-only: {check.reason}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return ConvertedCheckpoint(path=target, source=source, tensors=len(state_dict), dropped=tuple(dropped))
