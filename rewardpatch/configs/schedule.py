"""The fine-tune schedule: start where the source's LR schedule ends, decay to 0 over --iters.

The rules are one; the keys differ by MMSeg generation, each a `ScheduleDialect`: 1.x configs
(mmengine) set optim_wrapper, param_scheduler and train_cfg, 0.x configs (mmcv 1.x's
runner) optimizer, lr_config and runner. The tree's generation chooses the dialect; a
source config that speaks the other one is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from ..dialects import DIALECTS, MMCV, MMENGINE
from ..errors import InputError, StateError
from .finetune_plan import FinetuneOptions, FinetunePlan, as_list
from .lr_config import lr_config_end_lr

# Below this fraction of its starting LR, a source schedule counts as having decayed to
# zero: continuing from there would not train, so the user must choose --lr.
VANISHED_LR = 1e-3

# The fine-tune schedules: each decays from the starting LR to 0 over `iters` iterations.
SCHEDULES: dict[str, Callable[[int], dict]] = {
    "poly": lambda iters: dict(type="PolyLR", eta_min=0.0, power=0.9, begin=0, end=iters, by_epoch=False),
    "cosine": lambda iters: dict(
        type="CosineAnnealingLR", T_max=iters, eta_min=0.0, begin=0, end=iters, by_epoch=False
    ),
}
# The same schedules as 0.x lr_config (mmcv's poly and cosine policies run to runner.max_iters).
LR_CONFIGS: dict[str, dict] = {
    "poly": dict(policy="poly", power=0.9, min_lr=0.0, by_epoch=False),
    "cosine": dict(policy="CosineAnnealing", min_lr=0.0, by_epoch=False),
}


@dataclass(frozen=True)
class ScheduleDialect:
    """How the configs of one MMSeg generation spell the schedule."""

    name: str
    markers: tuple[str, ...]  # top-level keys only this generation's configs set
    lr_path: tuple[str, ...]  # where the optimizer's LR is
    iterations: Callable[[dict], int]  # the source's length; refuses what is not iteration-based
    end_lr: Callable[[dict, float, int], float]  # (source, base LR, length) -> LR of the last iteration
    rewrite: Callable[[FinetunePlan, FinetuneOptions], None]  # the decay over --iters, and its length


def _cap(plan: FinetunePlan, holder, key: str, path: str, limit: int, value: int | None = None) -> None:
    """An interval (or begin) not beyond the fine-tune: set to `value` (default: the limit)."""
    if isinstance(holder, dict) and isinstance(holder.get(key), int) and holder[key] > limit:
        holder[key] = limit if value is None else value
        plan.note(path, "not beyond max_iters")


# MMSeg 1.x: mmengine's optim_wrapper, param_scheduler and train loop.

def _train_loop_iterations(source: dict) -> int:
    train_cfg = source.get("train_cfg")
    if not isinstance(train_cfg, dict):
        raise InputError("the source config has no train_cfg")
    loop = train_cfg.get("type", "IterBasedTrainLoop" if train_cfg.get("by_epoch") is False else None)
    return _max_iters(loop or "an epoch-based loop", "IterBasedTrainLoop", train_cfg, "train_cfg.max_iters")


def _max_iters(trained_by: str, iteration_based: str, holder: dict, where: str) -> int:
    """`holder`'s max_iters, a positive integer, when the source trains with `iteration_based`."""
    if trained_by != iteration_based:
        raise InputError(
            f"the source config trains with {trained_by}; "
            f"config writes iteration-based fine-tunes ({iteration_based}) only"
        )
    max_iters = holder.get("max_iters")
    if type(max_iters) is not int or max_iters < 1:
        raise InputError(f"{where} is {max_iters!r}, not a positive integer")
    return max_iters


def _param_scheduler_end_lr(source: dict, base_lr: float, max_iters: int) -> float:
    """The LR of the source's last training iteration, stepping mmengine's own schedulers.

    The schedulers run on a one-parameter optimizer exactly as mmengine's
    ParamSchedulerHook runs them: built in order (each steps once), then stepped after
    every iteration. Anything they cannot run raises InputError asking for --lr.
    """
    configs = source.get("param_scheduler") or []
    configs, _ = as_list(configs)

    import warnings

    import mmengine.optim  # noqa: F401 - registers mmengine's schedulers
    import torch
    from mmengine.registry import PARAM_SCHEDULERS

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr, momentum=0.9)
    schedulers = []
    with warnings.catch_warnings():
        # mmengine warns that the schedulers step before the optimizer: true, and harmless here.
        warnings.simplefilter("ignore")
        for index, cfg in enumerate(configs):
            where = f"param_scheduler[{index}]"
            name = cfg.get("type") if isinstance(cfg, dict) else None
            scheduler_class = PARAM_SCHEDULERS.get(name) if isinstance(name, str) else None
            if scheduler_class is None:
                raise InputError(f"cannot evaluate {where} ({name}: not an mmengine scheduler) to find the LR the "
                                 "source schedule ends with; pass --lr")
            if cfg.get("by_epoch", True):
                raise InputError(f"{where} ({name}) steps by epoch in an iteration-based config; pass --lr")
            try:
                # Built directly, not by PARAM_SCHEDULERS.build: no default scope may import a package.
                arguments = {k: v for k, v in cfg.items() if k not in ("type", "_scope_")}
                schedulers.append(scheduler_class(optimizer, **arguments))
            except Exception as exc:  # noqa: BLE001 - any failure here means: ask for --lr
                raise InputError(f"cannot evaluate {where} ({name}): {exc}; pass --lr") from None
        try:
            for _ in range(max_iters - 1):
                for scheduler in schedulers:
                    scheduler.step()
        except Exception as exc:  # noqa: BLE001 - e.g. ReduceOnPlateauLR wants metrics
            raise InputError(f"cannot evaluate param_scheduler ({exc}); pass --lr") from None
    return optimizer.param_groups[0]["lr"]


