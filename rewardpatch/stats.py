"""`rewardpatch stats`: pixels per class over a folder of label maps, and class weights from them.

Label maps are read the way MMSeg's LoadAnnotations reads them (Pillow, unchanged): a palette
PNG gives its indices, a 16-bit PNG its 16-bit values. Counts are exact integers.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import click

from .dependencies import require
from .errors import EXIT_OK, InputError

# 1 / (count + S * labelled) with S = 0.02 keeps a class with no pixels finite and bounds the
# largest-to-smallest weight ratio by (1 + S) / S = 51; S = 0 is plain inverse frequency.
DEFAULT_SMOOTH = 0.02
# A file costs a few milliseconds; chunks of files amortise the round trip to a worker.
MAX_FILES_PER_TASK = 16
EIGHT_BIT_MODES = ("L", "P")


@dataclass
class ClassCounts:
    """Pixels per class over a set of label maps, and the pixels that belong to no class."""

    num_classes: int
    ignore_index: int
    counts: list[int]
    ignored: int
    out_of_range: dict[int, int]
    out_of_range_files: int
    num_files: int

    @property
    def labelled(self) -> int:
        return sum(self.counts)

    @property
    def out_of_range_pixels(self) -> int:
        return sum(self.out_of_range.values())

    @property
    def frequencies(self) -> list[float]:
        labelled = self.labelled
        return [count / labelled for count in self.counts]

    @property
    def labelled_fraction(self) -> float:
        """Labelled pixels over all pixels of the label maps."""
        return self.labelled / max(1, self.labelled + self.ignored + self.out_of_range_pixels)


# Below this labelled fraction the labels are sparse (a pixel budget, pseudo-labels kept
# above a threshold): a loss averaged over every pixel then takes steps that much smaller.
SPARSE_LABELS = 0.5


def sparse_labels_note(totals: ClassCounts) -> str:
    return (
        f"sparse labels: {totals.labelled_fraction:.1%} of the pixels are labelled; set avg_non_ignore=True on "
        f"the loss (MMSeg >= 0.23) so that cross-entropy and the reward average over the labelled pixels, not all "
        f"of them ({1 / max(totals.labelled_fraction, 1e-9):.0f}x larger steps); `rewardpatch config` carries it "
        f"over to CrossEntropyRewardLoss"
    )


def find_label_maps(ann_dir: Path, suffix: str) -> list[Path]:
    """Every file under ann_dir whose name ends with suffix, following symlinked folders once."""
    if not ann_dir.exists():
        raise InputError(f"{ann_dir}: no such directory")
    if not ann_dir.is_dir():
        raise InputError(f"{ann_dir}: not a directory")
    found: list[Path] = []
    visited: set[str] = set()
    for folder, subfolders, files in os.walk(ann_dir, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:
            subfolders.clear()
            continue
        visited.add(real)
        found.extend(Path(folder, name) for name in files if name.endswith(suffix))
    if not found:
        raise InputError(f"no label maps under {ann_dir}: no file name ends with '{suffix}' (see --suffix)")
    return sorted(found)


def count_values(path: Path | str) -> dict[int, int]:
    """Pixels per stored value of one label map (values with no pixel left out)."""
    image_module = require("PIL.Image", "pillow")
    try:
        with image_module.open(path) as image:
            image.load()
            return _values_of(image, path)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow reports a damaged file with many exception types
        raise InputError(f"cannot read label map {path}: {exc or type(exc).__name__}") from None


def _values_of(image, path) -> dict[int, int]:
    bands = len(image.getbands())
    if bands != 1:
        raise InputError(
            f"{path} has {bands} channels (mode {image.mode}), a label map has one: "
            "select the label maps with --suffix"
        )
    if image.mode in EIGHT_BIT_MODES:
        # Pillow's histogram of an 8-bit image is exact, and faster than copying it to numpy.
        return _nonzero(enumerate(image.histogram()))
    if image.mode == "1":
        histogram = image.histogram()
        return _nonzero([(0, histogram[0]), (1, histogram[255])])
    if image.mode.startswith("I"):
        return _values_of_array(image)
    raise InputError(f"{path} holds {image.mode} pixels, not integer class indices")


def _values_of_array(image) -> dict[int, int]:
    numpy = require("numpy", "numpy")
    values = numpy.asarray(image).ravel()
    if values.size == 0:
        return {}
    if values.min() >= 0 and values.max() < 1 << 16:
        counts = numpy.bincount(values)
        present = numpy.flatnonzero(counts)
        return dict(zip(present.tolist(), counts[present].tolist()))
    present, counts = numpy.unique(values, return_counts=True)
    return dict(zip(present.tolist(), counts.tolist()))


def _nonzero(pairs: Iterable[tuple[int, int]]) -> dict[int, int]:
    return {value: count for value, count in pairs if count}


def reduce_zero_label(values: dict[int, int]) -> dict[int, int]:
    """Shift stored values as MMSeg's reduce_zero_label does: 0 -> 255, v -> v - 1, 255 stays 255."""
    shifted: Counter[int] = Counter()
    for value, count in values.items():
        new = (255 if value == 0 else value) - 1
        shifted[255 if new == 254 else new] += count
    return dict(shifted)


