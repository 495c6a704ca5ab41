"""`rewardpatch plot`: the command, and the CSVs and plots of one run."""

from __future__ import annotations

from pathlib import Path

import click

from ..dependencies import require
from ..errors import EXIT_OK, InputError
from .ab import plot_ab
from .figures import miou_figure, panels_figure
from .logs import (
    REWARD_STATISTICS,
    ScalarLog,
    _note,
    load_run,
    loss_columns,
    metric_columns,
    reward_statistic,
    series,
    write_csv,
)

DEFAULT_SMOOTH = 0.6
# Which panel of rewards.png a statistic goes to: rewards share a scale, the advantage spread does not.
REWARD_PANELS = {"reward_mean": "reward", "reward_greedy": "reward", "adv_std": "advantage std"}


def _left_as_it_was(path: Path) -> str:
    return f" (the older {path.name} in {path.parent} is left as it was)" if path.exists() else ""


def write_training_outputs(log: ScalarLog, out_dir: Path, smooth: float) -> list[str]:
    """loss.csv, losses.png and rewards.png, as far as the run logged them; what was written."""
    columns = loss_columns(log.training)
    if not columns:
        _note(f"no training losses in {log.source}: loss.csv, losses.png and rewards.png not written"
              + _left_as_it_was(out_dir / "loss.csv"))
        return []
    path = out_dir / "loss.csv"
    rows = write_csv(path, columns, log.training)
    written = [f"{path}  ({rows} training steps; step, {', '.join(columns)})"]
    losses = [key for key in columns if "loss" in key]
    if losses:
        path = out_dir / "losses.png"
        panels_figure(log, {key: [key] for key in losses}, smooth, "Training losses").savefig(path)
        written.append(f"{path}  ({len(losses)} losses)")
    rewards = [key for key in columns if "loss" not in key]
    if not rewards:
        _note(f"no reward statistics ({', '.join(REWARD_STATISTICS)}) in {log.source}: rewards.png not written")
        return written
    panels: dict[str, list[str]] = {}  # panel title -> its keys
    for key in rewards:
        statistic = reward_statistic(key)
        assert statistic is not None  # loss_columns: a key without "loss" is a reward statistic
        panels.setdefault(REWARD_PANELS[statistic], []).append(key)
    path = out_dir / "rewards.png"
    panels_figure(log, panels, smooth, "Reward statistics").savefig(path)
    written.append(f"{path}  ({', '.join(rewards)})")
    return written


def write_validation_outputs(log: ScalarLog, base: ScalarLog | None, out_dir: Path, smooth: float) -> list[str]:
    """metrics.csv and miou.png, as far as the run validated; what was written."""
    metrics = metric_columns(log.validation)
    if not metrics:
        _note(f"no validation metrics in {log.source}: metrics.csv and miou.png not written"
              + _left_as_it_was(out_dir / "metrics.csv"))
        return []
    path = out_dir / "metrics.csv"
    rows = write_csv(path, metrics, log.validation)
    written = [f"{path}  ({rows} validations; step, {', '.join(metrics)})"]
    if "mIoU" not in metrics:
        _note(f"no mIoU among the validation metrics of {log.source}: miou.png not written")
        return written
    if base is not None and not series(base.validation, "mIoU")[1]:
        _note(f"the baseline {base.source} logged no mIoU: miou.png shows the run alone")
        base = None
    path = out_dir / "miou.png"
    miou_figure(log, base, smooth).savefig(path)
    points = len(series(log.validation, "mIoU")[1])
    written.append(f"{path}  (mIoU at {points} validations" + (f", baseline {base.label})" if base else ")"))
    return written


@click.command("plot")
@click.argument("runs", nargs=-1, required=True, metavar="RUN [RUN_B ...]", type=click.Path(path_type=Path))
@click.option(
    "--baseline", type=click.Path(path_type=Path), help="Another run (e.g. the CE model) to compare mIoU with."
)
@click.option(
    "--smooth", type=click.FloatRange(0, 1, max_open=True), default=DEFAULT_SMOOTH, show_default=True,
    help="Weight of TensorBoard's exponential moving average (0: no smoothing).",
)
@click.option(
    "--output", "-o", "out_dir", type=click.Path(path_type=Path), required=True, metavar="OUT_DIR",
    help="Folder for the CSVs and PNGs (created if missing).",
)
def plot_command(runs: tuple[Path, ...], baseline: Path | None, smooth: float, out_dir: Path) -> int:
    """Write CSVs and plots of the losses, rewards and validation metrics of RUN.

    RUN is an mmengine work_dir (its newest <timestamp>/vis_data/scalars.json is read) or a
    scalars.json. Writes loss.csv, metrics.csv, miou.png, losses.png and rewards.png into OUT_DIR.

    With two or more RUNs (an A/B comparison), each work_dir's timestamp folders are joined
    into one run (a resumed run), and OUT_DIR gets ab_miou.csv and ab_miou.png: every run's
    validation mIoU and each run minus the first; with per-class IoU in both text logs,
    ab_per_class.csv and ab_per_class.png (RUN_B - RUN at the last validation).
    """
    require("matplotlib", "matplotlib")
    if len(runs) > 1:
        return plot_ab(runs, baseline, out_dir)
    (run,) = runs
    log = load_run(run)
    base = load_run(baseline) if baseline is not None else None
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = write_training_outputs(log, out_dir, smooth) + write_validation_outputs(log, base, out_dir, smooth)
    click.echo(f"read {len(log.training)} training and {len(log.validation)} validation lines of {log.source}")
    for line in written:
        click.echo(f"wrote {line}")
    return EXIT_OK
