"""`rewardpatch config`: turn a cross-entropy config into a reward fine-tune config.

The source config is loaded with mmengine (inheritance resolved) and rewritten as plain
data in small steps - decode heads, schedule, checkpoint - each noting why it changed.
The output inherits the source through `_base_` and holds only the difference that
mmengine has to merge onto it (see `merge_override`); before it replaces OUT, the
written file is loaded again and must give exactly the rewritten config.

torch and mmengine are imported inside the functions that need them, so that
`rewardpatch --help` stays fast.
"""

from __future__ import annotations

import ast
import builtins
import copy
import keyword
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import click

from . import __version__
from .errors import InputError, StateError

DEFAULT_ITERS = 2000
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

UNSET = object()  # a key absent from the source
REMOVED = object()  # a key absent from the fine-tune config
WHOLE_LINE = 200  # a changed-type dict this short is listed whole, a longer one key by key


@dataclass(frozen=True)
class Change:
    """One leaf that differs, as the header comment of OUT lists it."""

    path: str
    before: object
    after: object
    note: str | None = None

    def line(self) -> str:
        note = f"  ({self.note})" if self.note else ""
        return f"{self.path}: {_show(self.before)} -> {_show(self.after)}{note}"


def _show(value, top: bool = True) -> str:
    """A compact, readable form: registry dicts as Type(k=v), top-level strings bare."""
    if value is UNSET or value is REMOVED:
        return "(unset)" if value is UNSET else "(removed)"
    if isinstance(value, str):
        return value if top else repr(value)
    if isinstance(value, dict):
        items = {k: v for k, v in value.items() if k not in ("type", "_delete_")}
        body = ", ".join(f"{k}={_show(v, False)}" for k, v in items.items())
        name = value.get("type") if isinstance(value.get("type"), str) else "dict"
        return f"{name}({body})"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v, False) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(_show(v, False) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def same(a, b) -> bool:
    """Equal and of the same types all the way down (True is not 1, (1,) is not [1])."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(same, a, b))
    return a == b


def _replaced(before: dict, after: dict, path: str) -> bool:
    """A registry dict whose type changed, short enough to read on one line as a whole."""
    if before.get("type") == after.get("type"):
        return False
    return len(Change(path, before, after).line()) <= WHOLE_LINE


def leaf_changes(before, after, path: str = "") -> Iterator[Change]:
    """Every leaf of `after` that differs from `before`, dicts and equal-length lists descended."""
    if type(before) is dict and type(after) is dict and not _replaced(before, after, path):
        for key, value in after.items():
            sub = f"{path}.{key}" if path else str(key)
            yield from leaf_changes(before.get(key, UNSET), value, sub)
        for key in [k for k in before if k not in after]:
            yield Change(f"{path}.{key}" if path else str(key), before[key], REMOVED)
    elif type(before) is type(after) and isinstance(after, (list, tuple)) and len(before) == len(after):
        for index, (old, new) in enumerate(zip(before, after)):
            yield from leaf_changes(old, new, f"{path}[{index}]")
    elif not same(before, after):
        yield Change(path, before, after)


def merge_override(before, after):
    """The value that mmengine's `_base_` merge combines with `before` into `after`.

    A dict merges key by key, so only differing keys are written; a dict that loses keys,
    or replaces a non-dict, needs `_delete_=True` and its full content; anything else
    (lists included) replaces the inherited value.
    """
    if isinstance(after, dict):
        if not isinstance(before, dict) or before.keys() - after.keys():
            return {"_delete_": True, **after} if before is not UNSET else after
        return {
            key: merge_override(before.get(key, UNSET), value)
            for key, value in after.items()
            if not same(before.get(key, UNSET), value)
        }
    return after


@dataclass
class FinetuneOptions:
    """What the user asked for on the command line."""

    reward_classes: set[str]
    tree: str
    lr: float | None = None
    iters: int = DEFAULT_ITERS
    schedule: str = "poly"
    aux: bool = False
    reward_cfg: dict = field(default_factory=dict)
    check_reward_cfg: Callable[[dict], dict] = lambda reward_cfg: reward_cfg


@dataclass
class FinetunePlan:
    """The source config, the fine-tune config, and why each difference was made."""

    source: dict
    target: dict
    notes: dict[str, str] = field(default_factory=dict)  # path prefix -> why

    def note(self, path: str, why: str) -> None:
        self.notes[path] = why

    @property
    def changes(self) -> list[Change]:
        changes, pending = [], dict(self.notes)
        for change in leaf_changes(self.source, self.target):
            prefix = next((p for p in pending if _within(change.path, p) or _within(p, change.path)), None)
            changes.append(Change(change.path, change.before, change.after, pending.pop(prefix, None)))
        return changes

    @property
    def overrides(self) -> dict:
        return {
            key: merge_override(self.source.get(key, UNSET), value)
            for key, value in self.target.items()
            if not same(self.source.get(key, UNSET), value)
        }


def _within(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".") or path.startswith(prefix + "[")


def _split_type(value, where: str) -> tuple[str, str]:
    if not isinstance(value, str):
        raise InputError(
            f"{where}.type is {value!r}, not a registry name (new-style lazy-import configs are not supported)"
        )
    scope, _, name = value.rpartition(".")
    return (scope + "." if scope else ""), name


def _as_list(value) -> tuple[list, bool]:
    return (value, True) if isinstance(value, list) else ([value], False)


def _head_dicts(model: dict, key: str) -> list[tuple[str, dict]]:
    heads, is_list = _as_list(model[key])
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
    losses, is_list = _as_list(head["loss_decode"])
    converted = [_reward_loss(loss, f"{where}[{i}]" if is_list else where) for i, loss in enumerate(losses)]
    if all(c is None for c in converted):
        found = ", ".join(str(loss.get("type")) for loss in losses)
        raise InputError(f"{where} has no {CROSS_ENTROPY} to turn into {REWARD_LOSS} (found {found})")
    result = [c if c is not None else loss for c, loss in zip(converted, losses)]
    return result if is_list else result[0]


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
        if name not in options.reward_classes and f"Reward{name}" not in options.reward_classes:
            missing.append(name.removeprefix("Reward"))
    if missing:
        names = ",".join(dict.fromkeys(missing))
        raise StateError(
            f"{names.replace(',', ', ')} {'has' if len(set(missing)) == 1 else 'have'} no reward version "
            f"in {options.tree}: run `rewardpatch apply {options.tree} --heads {names}` first"
        )
    for where, head in heads:
        scope, name = _split_type(head["type"], where)
        if name not in options.reward_classes:
            head["type"] = f"{scope}Reward{name}"
        head["loss_decode"] = _reward_losses(head, where, plan)
        if options.reward_cfg:
            merged = {**(head.get("reward_cfg") or {}), **options.reward_cfg}
            try:
                options.check_reward_cfg(merged)
            except (ValueError, TypeError) as exc:
                raise InputError(f"--reward: {exc}") from None
            head["reward_cfg"] = merged


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
    configs, _ = _as_list(configs)

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


def start_from(plan: FinetunePlan, checkpoint: str | None, why: str | None = None) -> None:
    """load_from is the checkpoint (absolute: mmengine resolves it from the working directory)."""
    if checkpoint is not None:
        plan.target["load_from"] = checkpoint
        if why:
            plan.note("load_from", why)
    if plan.target.get("resume"):
        plan.target["resume"] = False
        plan.note("resume", "a fine-tune starts a new schedule; it does not resume the old one")


def plan_finetune(source: dict, options: FinetuneOptions) -> FinetunePlan:
    """The rewrite of a loaded source config (a plain dict) but for the checkpoint (`start_from`)."""
    plan = FinetunePlan(source=source, target=copy.deepcopy(source))
    reward_heads(plan, options)
    reward_schedule(plan, options)
    start_from(plan, None)
    return plan


def _module_of(tree, template: str) -> ast.Module:
    spec = next((t for t in tree.generation.templates if t.source == template), None)
    text = tree.read(spec.target) if spec else None
    if text is None:
        raise StateError(f"{tree.root}: {template} is missing; run `rewardpatch check {tree.root}`")
    return ast.parse(text)


def _literal_constants(module: ast.Module) -> dict:
    """Every module-level `NAME = <literal>` (dict(...) calls of literals included)."""
    constants = {}
    for node in module.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        try:
            constants[node.targets[0].id] = eval(
                compile(ast.Expression(node.value), node.targets[0].id, "eval"), {"__builtins__": {"dict": dict}}
            )
        except Exception:  # noqa: BLE001 - not a literal: the checker cannot use it
            continue
    return constants


def reward_cfg_checker(tree) -> Callable[[dict], dict]:
    """The tree's `check_reward_cfg`, run without importing torch.

    The inserted reward_estimator.py imports torch; its validation reads only the
    module's literal constants (modes, scopes, defaults). Those are evaluated from the
    syntax tree and the function is compiled alone, so `config` checks what the tree's
    own code will check when the model is built.
    """
    module = _module_of(tree, "reward_estimator.py")
    function = next((n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == "check_reward_cfg"), None)
    if function is None:
        raise StateError(f"{tree.root}: reward_estimator.py defines no check_reward_cfg; run `rewardpatch apply`")
    namespace = {"__builtins__": builtins, **_literal_constants(module)}
    exec(compile(ast.Module(body=[function], type_ignores=[]), "check_reward_cfg", "exec"), namespace)
    return namespace["check_reward_cfg"]


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        lowered = text.strip().lower()
        return {"true": True, "false": False, "none": None}.get(lowered, text.strip())


def parse_reward_options(values: tuple[str, ...]) -> dict:
    """['mode=weighted_ce', 'num_samples=4,temperature=0.5'] -> {'mode': 'weighted_ce', ...}."""
    reward_cfg = {}
    for value in values:
        for item in value.split(","):
            key, sep, text = item.partition("=")
            if not sep or not key.strip() or not text.strip():
                raise InputError(f"--reward expects KEY=VALUE, got {item!r}")
            reward_cfg[key.strip()] = _literal(text)
    return reward_cfg


WIDTH = 100


def _scalar(value, where: str) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return f"float('{value}')"
    if value is None or isinstance(value, (str, int, float, bool)):
        return repr(value)
    raise InputError(f"{where}: cannot write a {type(value).__name__} value into a config")


def _is_name(key) -> bool:
    return isinstance(key, str) and key.isidentifier() and not keyword.iskeyword(key)


def python_value(value, indent: int = 0, where: str = "") -> str:
    """`value` as config source: dict(k=v) like MMSeg's configs, wrapped black-style."""
    if isinstance(value, dict):
        keyword_style = all(_is_name(k) for k in value)
        items = [
            f"{k if keyword_style else _scalar(k, where)}{'=' if keyword_style else ': '}"
            f"{python_value(v, indent + 4, f'{where}.{k}')}"
            for k, v in value.items()
        ]
        open_, close = ("dict(", ")") if keyword_style else ("{", "}")
    elif isinstance(value, (list, tuple)):
        items = [python_value(v, indent + 4, f"{where}[{i}]") for i, v in enumerate(value)]
        open_, close = ("[", "]") if isinstance(value, list) else ("(", ")")
        if isinstance(value, tuple) and len(value) == 1:
            items[0] += ","
    else:
        return _scalar(value, where)
    inline = open_ + ", ".join(items) + close
    if len(inline) + indent <= WIDTH and "\n" not in inline:
        return inline
    pad = " " * (indent + 4)
    return open_ + "\n" + "".join(f"{pad}{item},\n" for item in items) + " " * indent + close


def base_reference(src: Path, out: Path) -> str:
    """SRC as OUT's `_base_`: relative when both live in one area, else absolute."""
    src, out_dir = Path(os.path.abspath(src)), Path(os.path.abspath(out)).parent
    try:
        relative = Path(os.path.relpath(src, out_dir))
        common = Path(os.path.commonpath([src, out_dir]))
    except ValueError:  # different drives
        return src.as_posix()
    if common == Path(common.anchor) or relative.parts.count("..") > 3:
        return src.as_posix()
    text = relative.as_posix()
    return text if text.startswith("../") else f"./{text}"


def render(plan: FinetunePlan, base: str, source_name: str, tree: str) -> str:
    lines = [
        f"# Reward fine-tuning config written by `rewardpatch config` (rewardpatch {__version__}).",
        f"# Source: {source_name} (inherited through _base_)",
        f"# Reward heads from the patched tree {tree}",
        "# Changes from the source config:",
        *(f"#   {change.line()}" for change in plan.changes),
        "",
        f"_base_ = {base!r}",
        "",
    ]
    for key, value in plan.overrides.items():
        lines.append(f"{key} = {python_value(value, 0, key)}")
    return "\n".join(lines) + "\n"


def load_config(path: Path, what: str) -> dict:
    """A config file as a plain dict, `_base_` resolved; custom_imports are not imported."""
    from mmengine.config import Config

    try:
        return Config.fromfile(str(path), import_custom_modules=False).to_dict()
    except Exception as exc:  # noqa: BLE001 - the config is the user's Python; anything can fail
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InputError(f"{what}: cannot load the config ({type(exc).__name__}: {message})") from None


def write_verified(out: Path, text: str, expected: dict) -> None:
    """Write OUT only if mmengine loads it back into exactly `expected`."""
    tmp = out.with_name(f".{out.stem}.rewardpatch-tmp.py")
    try:
        tmp.write_text(text, encoding="utf-8")
        loaded = load_config(tmp, str(out))
        difference = next(leaf_changes(expected, loaded), None)
        if difference is not None:
            raise StateError(f"internal error: {out} would not load as intended ({difference.line()}); please report it")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _prepare_checkpoint(checkpoint: str, convert: bool, out: Path) -> tuple[str, str | None]:
    """The checkpoint path to load from, after the weights-only check (and conversion)."""
    from .checkpoints import check_weights_only, convert_to_weights_only, weights_only_copy_path

    check = check_weights_only(checkpoint)
    if check.ok:
        if convert:
            click.echo(f"{checkpoint} already loads with weights_only=True; not converted", err=True)
        return os.path.abspath(checkpoint), None
    if not convert:
        raise StateError(
            f"{checkpoint} does not load with torch.load(weights_only=True), as torch >= 2.6 and mmengine's "
            f"load_from do: {check.reason}; if you trust the file, rerun with --convert-checkpoint"
        )
    converted = convert_to_weights_only(checkpoint, weights_only_copy_path(out))
    dropped = f" (left out: {', '.join(converted.dropped)})" if converted.dropped else ""
    click.echo(f"wrote {converted.path}: weights-only copy of {checkpoint}, {converted.tensors} tensors{dropped}")
    return os.path.abspath(converted.path), f"weights-only copy of {checkpoint}"


@click.command("config")
@click.argument("src", metavar="SRC")
@click.option("--tree", "tree_path", required=True, metavar="TREE", help="The patched MMSeg checkout to train in.")
@click.option("--checkpoint", metavar="CKPT", help="The cross-entropy checkpoint to fine-tune (becomes load_from).")
@click.option(
    "--lr", type=click.FloatRange(min=0, min_open=True), metavar="LR",
    help="Starting LR (default: the LR the source schedule ends with).",
)
@click.option(
    "--iters", type=click.IntRange(min=1), default=DEFAULT_ITERS, show_default=True, metavar="N",
    help="Fine-tune length: train_cfg.max_iters and the end of the schedule.",
)
@click.option(
    "--schedule", type=click.Choice(sorted(SCHEDULES)), default="poly", show_default=True,
    help="How the LR decays to 0 over --iters.",
)
@click.option("--aux", is_flag=True, help="Turn the auxiliary heads into reward heads too.")
@click.option(
    "--reward", "rewards", multiple=True, metavar="KEY=VALUE",
    help="A reward_cfg entry of the heads (repeatable, or comma-separated), e.g. mode=weighted_ce.",
)
@click.option(
    "--convert-checkpoint", is_flag=True,
    help="If CKPT does not load weights-only, write a weights-only copy next to OUT and load that. "
    "Reading CKPT for it executes code pickled in the file: use it only for checkpoints you trust.",
)
@click.option("-o", "--output", "out", required=True, metavar="OUT", help="The config file to write (.py).")
def config_command(
    src: str, tree_path: str, checkpoint: str | None, lr: float | None, iters: int, schedule: str,
    aux: bool, rewards: tuple[str, ...], convert_checkpoint: bool, out: str,
) -> int:
    """Write OUT, a config that fine-tunes SRC's model with reward heads from TREE.

    OUT inherits SRC (`_base_`) and overrides only what changes, listed in its header:
    decode heads X become RewardX with CrossEntropyRewardLoss, the optimiser starts
    from --lr or where SRC's schedule ended and decays over --iters, and CKPT, which
    must load with torch.load(weights_only=True), becomes load_from.
    """
    from .manifest import Manifest
    from .tree import MMSegTree

    source_path, out_path = Path(src), Path(out)
    if convert_checkpoint and checkpoint is None:
        raise click.UsageError("--convert-checkpoint needs --checkpoint")
    if out_path.suffix != ".py":
        raise InputError(f"{out}: the output config must be a .py file")
    if out_path.parent.exists() and not out_path.parent.is_dir():
        raise InputError(f"{out_path.parent}: not a directory, cannot hold the output config")
    if not source_path.is_file():
        raise InputError(f"{src}: no such config file")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if out_path.exists() and out_path.resolve() == source_path.resolve():
        raise InputError(f"{out}: the output would overwrite the source config")

    tree = MMSegTree.open(tree_path)
    manifest = Manifest.load(tree)
    if manifest is None:
        raise StateError(f"{tree.root} is not patched: run `rewardpatch apply {tree_path}` first")
    check_reward_cfg = reward_cfg_checker(tree)
    reward_cfg = parse_reward_options(rewards)
    if reward_cfg:
        try:
            check_reward_cfg(reward_cfg)
        except (ValueError, TypeError) as exc:
            raise InputError(f"--reward: {exc}") from None

    options = FinetuneOptions(
        reward_classes=manifest.reward_classes, tree=tree_path, lr=lr, iters=iters, schedule=schedule,
        aux=aux, reward_cfg=reward_cfg, check_reward_cfg=check_reward_cfg,
    )
    source = load_config(source_path, src)
    plan = plan_finetune(source, options)  # every config error surfaces before any checkpoint work
    if checkpoint is not None:
        start_from(plan, *_prepare_checkpoint(checkpoint, convert_checkpoint, out_path))

    text = render(plan, base_reference(source_path, out_path), source_path.name, str(tree.root))
    write_verified(out_path, text, plan.target)
    click.echo(f"wrote {out}: {len(plan.changes)} changes to {src}")
    for change in plan.changes:
        click.echo(f"  {change.line()}")
    if plan.target.get("load_from") is None:
        click.echo("note: no --checkpoint and the source sets no load_from: the fine-tune starts from no trained model", err=True)
    return 0
