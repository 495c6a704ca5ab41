"""`rewardpatch plot`: CSVs and plots of the scalars an mmengine (MMSeg 1.x) or mmcv (0.x) run logged.

mmengine's LocalVisBackend appends one JSON object per line to
<work_dir>/<timestamp>/vis_data/scalars.json: training lines (lr, loss, decode.loss_*, reward
statistics, time, memory, ... at step = iteration) and validation lines (aAcc, mIoU, mAcc, ... at
step = the iteration after which the model was validated). MMSeg logs its metrics in percent.

mmcv 1.x's TextLoggerHook (MMSeg 0.x) writes <work_dir>/<timestamp>.log.json: a first line of
environment and config, then {"mode": "train", "iter": N, ...} and {"mode": "val", ...} lines.
A val line's "iter" is the length of the validation loader, not the training iteration, and
its metrics are fractions with the per-class "IoU.<class>" beside them: read_mmcv_log puts it
at the iteration of the training line before it (mmcv's EvalHook logs that line first when the
intervals align, as MMSeg's configs have them), in percent, the per-class IoU kept apart.
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
MMCV_LOG_SUFFIX = ".log.json"
SHOWN_LINE_NUMBERS = 10
# A/B differences are rounded (MMSeg logs metrics to 2 decimals; the rest is float noise).
DIFFERENCE_DIGITS = 4


@dataclass
class ScalarLog:
    """The numeric scalars of one scalars.json, split into training and validation lines."""

    source: Path
    training: list[dict[str, float]]
    validation: list[dict[str, float]]
    malformed_lines: list[int]
    per_class_iou: dict[str, float] | None = None  # an mmcv log's last "IoU.<class>", in percent

    @property
    def label(self) -> str:
        """work_dir/timestamp for an mmengine layout, else the file's folder or name."""
        if self.source.name.endswith(MMCV_LOG_SUFFIX):
            return f"{self.source.parent.name}/{self.source.name[: -len(MMCV_LOG_SUFFIX)]}"
        if self.source.parent.name == "vis_data":
            run = self.source.parent.parent
            return f"{run.parent.name}/{run.name}" if RUN_TIMESTAMP.fullmatch(run.name) else run.name
        if self.source.name == "scalars.json":
            return self.source.parent.name
        return self.source.stem


def find_scalars(run: Path) -> Path:
    """RUN itself if it is a file, else the newest <timestamp>/vis_data/scalars.json under it."""
    return find_run_scalars(run)[-1]


def find_run_scalars(run: Path) -> list[Path]:
    """RUN itself if it is a file, else every <timestamp>/vis_data/scalars.json under it, oldest first."""
    if not run.exists():
        raise InputError(f"{run}: no such file or directory")
    if run.is_file():
        return [run]
    candidates = [*run.glob("vis_data/scalars.json"), *run.glob("*/vis_data/scalars.json")]
    if not candidates:  # an mmcv (MMSeg 0.x) work_dir
        candidates = list(run.glob(f"*{MMCV_LOG_SUFFIX}"))
    if not candidates:
        raise InputError(f"no */vis_data/scalars.json (mmengine) or *{MMCV_LOG_SUFFIX} (mmcv) under {run}: "
                         "not a work_dir, or nothing logged yet")
    return sorted(candidates, key=_run_started)


def _run_started(scalars: Path) -> tuple[datetime, str]:
    # mmengine names each run's folder after its start time, mmcv each log file; others fall back to the mtime.
    folder = scalars.parent.parent.name
    if scalars.name.endswith(MMCV_LOG_SUFFIX):
        folder = scalars.name[: -len(MMCV_LOG_SUFFIX)]
    if RUN_TIMESTAMP.fullmatch(folder):
        with_name = datetime.strptime(folder, "%Y%m%d_%H%M%S")
    else:
        with_name = datetime.fromtimestamp(scalars.stat().st_mtime)
    return with_name, str(scalars)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def _json_lines(path: Path, malformed: list[int]):
    """(line number, parsed value) of each non-blank line of `path`; unparsable lines go to `malformed`."""
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except ValueError:
            malformed.append(number)


def _scalar_log(path: Path, training, validation, malformed, per_class_iou=None) -> ScalarLog:
    if not training and not validation:
        extra = f" ({len(malformed)} malformed lines)" if malformed else ""
        raise InputError(f"{path} holds no training or validation scalars{extra}")
    return ScalarLog(path, training, validation, malformed, per_class_iou)


def read_scalar_log(path: Path) -> ScalarLog:
    if path.name.endswith(MMCV_LOG_SUFFIX):
        return read_mmcv_log(path)
    training, validation, malformed = [], [], []
    for number, record in _json_lines(path, malformed):
        if not isinstance(record, dict) or not _is_number(record.get("step")):
            malformed.append(number)
            continue
        scalars = {key: float(value) for key, value in record.items() if _is_number(value)}
        if _is_training(scalars):
            training.append(scalars)
        elif set(scalars) - BOOKKEEPING:
            validation.append(scalars)
    return _scalar_log(path, training, validation, malformed)


