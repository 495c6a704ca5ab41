"""The LR a 0.x config's `lr_config` ends with, as mmcv 1.x's LrUpdaterHook computes it.

MMSeg 0.x trains with mmcv 1.x's runner, which mmcv 2.x no longer has, so the hook's
policies are repeated here with the formulas of mmcv 1.7's mmcv/runner/hooks/lr_updater.py.
The hook sets the LR before each iteration from `runner.iter`, counted from 0: the last
iteration of `max_iters` is `max_iters - 1`.
"""

from __future__ import annotations

from math import cos, pi
from typing import Callable

from ..errors import InputError

# LrUpdaterHook's own arguments and their defaults; the rest belong to the policy.
HOOK_DEFAULTS = dict(by_epoch=True, warmup=None, warmup_iters=0, warmup_ratio=0.1, warmup_by_epoch=False)
WARMUPS = ("constant", "linear", "exp")


def _annealing_cos(start: float, end: float, factor: float, weight: float = 1.0) -> float:
    return end + 0.5 * weight * (start - end) * (cos(pi * factor) + 1)


def _fixed(base_lr, progress, max_progress):
    return base_lr


def _step(base_lr, progress, max_progress, step, gamma=0.1, min_lr=None):
    if isinstance(step, list):
        if not all(isinstance(s, int) and s > 0 for s in step):
            raise ValueError(f"step={step!r} must hold positive integers")
        exp = next((i for i, s in enumerate(step) if progress < s), len(step))
    elif isinstance(step, int):
        if step <= 0:
            raise ValueError(f"step={step!r} must be positive")
        exp = progress // step
    else:
        raise TypeError(f"step={step!r} must be a list or an integer")
    lr = base_lr * gamma**exp
    return lr if min_lr is None else max(lr, min_lr)


def _exp(base_lr, progress, max_progress, gamma):
    return base_lr * gamma**progress


def _poly(base_lr, progress, max_progress, power=1.0, min_lr=0.0):
    coeff = (1 - progress / max_progress) ** power
    return (base_lr - min_lr) * coeff + min_lr


def _inv(base_lr, progress, max_progress, gamma, power=1.0):
    return base_lr * (1 + gamma * progress) ** (-power)


def _cosine_annealing(base_lr, progress, max_progress, min_lr=None, min_lr_ratio=None):
    if (min_lr is None) == (min_lr_ratio is None):
        raise ValueError("it takes exactly one of min_lr and min_lr_ratio")
    target_lr = base_lr * min_lr_ratio if min_lr_ratio is not None else min_lr
    return _annealing_cos(base_lr, target_lr, progress / max_progress)


# The LrUpdaterHook classes evaluated, by name without the LrUpdaterHook suffix.
POLICIES: dict[str, Callable[..., float]] = {
    "Fixed": _fixed, "Step": _step, "Exp": _exp, "Poly": _poly, "Inv": _inv, "CosineAnnealing": _cosine_annealing,
}


def hook_name(policy: str) -> str:
    """mmcv's register_lr_hook: an all-lowercase policy is title-cased ('poly' -> 'Poly')."""
    return policy.title() if policy == policy.lower() else policy


def _warmed_up(lr, iteration, by_epoch, warmup, warmup_iters, warmup_ratio, warmup_by_epoch):
    """The LR of `iteration` after the hook's warmup (which ends before most schedules do)."""
    if warmup is None:
        return lr
    if warmup not in WARMUPS:
        raise ValueError(f"warmup={warmup!r} is none of {', '.join(WARMUPS)}")
    if warmup_by_epoch:
        raise ValueError("warmup_by_epoch needs the epoch length, which an IterBasedRunner does not have")
    if not (isinstance(warmup_iters, int) and warmup_iters > 0 and 0 < warmup_ratio <= 1):
        raise ValueError(f"warmup_iters={warmup_iters!r}, warmup_ratio={warmup_ratio!r} are out of range")
    if iteration >= warmup_iters:
        return lr
    if warmup == "constant":
        return lr * warmup_ratio
    if warmup == "linear":
        return lr * (1 - (1 - iteration / warmup_iters) * (1 - warmup_ratio))
    return lr * warmup_ratio ** (1 - iteration / warmup_iters)


def lr_config_end_lr(lr_config, base_lr: float, max_iters: int) -> float:
    """The LR of the last iteration under `lr_config` (None: no LR hook, the LR stays)."""
    if lr_config is None:
        return base_lr
    policy = lr_config.get("policy") if isinstance(lr_config, dict) else None
    if not isinstance(policy, str):
        raise InputError("lr_config has no policy to compute the LR the source schedule ends with; pass --lr")
    where = f"lr_config (policy={policy!r})"
    formula = POLICIES.get(hook_name(policy))
    if formula is None:
        raise InputError(
            f"cannot evaluate {where}: rewardpatch computes the end LR of the "
            f"{', '.join(POLICIES)} policies only; pass --lr"
        )
    arguments = {k: v for k, v in lr_config.items() if k != "policy"}
    hook = {key: arguments.pop(key, default) for key, default in HOOK_DEFAULTS.items()}
    if hook["by_epoch"] and not (formula is _fixed and hook["warmup"] is None):
        raise InputError(f"{where} steps by epoch (by_epoch defaults to True) in an iteration-based config; pass --lr")
    last = max_iters - 1
    try:
        return _warmed_up(formula(base_lr, last, max_iters, **arguments), last, **hook)
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise InputError(f"cannot evaluate {where}: {exc}; pass --lr") from None
