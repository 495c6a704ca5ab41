"""The verify worker: runs with the tree first on its import path, alone or under torchrun.

    python -P -m rewardpatch.verify.worker --tree T --mmseg-version V --workdir W --events E --stages heads,finetune ...

`-P` keeps the current directory off sys.path, so nothing but PYTHONPATH (the tree) can
shadow the tree's mmseg. The worker still checks where mmseg came from before trusting it.
Results go to the events file; logs go to stdout/stderr, which the command redirects.

The tree's generation picks the code: MMSeg 1.x (mmengine) heads.check_head and finetune.py,
MMSeg 0.x (mmcv-full 1.x) heads.check_head_0x and finetune0.py. Before mmseg is imported,
the interpreter's mmcv is checked against the generation's (patches/, [verify] stack).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..heads import reward_name
from .events import EventWriter

EXIT_SETUP = 3  # the worker could not start checking (device, mmseg origin, import)


def _resolve_device(requested: str) -> str | None:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        return None
    return requested


def stack_mismatch(version: str, stack: dict) -> str | None:
    """One line when this interpreter's mmcv is not the one the tree's MMSeg imports, else None.

    Checked before importing mmseg, whose own version assert would otherwise be the only
    message (and whose 1.x import fails further in, on mmengine)."""
    try:
        import mmcv

        have = f"mmcv {mmcv.__version__}"
        major = int(mmcv.__version__.split(".")[0])
    except Exception as exc:  # noqa: BLE001 - no mmcv, or a broken one: both are the wrong stack
        have, major = f"no usable mmcv ({type(exc).__name__})", None
    if major == stack["mmcv_major"]:
        return None
    return (f"MMSeg {version} needs {stack['needs']}; this interpreter ({sys.executable}) has {have}: "
            f"run the rewardpatch of {stack['setup']}")


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
    from rewardpatch.tree import MMSegTree

    expected = MMSegTree.open(tree, args.mmseg_version)
    mismatch = stack_mismatch(expected.version, expected.generation.verify["stack"])
    if mismatch:
        events.emit("error", kind="stack", message=mismatch)
        return EXIT_SETUP
    try:
        import mmseg
        import mmseg.models  # noqa: F401 - registers every head, the reward ones included
    except Exception as exc:  # noqa: BLE001 - reported to the user, with the log kept
        events.emit("error", kind="import", message=f"import mmseg.models failed: {type(exc).__name__}: {exc}")
        return EXIT_SETUP
    origin = Path(mmseg.__file__).resolve()
    if not origin.is_relative_to(tree):
        events.emit("error", kind="origin", message=f"mmseg would be imported from {origin.parent}, not from {tree}")
        return EXIT_SETUP
    # the generation of the release the tree is treated as: a fork's mmseg.__version__ may be
    # one no generation lists (1.3.0.dev0), or computed
    generation = expected.generation
    # 1.x: mmengine's registries and Runner; 0.x: mmcv-full 1.x's registries and runner
    legacy = generation.name == "mmseg-0.x"
    if not legacy:
        from mmseg.utils import register_all_modules

        register_all_modules(init_default_scope=False)

    stages = args.stages.split(",")
    if "heads" in stages:
        from .heads import check_head, check_head_0x

        check = check_head_0x if legacy else check_head
        heads = [h for h in args.heads.split(",") if h]
        events.emit("stage", stage="heads", total=len(heads))
        for name in heads:
            events.emit("head", **check(name, generation.verify, device))
    if "finetune" in stages:
        from .heads import head_spec

        if legacy:
            from .finetune0 import finetune
        else:
            from .finetune import finetune

        events.emit("stage", stage="finetune", total=args.ce_iters + args.iters, head=reward_name(args.finetune_head))
        own = head_spec(generation.verify, args.finetune_head)["args"]
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
