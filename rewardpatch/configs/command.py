"""`rewardpatch config`: the command, composing the steps of the rewrite."""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path

import click

from .. import journal
from ..cli_options import mmseg_version_option
from ..errors import InputError, StateError
from ..manifest import Manifest, require_patched
from ..notice import deferred_warnings
from .finetune_plan import AB_SEED, DEFAULT_ITERS, FinetuneOptions, FinetunePlan, own_work_dir, same_seed, start_from
from .head_swap import plugin_import, reward_heads
from .render import BASELINE_TITLE, REWARD_TITLE, base_reference, load_config, render, write_verified
from .reward_cfg import parse_reward_options, reward_cfg_checker
from .schedule import SCHEDULES, reward_schedule


def plan_finetune(source: dict, options: FinetuneOptions, heads: bool = True) -> FinetunePlan:
    """The rewrite of a loaded source config (a plain dict) but for the checkpoint (`start_from`).

    heads=False is the A/B baseline (`--baseline`): the same rewrite with the heads and losses left
    as they are, so that the cross-entropy run continues under the reward run's schedule.
    """
    plan = FinetunePlan(source=source, target=copy.deepcopy(source))
    plugin_import(plan, options)
    if heads:
        reward_heads(plan, options)
    reward_schedule(plan, options)
    start_from(plan, None)
    return plan


def _prepare_checkpoint(checkpoint: str, convert: bool, out: Path) -> tuple[str, str | None]:
    """The checkpoint path to load from, after the weights-only check (and conversion)."""
    from ..checkpoints import check_weights_only, convert_to_weights_only, weights_only_copy_path

    check = check_weights_only(checkpoint)
    if not check.checked:
        click.echo(f"note: {checkpoint}: {check.reason}; used as it is", err=True)
        return os.path.abspath(checkpoint), None
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


