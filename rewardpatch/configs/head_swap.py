"""The decode heads and their losses: X becomes RewardX, CrossEntropyLoss CrossEntropyRewardLoss."""

from __future__ import annotations

from ..errors import InputError, StateError
from ..naming import reward_name, unrewarded_name
from .finetune_plan import FinetuneOptions, FinetunePlan, as_list

CROSS_ENTROPY = "CrossEntropyLoss"
REWARD_LOSS = "CrossEntropyRewardLoss"
# CrossEntropyLoss arguments CrossEntropyRewardLoss takes as they are.
REWARD_LOSS_ARGS = ("reduction", "class_weight", "loss_weight", "loss_name", "avg_non_ignore")
# Arguments whose default (falsy) value is dropped; a true value has no reward counterpart.
FALSY_ONLY_ARGS = {
    "use_sigmoid": "a sigmoid cross-entropy cannot become a reward loss (CrossEntropyRewardLoss is softmax only)",
    "use_mask": "a masked binary cross-entropy cannot become a reward loss",
}
DEFAULT_LOSS_NAME = "loss_ce"  # CrossEntropyLoss's; the reward loss logs as loss_ce_reward


def _split_type(value, where: str) -> tuple[str, str]:
    if not isinstance(value, str):
        raise InputError(
            f"{where}.type is {value!r}, not a registry name (new-style lazy-import configs are not supported)"
        )
    scope, _, name = value.rpartition(".")
    return (scope + "." if scope else ""), name


def _head_dicts(model: dict, key: str) -> list[tuple[str, dict]]:
    heads, is_list = as_list(model[key])
    found = []
    for index, head in enumerate(heads):
        where = f"model.{key}[{index}]" if is_list else f"model.{key}"
        if not isinstance(head, dict):
            raise InputError(f"{where} is a {type(head).__name__}, not a head config dict")
        found.append((where, head))
    return found


def _reward_loss(loss: dict, where: str) -> dict | None:
    """CrossEntropyRewardLoss for a CrossEntropyLoss config; None for any other loss."""
    if not isinstance(loss, dict):
        raise InputError(f"{where} is a {type(loss).__name__}, not a loss config dict")
    scope, name = _split_type(loss.get("type"), where)
    if name == REWARD_LOSS:
        return loss
    if name != CROSS_ENTROPY:
        return None
    converted = {"type": scope + REWARD_LOSS}
    for key, value in loss.items():
        if key == "type" or (key == "loss_name" and value == DEFAULT_LOSS_NAME):
            continue
        if key in FALSY_ONLY_ARGS:
            if value:
                raise InputError(f"{where}.{key}={value!r}: {FALSY_ONLY_ARGS[key]}")
            continue
        if key not in REWARD_LOSS_ARGS:
            raise InputError(f"{where}.{key}: a CrossEntropyLoss argument {REWARD_LOSS} does not take")
        converted[key] = value
    return converted


def _reward_losses(head: dict, where: str, plan: FinetunePlan) -> object:
    where = f"{where}.loss_decode"
    if "loss_decode" not in head:
        plan.note(where, "BaseDecodeHead's default loss was CrossEntropyLoss(loss_weight=1.0)")
        return {"type": REWARD_LOSS, "loss_weight": 1.0}
    losses, is_list = as_list(head["loss_decode"])
    converted = [_reward_loss(loss, f"{where}[{i}]" if is_list else where) for i, loss in enumerate(losses)]
    if all(c is None for c in converted):
        found = ", ".join(str(loss.get("type")) for loss in losses)
        raise InputError(f"{where} has no {CROSS_ENTROPY} to turn into {REWARD_LOSS} (found {found})")
    result = [c if c is not None else loss for c, loss in zip(converted, losses)]
    return result if is_list else result[0]


PLUGIN_MODULE = "rewardpatch.plugin"


def plugin_import(plan: FinetunePlan, options: FinetuneOptions) -> None:
    """custom_imports gains rewardpatch.plugin, after the source's own modules (whose heads it then finds)."""
    if options.plugin_imports is None:
        return
    custom = plan.target.get("custom_imports")
    if custom is not None and not isinstance(custom, dict):
        raise InputError(f"custom_imports is a {type(custom).__name__}, not dict(imports=[...])")
    custom = dict(custom or {})
    imports = options.plugin_imports
    if PLUGIN_MODULE not in imports:
        custom["imports"] = [*imports, PLUGIN_MODULE]
    custom.setdefault("allow_failed_imports", False)
    plan.target["custom_imports"] = custom
    plan.note("custom_imports", "plugin mode: importing rewardpatch.plugin registers the reward heads")


def _reach_the_reward(head: dict, where: str, name: str, plan: FinetunePlan, options: FinetuneOptions) -> None:
    """A head whose loss reaches the reward only on a condition gets the constructor arguments that
    make it hold (list-heads' `conditional`), or is refused when none can."""
    if name not in options.conditions:
        return
    condition, args = options.conditions[name]
    if args is None:
        raise StateError(
            f"{where}: {reward_name(name)} reaches the reward loss only when {condition}, "
            "which no constructor argument sets: the reward would not train this head"
        )
    for argument, value in args:
        if argument not in head or head[argument] != value or type(head[argument]) is not type(value):
            head[argument] = value
            plan.note(f"{where}.{argument}", f"{reward_name(name)} reaches the reward loss only when {condition}")


def reward_heads(plan: FinetunePlan, options: FinetuneOptions) -> None:
    """Decode heads (and with --aux the auxiliary heads) become their Reward* versions."""
    model = plan.target.get("model")
    if not isinstance(model, dict) or "decode_head" not in model:
        raise InputError("the source config's model has no decode_head")
    keys = ["decode_head"]
    if options.aux:
        if not model.get("auxiliary_head"):
            raise InputError("--aux: the source config's model has no auxiliary_head")
        keys.append("auxiliary_head")
    heads = [(where, head) for key in keys for where, head in _head_dicts(model, key)]

    missing = []
    for where, head in heads:
        _, name = _split_type(head.get("type"), where)
        if name not in options.reward_classes and reward_name(name) not in options.reward_classes:
            missing.append(unrewarded_name(name))
    if missing and options.plugin_imports is not None:
        unknown = (f"no decode head of that name in the installed MMSeg or SRC's custom_imports "
                   f"(`{options.plugin_list_heads}` lists them)")
        raise StateError("; ".join(
            f"{name} gets no reward version in plugin mode: {options.plugin_reasons.get(name, unknown)}"
            for name in dict.fromkeys(missing)
        ))
    if missing:
        names = ",".join(dict.fromkeys(missing))
        raise StateError(
            f"{names.replace(',', ', ')} {'has' if len(set(missing)) == 1 else 'have'} no reward version "
            f"in {options.tree}: run `rewardpatch apply {options.tree} --heads {names}` first"
        )
    for where, head in heads:
        scope, name = _split_type(head["type"], where)
        if name not in options.reward_classes:
            head["type"] = scope + reward_name(name)
        _reach_the_reward(head, where, unrewarded_name(name), plan, options)
        head["loss_decode"] = _reward_losses(head, where, plan)
        if options.reward_cfg:
            merged = {**(head.get("reward_cfg") or {}), **options.reward_cfg}
            try:
                options.check_reward_cfg(merged)
            except (ValueError, TypeError) as exc:
                raise InputError(f"--reward: {exc}") from None
            head["reward_cfg"] = merged
