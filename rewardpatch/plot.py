"""`rewardpatch plot`: CSVs and plots of the scalars an mmengine run logged.

mmengine's LocalVisBackend appends one JSON object per line to
<work_dir>/<timestamp>/vis_data/scalars.json: training lines (lr, loss, decode.loss_*, reward
statistics, time, memory, ... at step = iteration) and validation lines (aAcc, mIoU, mAcc, ... at
step = the iteration after which the model was validated). MMSeg logs its metrics in percent.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import click

from .errors import EXIT_OK, InputError
from .optional import require

DEFAULT_SMOOTH = 0.6
REWARD_STATISTICS = ("reward_mean", "reward_greedy", "adv_std")
# Which panel of rewards.png a statistic goes to: rewards share a scale, the advantage spread does not.
REWARD_PANELS = {"reward_mean": "reward", "reward_greedy": "reward", "adv_std": "advantage std"}
LEADING_METRICS = ("aAcc", "mIoU", "mAcc")
# Logged on validation lines as well, but they describe the run's speed, not the model.
BOOKKEEPING = frozenset({"step", "iter", "epoch", "time", "data_time", "memory", "lr", "eta"})
RUN_TIMESTAMP = re.compile(r"\d{8}_\d{6}")
SHOWN_LINE_NUMBERS = 10


@dataclass
class ScalarLog:
    """The numeric scalars of one scalars.json, split into training and validation lines."""

    source: Path
    training: list[dict[str, float]]
    validation: list[dict[str, float]]
    malformed_lines: list[int]

    @property
    def label(self) -> str:
        """work_dir/timestamp for an mmengine layout, else the file's folder or name."""
        if self.source.parent.name == "vis_data":
            run = self.source.parent.parent
            return f"{run.parent.name}/{run.name}" if RUN_TIMESTAMP.fullmatch(run.name) else run.name
        if self.source.name == "scalars.json":
            return self.source.parent.name
        return self.source.stem


def find_scalars(run: Path) -> Path:
    """RUN itself if it is a file, else the newest <timestamp>/vis_data/scalars.json under it."""
    if not run.exists():
        raise InputError(f"{run}: no such file or directory")
    if run.is_file():
        return run
    candidates = [*run.glob("vis_data/scalars.json"), *run.glob("*/vis_data/scalars.json")]
    if not candidates:
        raise InputError(f"no */vis_data/scalars.json under {run}: not an mmengine work_dir, or nothing logged yet")
    return max(candidates, key=_run_started)


