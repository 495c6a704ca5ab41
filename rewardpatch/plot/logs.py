"""`rewardpatch plot`'s readers: the scalars an mmengine (MMSeg 1.x) or mmcv (0.x) run logged.

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
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import click

from ..errors import InputError

REWARD_STATISTICS = ("reward_mean", "reward_greedy", "adv_std")
LEADING_METRICS = ("aAcc", "mIoU", "mAcc")
# Logged on validation lines as well, but they describe the run's speed, not the model.
BOOKKEEPING = frozenset({"step", "iter", "epoch", "time", "data_time", "memory", "lr", "eta"})
RUN_TIMESTAMP = re.compile(r"\d{8}_\d{6}")
MMCV_LOG_SUFFIX = ".log.json"
SHOWN_LINE_NUMBERS = 10


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
    training: list[dict[str, float]] = []
    validation: list[dict[str, float]] = []
    malformed: list[int] = []
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
    training: list[dict[str, float]] = []
    validation: list[dict[str, float]] = []
    malformed: list[int] = []
    per_class: dict[str, float] | None = None
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
    seen: dict[str, None] = {}  # a set that keeps the order keys came in
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


def series(rows: list[dict[str, float]], key: str) -> tuple[list[float], list[float]]:
    present = [row for row in rows if key in row]
    return [row["step"] for row in present], [row[key] for row in present]


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