# Keys of an mmcv val line that are not metrics.
MMCV_VAL_BOOKKEEPING = frozenset({"iter", "epoch", "lr"})


def read_mmcv_log(path: Path) -> ScalarLog:
    """An mmcv TextLoggerHook log (MMSeg 0.x) as the lines of a scalars.json (module docstring)."""
    training, validation, malformed = [], [], []
    per_class = None
    step = 0.0
    for number, record in _json_lines(path, malformed):
        if not isinstance(record, dict) or record.get("mode") not in ("train", "val"):
            if not (isinstance(record, dict) and "env_info" in record):  # the first line: environment, config
                malformed.append(number)
            continue
        scalars = {key: float(value) for key, value in record.items() if _is_number(value)}
        if record["mode"] == "train":
            if not _is_number(record.get("iter")):
                malformed.append(number)
                continue
            step = scalars["step"] = scalars.pop("iter")
            scalars.pop("epoch", None)
            training.append(scalars)
            continue
        # percent with 2 decimals, as MMSeg 1.x logs them (0.x logs float32 fractions: 0.19790001213550568)
        metrics = {key: round(100 * value, 2) for key, value in scalars.items() if key not in MMCV_VAL_BOOKKEEPING}
        classes = {key[len("IoU."):]: value for key, value in metrics.items() if key.startswith("IoU.")}
        per_class = classes or per_class
        kept = {key: value for key, value in metrics.items() if not key.startswith(("IoU.", "Acc."))}
        if kept:
            validation.append({"step": step, **kept})
    return _scalar_log(path, training, validation, malformed, per_class)


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
    _warn_malformed(log)
    return log


def _warn_malformed(log: ScalarLog) -> None:
    if log.malformed_lines:
        count = len(log.malformed_lines)
        click.echo(
            f"rewardpatch: warning: skipped {count} malformed line{'s' if count != 1 else ''} of {log.source} "
            f"(line {_line_numbers(log.malformed_lines)})",
            err=True,
        )


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


# A/B: several runs on one figure (`plot RUN_A RUN_B ...`).

def join_logs(logs: list[ScalarLog]) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """One run's training and validation lines from its folders, oldest first.

    A resumed run starts a new folder at the iteration it resumed from: whatever an older
    folder logged from that step on is replaced by the newer folder's lines.
    """
    training, validation = [], []
    for log in logs:
        start = min(row["step"] for row in [*log.training, *log.validation])
        training = [row for row in training if row["step"] < start] + log.training
        validation = [row for row in validation if row["step"] < start] + log.validation
    return training, validation


@dataclass
class Run:
    """One run of an A/B plot: its folders joined into one curve, and its per-class IoU where logged."""

    path: Path
    label: str
    logs: list[ScalarLog]
    training: list[dict[str, float]]
    validation: list[dict[str, float]]

    @property
    def miou(self) -> dict[float, float]:
        return dict(zip(*series(self.validation, "mIoU")))


def load_joined_run(run: Path, letter: str) -> Run:
    logs = []
    for path in find_run_scalars(run):
        try:
            logs.append(read_scalar_log(path))
        except InputError as exc:
            _note(f"{exc}: left out of {run}")
    if not logs:
        raise InputError(f"{run}: none of its scalars.json holds training or validation scalars")
    for log in logs:
        _warn_malformed(log)
    training, validation = join_logs(logs)
    name = run.name if run.is_dir() else logs[0].label
    return Run(run, f"{letter}: {name}", logs, training, validation)


# MMSeg's IoUMetric prints the per-class table only to the text log (<timestamp>/<timestamp>.log).
CLASS_TABLE_HEADER = re.compile(r"^\|\s*Class\s*\|\s*IoU\s*\|")
CLASS_TABLE_ROW = re.compile(r"^\|\s*(.+?)\s*\|\s*(nan|-?\d+(?:\.\d+)?)\s*\|")


def last_per_class_iou(log: ScalarLog) -> dict[str, float] | None:
    """The per-class IoU table MMSeg printed last into the text log beside scalars.json, if any;
    an mmcv log's last "IoU.<class>" values."""
    if log.per_class_iou is not None:
        return log.per_class_iou
    if log.source.parent.name != "vis_data":
        return None
    folder = log.source.parent.parent
    text_log = folder / f"{folder.name}.log"
    try:
        lines = text_log.read_bytes().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    table, last = None, None
    for line in lines:
        if CLASS_TABLE_HEADER.match(line):
            table = {}
        elif table is not None:
            row = CLASS_TABLE_ROW.match(line)
            if row:
                table[row.group(1)] = float(row.group(2))
            elif not line.startswith("+"):
                last, table = (table or last), None
    return table or last


def ab_rows(runs: list[Run]) -> tuple[list[str], list[dict]]:
    """step, each run's mIoU, and each later run's difference from the first, at every validation step."""
    first, curves = runs[0], [run.miou for run in runs]
    columns = [f"mIoU {run.label}" for run in runs] + [f"{run.label} - {first.label}" for run in runs[1:]]
    rows = []
    for step in sorted(set().union(*curves)):
        row = {"step": step}
        for run, curve in zip(runs, curves):
            if step in curve:
                row[f"mIoU {run.label}"] = curve[step]
        for run, curve in zip(runs[1:], curves[1:]):
            if step in curve and step in curves[0]:
                row[f"{run.label} - {first.label}"] = round(curve[step] - curves[0][step], DIFFERENCE_DIGITS)
        rows.append(row)
    return columns, rows