def _run_started(scalars: Path) -> tuple[datetime, str]:
    # mmengine names each run's folder after its start time; other folders fall back to the file's mtime.
    folder = scalars.parent.parent.name
    if RUN_TIMESTAMP.fullmatch(folder):
        with_name = datetime.strptime(folder, "%Y%m%d_%H%M%S")
    else:
        with_name = datetime.fromtimestamp(scalars.stat().st_mtime)
    return with_name, str(scalars)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_scalar_log(path: Path) -> ScalarLog:
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    training, validation, malformed = [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            malformed.append(number)
            continue
        if not isinstance(record, dict) or not _is_number(record.get("step")):
            malformed.append(number)
            continue
        scalars = {key: float(value) for key, value in record.items() if _is_number(value)}
        if _is_training(scalars):
            training.append(scalars)
        elif set(scalars) - BOOKKEEPING:
            validation.append(scalars)
    if not training and not validation:
        extra = f" ({len(malformed)} malformed lines)" if malformed else ""
        raise InputError(f"{path} holds no training or validation scalars{extra}")
    return ScalarLog(path, training, validation, malformed)


def _is_training(scalars: dict[str, float]) -> bool:
    return "lr" in scalars or any("loss" in key for key in scalars)


def reward_statistic(key: str) -> str | None:
    """The reward statistic a key logs (decode.reward_mean -> reward_mean), if any."""
    leaf = key.rsplit(".", 1)[-1]
    return next((name for name in REWARD_STATISTICS if leaf.startswith(name) or key.endswith(name)), None)


def _keys_in_order(rows: list[dict[str, float]], wanted) -> list[str]:
    seen = {}
    for row in rows:
        for key in row:
            if key not in seen and wanted(key):
                seen[key] = None
    return list(seen)


def loss_columns(training: list[dict[str, float]]) -> list[str]:
    """Every loss and reward statistic logged, the total loss first."""
    columns = _keys_in_order(training, lambda key: "loss" in key or reward_statistic(key) is not None)
    return sorted(columns, key=lambda key: key != "loss")


def metric_columns(validation: list[dict[str, float]]) -> list[str]:
    """aAcc, mIoU, mAcc where logged, then every other validation metric in the order logged."""
    logged = _keys_in_order(validation, lambda key: key not in BOOKKEEPING)
    return [m for m in LEADING_METRICS if m in logged] + [k for k in logged if k not in LEADING_METRICS]


def _cell(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def write_csv(path: Path, columns: list[str], rows: list[dict[str, float]]) -> int:
    """Write step plus columns, an empty cell where a row lacks a key; returns the rows written."""
    kept = [row for row in rows if any(key in row for key in columns)]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", *columns])
        for row in kept:
            writer.writerow([_cell(row["step"]), *(_cell(row.get(key)) for key in columns)])
    return len(kept)


def tensorboard_smoothing(values: list[float], weight: float) -> list[float]:
    """TensorBoard's debiased exponential moving average; non-finite values pass through."""
    smoothed, last, seen = [], 0.0, 0
    for value in values:
        if not math.isfinite(value):
            smoothed.append(value)
            continue
        last = last * weight + (1 - weight) * value
        seen += 1
        smoothed.append(last / (1 - weight**seen))
    return smoothed


def linear_trend(steps: list[float], values: list[float]) -> tuple[float, float] | None:
    """Least-squares (slope, intercept) of values over steps; None below two distinct steps."""
    points = [(x, y) for x, y in zip(steps, values) if math.isfinite(y)]
    if len({x for x, _ in points}) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)
    return slope, mean_y - slope * mean_x


def series(rows: list[dict[str, float]], key: str) -> tuple[list[float], list[float]]:
    present = [row for row in rows if key in row]
    return [row["step"] for row in present], [row[key] for row in present]


def _iterations(value: float, _position=None) -> str:
    return f"{value / 1000:g}k" if abs(value) >= 1000 else f"{value:g}"


def _figure(panels: int = 1):
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    figure = Figure(figsize=(9, 2.6 + 2.2 * panels if panels > 1 else 5), dpi=150, layout="constrained")
    axes = figure.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_formatter(FuncFormatter(_iterations))
    axes[-1].set_xlabel("iteration")
    return figure, axes


def _raw_and_smoothed(ax, steps, values, weight: float, label: str, color: str) -> None:
    ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
    ax.plot(steps, tensorboard_smoothing(values, weight), color=color, linewidth=1.6, label=label)


def miou_figure(run: ScalarLog, baseline: ScalarLog | None, weight: float):
    """Validation mIoU: raw, smoothed, its linear trend, and the baseline's mIoU if given."""
    figure, (ax,) = _figure()
    steps, values = series(run.validation, "mIoU")
    best = max(range(len(values)), key=values.__getitem__)
    ax.plot(steps, values, "o", color="tab:blue", alpha=0.45, markersize=4,
            label=f"{run.label}: last {values[-1]:.2f}, best {values[best]:.2f} @ {_iterations(steps[best])}")
    ax.plot(steps, tensorboard_smoothing(values, weight), color="tab:blue", linewidth=2,
            label=f"smoothed (EMA {weight:g})")
    trend = linear_trend(steps, values)
    if trend is not None:
        slope, intercept = trend
        ends = [min(steps), max(steps)]
        ax.plot(ends, [slope * x + intercept for x in ends], "--", color="tab:orange", linewidth=1.4,
                label=f"linear trend: {slope * 1000:+.3f} points / 1k iterations")
    if baseline is not None:
        base_steps, base_values = series(baseline.validation, "mIoU")
        if len(base_values) > 1:
            ax.plot(base_steps, base_values, "s-", color="tab:gray", alpha=0.6, markersize=3, linewidth=1,
                    label=f"baseline {baseline.label}")
        reference = "baseline final" if len(base_values) > 1 else f"baseline {baseline.label}"
        ax.axhline(base_values[-1], color="tab:gray", linestyle=":", linewidth=1.6,
                   label=f"{reference}: {base_values[-1]:.2f}")
    ax.set(title=f"Validation mIoU: {run.label}", ylabel="mIoU (%)")
    ax.legend(loc="best", fontsize="small")
    return figure


def panels_figure(run: ScalarLog, panels: dict[str, list[str]], weight: float, title: str):
    """One panel per entry of panels (y label -> keys), each key raw and smoothed."""
    from matplotlib import colormaps

    colors = colormaps["tab10"].colors
    figure, axes = _figure(len(panels))
    for ax, (ylabel, keys) in zip(axes, panels.items()):
        for index, key in enumerate(keys):
            steps, values = series(run.training, key)
            _raw_and_smoothed(ax, steps, values, weight, key, colors[index % len(colors)])
        ax.set_ylabel(ylabel)
        ax.legend(loc="best", fontsize="small")
    axes[0].set_title(f"{title}: {run.label} (faint: raw, solid: EMA {weight:g})")
    return figure


def _line_numbers(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:SHOWN_LINE_NUMBERS]))
    return shown + (f" and {len(numbers) - SHOWN_LINE_NUMBERS} more" if len(numbers) > SHOWN_LINE_NUMBERS else "")


def load_run(run: Path) -> ScalarLog:
    log = read_scalar_log(find_scalars(run))
    if log.malformed_lines:
        count = len(log.malformed_lines)
        click.echo(
            f"rewardpatch: warning: skipped {count} malformed line{'s' if count != 1 else ''} of {log.source} "
            f"(line {_line_numbers(log.malformed_lines)})",
            err=True,
        )
    return log


def _note(message: str) -> None:
    click.echo(f"rewardpatch: note: {message}", err=True)


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
    panels = {}
    for key in rewards:
        panels.setdefault(REWARD_PANELS[reward_statistic(key)], []).append(key)
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
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--baseline", type=click.Path(path_type=Path), help="Another run (e.g. the CE model) to compare mIoU with.")
@click.option(
    "--smooth", type=click.FloatRange(0, 1, max_open=True), default=DEFAULT_SMOOTH, show_default=True,
    help="Weight of TensorBoard's exponential moving average (0: no smoothing).",
)
@click.option(
    "--output", "-o", "out_dir", type=click.Path(path_type=Path), required=True, metavar="OUT_DIR",
    help="Folder for the CSVs and PNGs (created if missing).",
)
def plot_command(run: Path, baseline: Path | None, smooth: float, out_dir: Path) -> int:
    """Write CSVs and plots of the losses, rewards and validation metrics of RUN.

    RUN is an mmengine work_dir (its newest <timestamp>/vis_data/scalars.json is read) or a
    scalars.json. Writes loss.csv, metrics.csv, miou.png, losses.png and rewards.png into OUT_DIR.
    """
    require("matplotlib", "matplotlib")
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