def _check_baseline(baseline: str, source_path: Path, out_path: Path) -> Path:
    """OUT_CE: a .py file that is neither SRC nor OUT, with a name of its own (its work_dir follows it)."""
    path = Path(baseline)
    if path.suffix != ".py":
        raise InputError(f"{baseline}: the --baseline config must be a .py file")
    if path.parent.exists() and not path.parent.is_dir():
        raise InputError(f"{path.parent}: not a directory, cannot hold the --baseline config")
    same_file = path.exists() and out_path.exists() and path.samefile(out_path)
    if same_file or os.path.abspath(path) == os.path.abspath(out_path):
        raise InputError(f"{baseline}: --baseline must be another file than OUT")
    if path.exists() and path.resolve() == source_path.resolve():
        raise InputError(f"{baseline}: the --baseline config would overwrite the source config")
    if path.stem == out_path.stem:
        raise InputError(
            f"{baseline}: give OUT and --baseline different file names; each run's work_dir is "
            f"./work_dirs/<file name>, and both would be ./work_dirs/{path.stem}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _plugin_options(source: dict, mmseg_version: str | None):
    """(installed tree, options) for plugin mode: the reward classes rewardpatch.plugin registers,
    from list-heads' verdicts on the installed MMSeg's files and, when SRC has custom_imports,
    on the project heads a probe process that imports them finds."""
    from ..head_index import COMPATIBLE, CONDITIONAL
    from ..installed import installed_tree, list_heads_hint, plugin_verdicts

    tree = installed_tree(mmseg_version)
    custom = source.get("custom_imports") or {}
    imports = custom.get("imports", []) if isinstance(custom, dict) else []
    imports = [imports] if isinstance(imports, str) else list(imports)
    own = [name for name in imports if name != "rewardpatch.plugin"]
    if Manifest.load(tree) is not None:
        raise InputError(
            f"the installed MMSegmentation at {tree.root} is patched: give it as --tree instead of --plugin"
        )
    with deferred_warnings() as notices:
        # a head API that apply refuses makes every head incompatible, with that reason (list-heads)
        heads = plugin_verdicts(tree, own, notices)
    command = list_heads_hint(own)
    rewarded = (COMPATIBLE, CONDITIONAL)
    return tree, FinetuneOptions(
        reward_classes={h.reward_name for h in heads if h.status in rewarded}, tree=str(tree.root),
        runner=tree.generation.runner, check_reward_cfg=reward_cfg_checker(tree, plugin=True),
        plugin_imports=imports, plugin_reasons={h.name: h.reason for h in heads if h.status not in rewarded},
        plugin_list_heads=command, conditions=conditions(heads),
    )


def conditions(heads) -> dict:
    """{head: (condition, constructor arguments or None)} of list-heads' verdicts `heads`."""
    return {h.name: (h.condition, h.condition_args) for h in heads if h.condition is not None}


@click.command("config")
@click.argument("src", metavar="SRC")
@click.option("--tree", "tree_path", metavar="TREE", help="The patched MMSeg checkout to train in.")
@click.option(
    "--plugin", is_flag=True,
    help="Instead of --tree: plugin mode on the MMSegmentation this interpreter imports; OUT imports "
    "rewardpatch.plugin (custom_imports, after SRC's own modules).",
)
@click.option("--checkpoint", metavar="CKPT", help="The cross-entropy checkpoint to fine-tune (becomes load_from).")
@click.option(
    "--lr", type=click.FloatRange(min=0, min_open=True), metavar="LR",
    help="Starting LR (default: the LR the source schedule ends with).",
)
@click.option(
    "--iters", type=click.IntRange(min=1), default=DEFAULT_ITERS, show_default=True, metavar="N",
    help="Fine-tune length: train_cfg.max_iters (0.x: runner.max_iters) and the end of the schedule.",
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
@click.option(
    "--baseline", "baseline", metavar="OUT_CE",
    help="Also write OUT_CE (.py): the cross-entropy run continued with OUT's schedule, checkpoint and seed, "
    "each with a work_dir of its own, for an A/B comparison (`rewardpatch plot RUN_A RUN_B`).",
)
@mmseg_version_option
def config_command(
    src: str, tree_path: str | None, plugin: bool, checkpoint: str | None, lr: float | None, iters: int, schedule: str,
    aux: bool, rewards: tuple[str, ...], convert_checkpoint: bool, out: str, baseline: str | None,
    mmseg_version: str | None,
) -> int:
    """Write OUT, a config that fine-tunes SRC's model with reward heads from TREE.

    OUT inherits SRC (`_base_`) and overrides only what changes, listed in its header:
    decode heads X become RewardX with CrossEntropyRewardLoss, the optimiser starts
    from --lr or where SRC's schedule ended and decays over --iters, and CKPT, which
    must load with torch.load(weights_only=True), becomes load_from. With --baseline, OUT_CE
    is the same rewrite with the heads and losses left as they are.
    """
    from ..tree import MMSegTree

    source_path, out_path = Path(src), Path(out)
    if plugin == (tree_path is not None):
        raise click.UsageError(
            "give --tree TREE or --plugin" if not plugin else "give --tree TREE or --plugin, not both"
        )
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
    baseline_path = _check_baseline(baseline, source_path, out_path) if baseline is not None else None

    reward_cfg = parse_reward_options(rewards)
    if plugin:
        source = load_config(source_path, src)
        tree, options = _plugin_options(source, mmseg_version)
    else:
        assert tree_path is not None  # refused above: --tree TREE without --plugin
        tree = MMSegTree.open(tree_path, mmseg_version)
        journal.settled(tree.root, "config")  # an interrupted apply or revert: refused
        manifest = require_patched(tree, f"run `rewardpatch apply {tree_path}` first")
        from ..planning import list_heads

        with deferred_warnings() as notices:
            heads = list_heads(tree, notices)  # the conditions of the patched heads
        options = FinetuneOptions(
            reward_classes=manifest.reward_classes, tree=tree_path, runner=tree.generation.runner,
            check_reward_cfg=reward_cfg_checker(tree), conditions=conditions(heads),
        )
        source = load_config(source_path, src)
    if reward_cfg:
        try:
            options.check_reward_cfg(reward_cfg)
        except (ValueError, TypeError) as exc:
            raise InputError(f"--reward: {exc}") from None
    options = dataclasses.replace(
        options, lr=lr, iters=iters, schedule=schedule, aux=aux, reward_cfg=reward_cfg,
    )
    plan = plan_finetune(source, options)  # every config error surfaces before any checkpoint work
    plans = [(out_path, plan, REWARD_TITLE)]
    if baseline_path is not None:
        plans.append((baseline_path, plan_finetune(source, options, heads=False), BASELINE_TITLE))
    if checkpoint is not None:
        prepared = _prepare_checkpoint(checkpoint, convert_checkpoint, out_path)
        for _, each, _ in plans:
            start_from(each, *prepared)
    seeded = True
    if baseline_path is not None:
        for path, each, _ in plans:
            seeded = same_seed(each, tree.generation.runner)
            own_work_dir(each, path.stem)

    for path, each, title in plans:
        origin = (f"plugin mode on the MMSegmentation {tree.version} installed at {tree.root}" if plugin
                  else f"the patched tree {tree.root}")
        text = render(each, base_reference(source_path, path), source_path.name, origin, title)
        write_verified(path, text, each.target)
    for path, each, title in plans:
        what = "" if each is plan else " (the A/B baseline: heads and losses as in the source)"
        click.echo(f"wrote {path}: {len(each.changes)} changes to {src}{what}")
        for change in each.changes:
            click.echo(f"  {change.line()}")
    if not seeded:
        click.echo(
            "note: MMSeg 0.x's tools/train.py takes the seed on its command line: "
            f"pass the same --seed to both runs (e.g. --seed {AB_SEED})", err=True,
        )
    if plan.target.get("load_from") is None:
        click.echo(
            "note: no --checkpoint and the source sets no load_from: the fine-tune starts from no trained model",
            err=True,
        )
    return 0
