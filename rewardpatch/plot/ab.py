"""`rewardpatch plot RUN_A RUN_B ...`: several runs on one figure, each compared with the first."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import click

from ..errors import EXIT_OK, InputError
from .figures import _figure, _iterations, per_class_figure
from .logs import ScalarLog, _cell, _note, _warn_malformed, find_run_scalars, read_scalar_log, series, write_csv

# A/B differences are rounded (MMSeg logs metrics to 2 decimals; the rest is float noise).
DIFFERENCE_DIGITS = 4


def join_logs(logs: list[ScalarLog]) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """One run's training and validation lines from its folders, oldest first.

    A resumed run starts a new folder at the iteration it resumed from: whatever an older
    folder logged from that step on is replaced by the newer folder's lines.
    """
    training: list[dict[str, float]] = []
    validation: list[dict[str, float]] = []
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
    table: dict[str, float] | None = None
    last: dict[str, float] | None = None
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
    before, after = [table for table in tables if table]  # both, as all() said
    names = [name for name in before if name in after]
    differences = [round(after[name] - before[name], DIFFERENCE_DIGITS) for name in names]
    path = out_dir / "ab_per_class.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class", f"IoU {a.label}", f"IoU {b.label}", f"{b.label} - {a.label}"])
        for name, difference in zip(names, differences):
            writer.writerow([name, _cell(before[name]), _cell(after[name]), _cell(difference)])
    written.append(f"{path}  ({len(names)} classes at each run's last validation)")
    steps = [max(run.miou) for run in (a, b)]
    at = " and ".join(dict.fromkeys(_iterations(step) for step in steps))
    path = out_dir / "ab_per_class.png"
    title = f"Per-class IoU at the last validation (@ {at})\n{b.label} - {a.label}"
    per_class_figure(names, differences, title).savefig(path)
    written.append(f"{path}  ({len(names)} classes)")
    return written


def plot_ab(runs: tuple[Path, ...], baseline: Path | None, out_dir: Path) -> int:
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
