"""`rewardpatch config`: the command, composing the steps of the rewrite."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import click

from .. import journal
from ..errors import InputError, StateError
from ..options import mmseg_version_option
from .heads import reward_heads
from .plan import DEFAULT_ITERS, FinetuneOptions, FinetunePlan, start_from
from .render import base_reference, load_config, render, write_verified
from .reward_cfg import parse_reward_options, reward_cfg_checker
from .schedule import SCHEDULES, reward_schedule


def plan_finetune(source: dict, options: FinetuneOptions) -> FinetunePlan:
    """The rewrite of a loaded source config (a plain dict) but for the checkpoint (`start_from`)."""
    plan = FinetunePlan(source=source, target=copy.deepcopy(source))
    reward_heads(plan, options)
    reward_schedule(plan, options)
    start_from(plan, None)
    return plan


def _prepare_checkpoint(checkpoint: str, convert: bool, out: Path) -> tuple[str, str | None]:
    """The checkpoint path to load from, after the weights-only check (and conversion)."""
    from ..checkpoints import check_weights_only, convert_to_weights_only, weights_only_copy_path

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
@mmseg_version_option
def config_command(
    src: str, tree_path: str, checkpoint: str | None, lr: float | None, iters: int, schedule: str,
    aux: bool, rewards: tuple[str, ...], convert_checkpoint: bool, out: str, mmseg_version: str | None,
) -> int:
    """Write OUT, a config that fine-tunes SRC's model with reward heads from TREE.

    OUT inherits SRC (`_base_`) and overrides only what changes, listed in its header:
    decode heads X become RewardX with CrossEntropyRewardLoss, the optimiser starts
    from --lr or where SRC's schedule ended and decays over --iters, and CKPT, which
    must load with torch.load(weights_only=True), becomes load_from.
    """
    from ..manifest import Manifest
    from ..tree import MMSegTree

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

    tree = MMSegTree.open(tree_path, mmseg_version)
    journal.settle(tree.root)  # an interrupted apply or revert is rolled back first
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
        reward_classes=manifest.reward_classes, tree=tree_path, runner=tree.generation.runner, lr=lr, iters=iters,
        schedule=schedule, aux=aux, reward_cfg=reward_cfg, check_reward_cfg=check_reward_cfg,
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