def _rewrite_1x(plan: FinetunePlan, options: FinetuneOptions) -> None:
    target, iters = plan.target, options.iters
    target["param_scheduler"] = [SCHEDULES[options.schedule](iters)]
    plan.note("param_scheduler", f"{options.schedule} decay to 0 over {iters} iterations")
    train_cfg = target["train_cfg"]
    train_cfg["max_iters"] = iters
    plan.note("train_cfg.max_iters", "--iters")
    _cap(plan, train_cfg, "val_interval", "train_cfg.val_interval", iters)
    _cap(plan, train_cfg, "val_begin", "train_cfg.val_begin", iters, value=1)
    hooks = target.get("default_hooks")
    _cap(plan, hooks.get("checkpoint") if isinstance(hooks, dict) else None, "interval",
         "default_hooks.checkpoint.interval", iters)


# MMSeg 0.x: mmcv 1.x's optimizer, LrUpdaterHook (lr_config) and runner.

def _runner_iterations(source: dict) -> int:
    runner, where = source.get("runner"), "runner.max_iters"
    if runner is None and "total_iters" in source:
        # mmseg 0.x's train_segmentor: no runner means IterBasedRunner(max_iters=total_iters)
        runner, where = dict(type="IterBasedRunner", max_iters=source["total_iters"]), "total_iters"
    if not isinstance(runner, dict):
        raise InputError("the source config has no runner (nor a legacy total_iters)")
    return _max_iters(runner.get("type") or "an unnamed runner", "IterBasedRunner", runner, where)


def _rewrite_0x(plan: FinetunePlan, options: FinetuneOptions) -> None:
    target, iters = plan.target, options.iters
    target["lr_config"] = dict(LR_CONFIGS[options.schedule])
    plan.note("lr_config", f"{options.schedule} decay to 0 over {iters} iterations, no warmup")
    if isinstance(target.get("runner"), dict):
        target["runner"]["max_iters"] = iters
        plan.note("runner.max_iters", "--iters")
    else:
        target["runner"] = dict(type="IterBasedRunner", max_iters=iters)
        plan.note("runner", "--iters; the runner mmseg 0.x builds from total_iters, spelled out")
    if "total_iters" in target:
        target["total_iters"] = iters
        plan.note("total_iters", "kept equal to runner.max_iters")
    _cap(plan, target.get("checkpoint_config"), "interval", "checkpoint_config.interval", iters)
    _cap(plan, target.get("evaluation"), "interval", "evaluation.interval", iters)


# by the dialect of the runner a generation's configs are written for (dialects.py)
SCHEDULE_DIALECTS = {
    MMENGINE: ScheduleDialect(
        name="MMSeg 1.x", markers=("optim_wrapper", "param_scheduler", "train_cfg"),
        lr_path=("optim_wrapper", "optimizer", "lr"), iterations=_train_loop_iterations,
        end_lr=_param_scheduler_end_lr, rewrite=_rewrite_1x,
    ),
    MMCV: ScheduleDialect(
        name="MMSeg 0.x", markers=("lr_config", "runner", "total_iters"),
        lr_path=("optimizer", "lr"), iterations=_runner_iterations,
        end_lr=lambda source, base_lr, max_iters: lr_config_end_lr(source.get("lr_config"), base_lr, max_iters),
        rewrite=_rewrite_0x,
    ),
}


def dialect_of(source: dict, runner: str) -> ScheduleDialect:
    """The tree's dialect; a source config that sets only the other one's keys is refused."""
    generation = DIALECTS.get(runner)
    dialect = SCHEDULE_DIALECTS.get(generation) if generation is not None else None
    if dialect is None:
        raise StateError(f"config does not know how {runner} configs spell the schedule; please report it")
    spoken = [d for d in SCHEDULE_DIALECTS.values() if any(key in source for key in d.markers)]
    if spoken and dialect not in spoken:
        keys = ", ".join(key for key in spoken[0].markers if key in source)
        raise InputError(
            f"the source config is an {spoken[0].name} config (it sets {keys}) but the tree is {dialect.name}: "
            "pass a config and a tree of one MMSeg generation"
        )
    return dialect


def _base_lr(source: dict, path: tuple[str, ...]) -> float:
    value: object = source
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"the source config has no {'.'.join(path)} to start from")
    return float(value)


def _continued(lr, base_lr: float) -> float:
    """The source's end LR as the fine-tune's start, refused if it has decayed to nothing."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr):
        raise InputError(f"the source schedule ends at lr {lr!r}, not a learning rate; pass --lr")
    if lr < base_lr * VANISHED_LR:
        raise InputError(
            f"the source schedule ends at lr {lr:.3g} (from {base_lr:g}): too small to continue from; pass --lr"
        )
    return float(f"{lr:.6g}")


def reward_schedule(plan: FinetunePlan, options: FinetuneOptions) -> None:
    """Start from --lr or where the source schedule ended, decay over --iters."""
    dialect = dialect_of(plan.source, options.runner)
    max_iters = dialect.iterations(plan.source)
    base_lr = _base_lr(plan.source, dialect.lr_path)
    if options.lr is not None:
        lr, why = options.lr, "--lr"
    else:
        lr, why = _continued(dialect.end_lr(plan.source, base_lr, max_iters), base_lr), "where the source schedule ends"
    *parents, key = dialect.lr_path
    holder = plan.target
    for parent in parents:
        holder = holder[parent]
    holder[key] = lr
    plan.note(".".join(dialect.lr_path), why)
    dialect.rewrite(plan, options)
