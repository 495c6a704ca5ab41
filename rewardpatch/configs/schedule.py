"""The fine-tune schedule: start where the source's LR schedule ends, decay to 0 over --iters."""

from __future__ import annotations

from typing import Callable

from ..errors import InputError
from .plan import FinetuneOptions, FinetunePlan, as_list

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


def _iteration_budget(source: dict) -> int:
    train_cfg = source.get("train_cfg")
    if not isinstance(train_cfg, dict):
        raise InputError("the source config has no train_cfg")
    loop = train_cfg.get("type", "IterBasedTrainLoop" if train_cfg.get("by_epoch") is False else None)
    if loop != "IterBasedTrainLoop":
        raise InputError(
            f"the source config trains with {loop or 'an epoch-based loop'}; "
            "config writes iteration-based fine-tunes (IterBasedTrainLoop) only"
        )
    max_iters = train_cfg.get("max_iters")
    if type(max_iters) is not int or max_iters < 1:
        raise InputError(f"train_cfg.max_iters is {max_iters!r}, not a positive integer")
    return max_iters


def _optimizer_lr(source: dict) -> float:
    wrapper = source.get("optim_wrapper")
    optimizer = wrapper.get("optimizer") if isinstance(wrapper, dict) else None
    lr = optimizer.get("lr") if isinstance(optimizer, dict) else None
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
        raise InputError("the source config has no optim_wrapper.optimizer.lr to start from")
    return float(lr)


def schedule_end_lr(source: dict) -> float:
    """The LR of the source's last training iteration, stepping mmengine's own schedulers.

    The schedulers run on a one-parameter optimizer exactly as mmengine's
    ParamSchedulerHook runs them: built in order (each steps once), then stepped after
    every iteration. Anything they cannot run raises InputError asking for --lr.
    """
    base_lr = _optimizer_lr(source)
    max_iters = _iteration_budget(source)
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
    lr = optimizer.param_groups[0]["lr"]
    if lr < base_lr * VANISHED_LR:
        raise InputError(
            f"the source schedule ends at lr {lr:.3g} (from {base_lr:g}): too small to continue from; pass --lr"
        )
    return float(f"{lr:.6g}")


def reward_schedule(plan: FinetunePlan, options: FinetuneOptions) -> None:
    """Start from --lr or where the source schedule ended, decay over --iters."""
    source, target = plan.source, plan.target
    _iteration_budget(source)
    _optimizer_lr(source)
    if options.lr is not None:
        lr, why = options.lr, "--lr"
    else:
        lr, why = schedule_end_lr(source), "where the source schedule ends"
    target["optim_wrapper"]["optimizer"]["lr"] = lr
    plan.note("optim_wrapper.optimizer.lr", why)

    target["param_scheduler"] = [SCHEDULES[options.schedule](options.iters)]
    plan.note("param_scheduler", f"{options.schedule} decay to 0 over {options.iters} iterations")

    train_cfg = target["train_cfg"]
    train_cfg["max_iters"] = options.iters
    plan.note("train_cfg.max_iters", "--iters")
    if isinstance(train_cfg.get("val_interval"), int) and train_cfg["val_interval"] > options.iters:
        train_cfg["val_interval"] = options.iters
        plan.note("train_cfg.val_interval", "not beyond max_iters")
    if isinstance(train_cfg.get("val_begin"), int) and train_cfg["val_begin"] > options.iters:
        train_cfg["val_begin"] = 1
        plan.note("train_cfg.val_begin", "not beyond max_iters")
    hooks = target.get("default_hooks")
    checkpoint_hook = hooks.get("checkpoint") if isinstance(hooks, dict) else None
    if isinstance(checkpoint_hook, dict) and isinstance(checkpoint_hook.get("interval"), int):
        if checkpoint_hook["interval"] > options.iters:
            checkpoint_hook["interval"] = options.iters
            plan.note("default_hooks.checkpoint.interval", "not beyond max_iters")
