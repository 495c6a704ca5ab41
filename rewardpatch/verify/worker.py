"""The verify worker: runs with the tree first on its import path, alone or under torchrun.

    python -P -m rewardpatch.verify.worker --tree T --mmseg-version V --workdir W --events E --stages heads,finetune ...

`-P` keeps the current directory off sys.path, so nothing but PYTHONPATH (the tree) can
shadow the tree's mmseg. The worker still checks where mmseg came from before trusting it.
Results go to the events file; logs go to stdout/stderr, which the command redirects.

The generation's `runner` (patches/) picks the code by its dialect (dialects.py): for mmengine
(MMSeg 1.x) head_checks.check_head and finetune.py, for mmcv (MMSeg 0.x, mmcv-full 1.x)
head_checks.check_head_0x and finetune_0x.py; and the config loader of plugin mode's config.
Before mmseg is imported, the interpreter's mmcv is checked against the generation's
(patches/, [verify] stack), and the tree's own mmcv version assert is read: an mmcv of the
right major version that fails it (outside MMCV_MIN..MMCV_MAX, the upper bound inclusive or
not, as the tree's assert compares) is let through for this import only
(relaxed_mmcv_assert), and the run says so. The head checks take the user's constructor
arguments (--head-args) over the ones they guess.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..dialects import Dialect
from ..errors import RewardpatchError
from ..mmseg_generations import VerifyStack
from ..naming import reward_name
from ..tree import MMSegTree
from .events import EventWriter

EXIT_SETUP = 3  # the worker could not start checking (device, mmseg origin, import)


def _resolve_device(requested: str) -> str | None:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        return None
    return requested


def stack_mismatch(version: str, stack: VerifyStack) -> str | None:
    """One line when this interpreter's mmcv is not the one the tree's MMSeg imports, else None.

    Checked before importing mmseg, whose own version assert would otherwise be the only
    message (and whose 1.x import fails further in, on mmengine)."""
    try:
        import mmcv

        have = f"mmcv {mmcv.__version__}"
        major = int(mmcv.__version__.split(".")[0])
    except Exception as exc:  # noqa: BLE001 - no mmcv, or a broken one: both are the wrong stack
        have, major = f"no usable mmcv ({type(exc).__name__})", None
    if major == stack.mmcv_major:
        return None
    return (f"MMSeg {version} needs {stack.needs}; this interpreter ({sys.executable}) has {have}: "
            f"run the rewardpatch of {stack.setup}")


@dataclass(frozen=True)
class MMCVRange:
    """The tree's own assert on mmcv's version, `MMCV_MIN <= mmcv <= MMCV_MAX` (0.x before 0.30)
    or `MMCV_MIN <= mmcv < MMCV_MAX` (0.30.0 and every 1.x release)."""

    low: str
    high: str
    high_inclusive: bool = True


def _asserted_upper_bound(module: ast.Module) -> bool | None:
    """Whether the module's `assert (min <= version <= max)` takes MMCV_MAX itself (True for `<=`,
    False for `<`), the min and max being values computed from MMCV_MIN and MMCV_MAX; None when
    no such assert is found."""
    derived = {}
    for node in module.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and node.value.args:
            source = node.value.args[0]
            if isinstance(source, ast.Name) and source.id in ("MMCV_MIN", "MMCV_MAX"):
                derived.update({t.id: source.id for t in node.targets if isinstance(t, ast.Name)})
    for node in module.body:
        test = node.test if isinstance(node, ast.Assert) else None
        if not isinstance(test, ast.Compare) or len(test.ops) != 2:
            continue
        left, right = test.left, test.comparators[-1]
        if (isinstance(left, ast.Name) and derived.get(left.id) == "MMCV_MIN"
                and isinstance(right, ast.Name) and derived.get(right.id) == "MMCV_MAX"):
            if isinstance(test.ops[1], (ast.Lt, ast.LtE)):
                return isinstance(test.ops[1], ast.LtE)
    return None


def mmcv_range(tree: MMSegTree) -> MMCVRange | None:
    """The tree's own MMCV_MIN, MMCV_MAX and how its assert compares with MMCV_MAX, from
    mmseg/__init__.py (read with the tree's safe reader, parsed with ast); None when it names no
    such pair of strings. An assert not found is taken as inclusive, as 0.x before 0.30 spells it."""
    try:
        module = ast.parse(tree.read("mmseg/__init__.py") or "")
    except (RewardpatchError, SyntaxError, ValueError):
        return None
    found = {}
    for node in module.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id in ("MMCV_MIN", "MMCV_MAX"):
                    found[target.id] = node.value.value
    if set(found) != {"MMCV_MIN", "MMCV_MAX"}:
        return None
    inclusive = _asserted_upper_bound(module)
    return MMCVRange(found["MMCV_MIN"], found["MMCV_MAX"], inclusive is not False)


def assert_bound(tree: MMSegTree, have: str) -> tuple[str, str] | None:
    """(reading, words) when mmcv `have` fails the tree's own assert (mmcv_range): the version mmcv
    should read as while mmseg imports, and what the tree asserts ("<= 1.4.0", "< 2.1.0"); None when
    `have` passes it or the tree names no range. Under an exclusive MMCV_MAX, mmcv reads as that
    release's first candidate (2.1.0rc0), which every release's digit_version orders below it."""
    from packaging.version import InvalidVersion, Version

    bounds = mmcv_range(tree)
    if bounds is None:
        return None
    try:
        high = Version(bounds.high)
        if bounds.high_inclusive and Version(have) > high:
            return bounds.high, f"<= {bounds.high}"
        if not bounds.high_inclusive and Version(have) >= high:
            if high.is_prerelease or high.is_postrelease or high.is_devrelease:
                return None  # no reading below it that every digit_version orders so: its own assert decides
            return f"{bounds.high}rc0", f"< {bounds.high}"
        if Version(have) < Version(bounds.low):
            return bounds.low, f">= {bounds.low}"
    except InvalidVersion:  # a range the tree spells oddly: its own assert decides
        return None
    return None


@contextlib.contextmanager
def relaxed_mmcv_assert(bound: str | None):
    """mmcv.__version__ reads as `bound` inside, the real one again after (and on failure).
    The tree's files are never touched."""
    if bound is None:
        yield
        return
    import mmcv

    real = mmcv.__version__
    mmcv.__version__ = bound
    try:
        yield
    finally:
        mmcv.__version__ = real


PLUGIN_CONFIG = "plugin_mode_config.py"


def load_plugin_config(workdir: Path, imports: str, dialect: Dialect) -> Path:
    """Load, as training loads a config, one whose only entry is the custom_imports line of plugin
    mode: the project's modules, then rewardpatch.plugin. Rank 0 writes it; every rank loads it."""
    names = [name for name in imports.split(",") if name] + ["rewardpatch.plugin"]
    path = workdir / PLUGIN_CONFIG
    text = f"custom_imports = dict(imports={names!r}, allow_failed_imports=False)\n"
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)
    dialect.config().fromfile(str(path))  # imports custom_imports, as tools/train.py's does
    return path