def map_files(function: Callable, paths: list[Path], workers: int) -> Iterator:
    """function(path) for every path, in order, in `workers` processes (1: this process)."""
    workers = min(workers, len(paths))
    if workers <= 1:
        yield from map(function, paths)
        return
    per_task = max(1, min(MAX_FILES_PER_TASK, len(paths) // (workers * 4)))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(function, paths, chunksize=per_task)


def tally(
    per_file: Iterable[dict[int, int]], num_classes: int, ignore_index: int, zero_label_reduced: bool = False
) -> ClassCounts:
    """Sum the per-file value counts into pixels per class, ignored and out-of-range pixels."""
    counts = [0] * num_classes
    ignored, num_files, out_of_range_files = 0, 0, 0
    out_of_range: Counter[int] = Counter()
    for values in per_file:
        num_files += 1
        if zero_label_reduced:
            values = reduce_zero_label(values)
        stray = False
        for value, count in values.items():
            if value == ignore_index:
                ignored += count
            elif 0 <= value < num_classes:
                counts[value] += count
            else:
                out_of_range[value] += count
                stray = True
        out_of_range_files += stray
    return ClassCounts(
        num_classes, ignore_index, counts, ignored, dict(sorted(out_of_range.items())), out_of_range_files, num_files
    )


def class_weights(counts: list[int], smooth: float) -> list[float]:
    """w_c = 1 / (count_c + smooth * labelled), scaled so that the weights sum to the number of classes."""
    labelled = sum(counts)
    inverse = [1.0 / (count + smooth * labelled) for count in counts]
    scale = len(counts) / sum(inverse)
    return [scale * weight for weight in inverse]


def weight_literal(weight: float) -> str:
    """4 decimals, as MMSeg's configs write class weights; 4 significant digits below 0.001."""
    return repr(round(weight, 4)) if weight >= 0.001 else f"{weight:.4g}"


def class_name(index: int, names: list[str] | None) -> str:
    return f"class {index} ({names[index]})" if names else f"class {index}"


def read_names(path: Path | None, num_classes: int) -> list[str] | None:
    if path is None:
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read class names from {path}: {exc}") from None
    names = [line.strip() for line in lines if line.strip()]
    if len(names) != num_classes:
        raise InputError(f"{path} has {len(names)} class names but --num-classes is {num_classes}")
    return names


def refuse_undefined_weights(totals: ClassCounts, smooth: float, names: list[str] | None) -> None:
    if totals.labelled == 0:
        raise InputError(
            f"no labelled pixels in {totals.num_files} label maps: every pixel is the ignore index "
            f"{totals.ignore_index} or outside 0..{totals.num_classes - 1} (check --num-classes and --ignore-index)"
        )
    if smooth == 0:
        empty = [i for i, count in enumerate(totals.counts) if count == 0]
        if empty:
            raise InputError(
                f"{class_name(empty[0], names)} has no pixels, so with --smooth 0 its weight is infinite: "
                f"pass --smooth > 0 (default {DEFAULT_SMOOTH})"
            )


def out_of_range_warning(totals: ClassCounts) -> str:
    values = list(totals.out_of_range)
    shown = ", ".join(str(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")
    return (
        f"rewardpatch: warning: {totals.out_of_range_pixels:,} pixels in {totals.out_of_range_files} of "
        f"{totals.num_files} label maps hold values outside 0..{totals.num_classes - 1} that are not the "
        f"ignore index {totals.ignore_index} (values {shown}); they are left out of frequencies and weights"
    )


def render_table(totals: ClassCounts, weights: list[float], names: list[str] | None) -> list[str]:
    name_width = max((len(n) for n in names), default=0) + 2 if names else 0
    count_width = max(len("pixels"), *(len(f"{c:,}") for c in totals.counts))
    header = f"{'class':>5}  {'name':<{name_width}}" if names else f"{'class':>5}  "
    lines = [f"{header}{'pixels':>{count_width}}  {'frequency':>10}  {'weight':>8}"]
    for index, (count, frequency, weight) in enumerate(zip(totals.counts, totals.frequencies, weights)):
        name = f"{names[index]:<{name_width}}" if names else ""
        lines.append(f"{index:>5}  {name}{count:>{count_width},}  {frequency:>10.4%}  {weight:>8.4f}")
    return lines


def report_json(
    totals: ClassCounts, weights: list[float], smooth: float, names: list[str] | None, zero_label_reduced: bool
) -> dict:
    return {
        "num_classes": totals.num_classes,
        "ignore_index": totals.ignore_index,
        "reduce_zero_label": zero_label_reduced,
        "smooth": smooth,
        "names": names,
        "num_files": totals.num_files,
        "labelled_pixels": totals.labelled,
        "labelled_fraction": totals.labelled_fraction,
        "ignored_pixels": totals.ignored,
        "out_of_range_pixels": totals.out_of_range_pixels,
        "out_of_range_files": totals.out_of_range_files,
        "out_of_range_values": {str(value): count for value, count in totals.out_of_range.items()},
        "counts": totals.counts,
        "frequencies": totals.frequencies,
        "weights": weights,
        "class_weight": [float(weight_literal(w)) for w in weights],
    }


def _progress(total: int):
    # The bar is for people watching a terminal; in a pipe or a log it is only noise.
    if not sys.stderr.isatty():
        return contextlib.nullcontext(None)
    return click.progressbar(length=total, label="counting pixels", file=sys.stderr, show_pos=True)


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@click.command("stats")
@click.argument("ann_dir", type=click.Path(path_type=Path))
@click.option("--num-classes", "-n", type=click.IntRange(min=1), required=True, help="Number of classes N.")
@click.option(
    "--ignore-index", type=int, default=255, show_default=True, help="Label value that marks unlabelled pixels."
)
@click.option(
    "--smooth", type=click.FloatRange(min=0), default=DEFAULT_SMOOTH, show_default=True,
    help="S in w_c: keeps a class without pixels finite and the largest/smallest weight ratio below "
    "(1 + S) / S. 0 gives plain inverse frequency, refused when a class has no pixels.",
)
@click.option("--suffix", default=".png", show_default=True, help="Count the files whose name ends with this.")
@click.option(
    "--reduce-zero-label", is_flag=True,
    help="Shift labels as MMSeg's reduce_zero_label does (0 -> ignored, v -> v - 1), e.g. for ADE20K.",
)
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None, help="Worker processes [default: CPUs].")
@click.option(
    "--names", "names_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Text file with one class name per line.",
)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Also write a JSON report here.")
def stats_command(
    ann_dir: Path, num_classes: int, ignore_index: int, smooth: float, suffix: str, reduce_zero_label: bool,
    workers: int | None, names_file: Path | None, output: Path | None,
) -> int:
    """Count pixels per class over the label maps under ANN_DIR and derive class weights.

    \b
    w_c = 1 / (count_c + S * labelled), scaled so the N weights sum to N;
    labelled = pixels with a value in 0..N-1. Other values than the ignore
    index are reported as out of range, and left out.
    """
    require("PIL.Image", "pillow")
    names = read_names(names_file, num_classes)
    paths = find_label_maps(ann_dir, suffix)
    with _progress(len(paths)) as bar:
        per_file = map_files(count_values, paths, workers or default_workers())
        if bar is not None:
            per_file = _advancing(per_file, bar)
        totals = tally(per_file, num_classes, ignore_index, reduce_zero_label)
    refuse_undefined_weights(totals, smooth, names)
    weights = class_weights(totals.counts, smooth)
    if totals.out_of_range:
        click.echo(out_of_range_warning(totals), err=True)

    click.echo(
        f"{totals.num_files} label maps under {ann_dir}: {totals.labelled:,} labelled pixels, "
        f"{totals.ignored:,} ignored (value {ignore_index}), {totals.out_of_range_pixels:,} out of range"
    )
    if totals.labelled_fraction < SPARSE_LABELS:
        click.echo(sparse_labels_note(totals))
    click.echo(f"weights: 1 / (count + {smooth:g} * labelled), scaled to sum to {num_classes}")
    click.echo()
    for line in render_table(totals, weights, names):
        click.echo(line)
    click.echo()
    click.echo(f"class_weight=[{', '.join(weight_literal(w) for w in weights)}]")
    if output is not None:
        report = report_json(totals, weights, smooth, names, reduce_zero_label)
        try:
            output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot write {output}: {exc.strerror or exc}") from None
        click.echo(f"wrote {output}")
    return EXIT_OK


def _advancing(items: Iterable, bar) -> Iterator:
    for item in items:
        bar.update(1)
        yield item