def ab_figure(runs: list[Run]):
    """mIoU of every run against iterations, and below it each later run minus the first at common steps."""
    from matplotlib import colormaps

    colors = colormaps["tab10"].colors
    figure, (top, bottom) = _figure(2)
    first = runs[0].miou
    for index, run in enumerate(runs):
        steps, values = series(run.validation, "mIoU")
        joined = f", {len(run.logs)} folders joined" if len(run.logs) > 1 else ""
        top.plot(steps, values, "o-", color=colors[index % len(colors)], markersize=3, linewidth=1.4,
                 label=f"{run.label}: last {values[-1]:.2f}{joined}")
        if index:
            common = sorted(set(first) & set(run.miou))
            bottom.plot(common, [run.miou[s] - first[s] for s in common], "o-", color=colors[index % len(colors)],
                        markersize=3, linewidth=1.4, label=f"{run.label} - {runs[0].label}")
    bottom.axhline(0, color="black", linewidth=0.8)
    top.set(title="Validation mIoU", ylabel="mIoU (%)")
    bottom.set(ylabel="difference (points)")
    top.legend(loc="best", fontsize="small")
    bottom.legend(loc="best", fontsize="small")
    return figure


def per_class_figure(names: list[str], differences: list[float], title: str):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(8, 0.35 * len(names) + 2), 4.5), dpi=150, layout="constrained")
    ax = figure.subplots()
    ax.bar(range(len(names)), differences, color=["tab:green" if d >= 0 else "tab:red" for d in differences])
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize="small")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set(title=title, ylabel="IoU difference (points)")
    return figure


def write_ab_outputs(runs: list[Run], out_dir: Path) -> list[str]:
    """ab_miou.csv, ab_miou.png and, where both logged per-class IoU, ab_per_class.csv/png."""
    columns, rows = ab_rows(runs)
    path = out_dir / "ab_miou.csv"
    write_csv(path, columns, rows)
    common = sum(1 for row in rows if all(column in row for column in columns))
    written = [f"{path}  ({len(rows)} validation steps, {common} common to all runs; step, {', '.join(columns)})"]
    path = out_dir / "ab_miou.png"
    ab_figure(runs).savefig(path)
    written.append(f"{path}  ({' vs '.join(run.label for run in runs)}, and the difference)")
    a, b = runs[0], runs[1]
    tables = [last_per_class_iou(run.logs[-1]) for run in (a, b)]
    if not all(tables):
        missing = ", ".join(str(run.path) for run, table in zip((a, b), tables) if not table)
        _note(f"no per-class IoU table in the text log of {missing}: "
              "ab_per_class.csv and ab_per_class.png not written")
        return written
    names = [name for name in tables[0] if name in tables[1]]
    differences = [round(tables[1][name] - tables[0][name], DIFFERENCE_DIGITS) for name in names]
    path = out_dir / "ab_per_class.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class", f"IoU {a.label}", f"IoU {b.label}", f"{b.label} - {a.label}"])
        for name, difference in zip(names, differences):
            writer.writerow([name, _cell(tables[0][name]), _cell(tables[1][name]), _cell(difference)])
    written.append(f"{path}  ({len(names)} classes at each run's last validation)")
    steps = [max(run.miou) for run in (a, b)]
    at = " and ".join(dict.fromkeys(_iterations(step) for step in steps))
    path = out_dir / "ab_per_class.png"
    title = f"Per-class IoU at the last validation (@ {at})\n{b.label} - {a.label}"
    per_class_figure(names, differences, title).savefig(path)
    written.append(f"{path}  ({len(names)} classes)")
    return written


@click.command("plot")
@click.argument("runs", nargs=-1, required=True, metavar="RUN [RUN_B ...]", type=click.Path(path_type=Path))
@click.option("--baseline", type=click.Path(path_type=Path), help="Another run (e.g. the CE model) to compare mIoU with.")
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
        return _plot_ab(runs, baseline, out_dir)
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


def _plot_ab(runs: tuple[Path, ...], baseline: Path | None, out_dir: Path) -> int:
    if baseline is not None:
        raise InputError("--baseline is for one RUN; with several RUNs each is compared with the first")
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    if len(runs) > len(letters):
        raise InputError(f"plot compares at most {len(letters)} runs")
    joined = [load_joined_run(run, letter) for run, letter in zip(runs, letters)]
    for run in joined:
        if not run.miou:
            raise InputError(f"{run.path}: no mIoU among its validation lines; nothing to compare")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = write_ab_outputs(joined, out_dir)
    for run in joined:
        sources = ", ".join(str(log.source) for log in run.logs)
        click.echo(f"read {run.label}: {len(run.validation)} validation lines from {sources}")
    for line in written:
        click.echo(f"wrote {line}")
    return EXIT_OK