def _root_cause(exc: BaseException) -> str:
    """The innermost error's type and message (mmengine wraps a failed custom import in its own)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    message = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", required=True, type=Path)
    parser.add_argument("--mmseg-version", default=None)  # the release the command treats the tree as
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--events", required=True, type=Path)
    parser.add_argument("--stages", default="heads,finetune")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--heads", default="")
    parser.add_argument("--finetune-head", default="FCNHead")
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--ce-iters", type=int, default=150)
    # plugin mode: the project modules a config imports before rewardpatch.plugin (comma-separated)
    parser.add_argument("--plugin-imports", default=None)
    # {head name: constructor arguments} the user gave (--head-args), merged over verify's guesses
    parser.add_argument("--head-args", type=json.loads, default={})
    args = parser.parse_args(argv)

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = int(os.environ.get("RANK", "0"))
    events = EventWriter(args.events, enabled=rank == 0)

    device = _resolve_device(args.device)
    if device is None:
        events.emit("error", kind="device", message="--device cuda: torch sees no CUDA device here")
        return EXIT_SETUP
    import torch

    events.emit("device", device=device, torch=torch.__version__,
                gpu=torch.cuda.get_device_name(0) if device == "cuda" else None)
    if distributed:
        import torch.distributed as dist

        if device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        # initialised here so that mmengine skips its own init (which assumes CUDA)
        dist.init_process_group("nccl" if device == "cuda" else "gloo")

    tree = args.tree.resolve()
    expected = MMSegTree.open(tree, args.mmseg_version)
    mismatch = stack_mismatch(expected.version, expected.generation.verify.stack)
    if mismatch:
        events.emit("error", kind="stack", message=mismatch)
        return EXIT_SETUP
    import mmcv

    relaxed = assert_bound(expected, mmcv.__version__)
    if relaxed is not None:
        package = expected.generation.verify.stack.needs.split()[0]  # "mmcv-full 1.x" -> mmcv-full
        events.emit("note", message=(
            f"MMSeg {expected.version} asserts {package} {relaxed[1]}; verified with {mmcv.__version__}, "
            "the tree's assert relaxed for this run only"))
    try:
        with relaxed_mmcv_assert(relaxed[0] if relaxed else None):
            if args.plugin_imports is not None:
                load_plugin_config(args.workdir, args.plugin_imports, expected.generation.dialect)
            import mmseg
            import mmseg.models  # noqa: F401 - registers every head, the reward ones included
    except Exception as exc:  # noqa: BLE001 - reported to the user, with the log kept
        what = "the plugin config's custom_imports" if args.plugin_imports is not None else "import mmseg.models"
        events.emit("error", kind="import", message=f"{what} failed: {_root_cause(exc)}")
        return EXIT_SETUP
    origin = Path(mmseg.__file__).resolve()
    if tree not in origin.parents:
        events.emit("error", kind="origin", message=f"mmseg would be imported from {origin.parent}, not from {tree}")
        return EXIT_SETUP
    # the generation of the release the tree is treated as: a fork's mmseg.__version__ may be
    # one no generation lists (1.3.0.dev0), or computed
    generation = expected.generation
    # mmengine's registries and Runner, or mmcv-full 1.x's registries and runner
    dialect = generation.dialect
    if dialect.register_all_modules:
        from mmseg.utils import register_all_modules

        register_all_modules(init_default_scope=False)

    stages = args.stages.split(",")
    if "heads" in stages:
        from . import head_checks as stage_one

        check = getattr(stage_one, dialect.check_head)
        heads = [h for h in args.heads.split(",") if h]
        events.emit("stage", stage="heads", total=len(heads))
        for name in heads:
            events.emit("head", **check(name, generation.verify, device, generation.adapter.pixel_weight,
                                        args.head_args.get(name)))
    if "finetune" in stages:
        import importlib

        from .head_checks import head_spec

        finetune = importlib.import_module(f"{__package__}.{dialect.finetune_module}").finetune

        events.emit("stage", stage="finetune", total=args.ce_iters + args.iters, head=reward_name(args.finetune_head))
        own = head_spec(generation.verify, args.finetune_head, args.head_args.get(args.finetune_head))["args"]
        # the backbone supplies one 128-channel map: keep the head's other arguments
        head_args = {k: v for k, v in own.items() if k not in ("in_channels", "channels", "num_classes", "in_index")}
        result = finetune(args.workdir, args.finetune_head, head_args, args.ce_iters, args.iters, device,
                          distributed, events)
        events.emit("finetune", **result)
    if distributed:
        import torch.distributed as dist

        # every rank done before the group goes: tearing it down under a peer still in a
        # collective aborts the process (seen with gloo)
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Everything is reported and the group is gone, but gloo's threads can still be
        # joinable when the interpreter's teardown destroys them, and under load std::terminate
        # aborts the process ("terminate called without an active exception"). Leave without
        # that teardown: the exit status is then the worker's own, every time.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
