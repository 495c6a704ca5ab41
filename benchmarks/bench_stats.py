"""How much `rewardpatch stats` costs on top of decoding the label maps it counts.

Generates Cityscapes-sized label maps (1024 x 2048, 19 classes, 255 for unlabelled pixels) once
into a cache folder outside the repository, then times, median of --repeats runs each:

  decode alone   list the PNGs, open and decode each with Pillow (what any reader must pay)
  stats          the whole `rewardpatch stats` command, in this process, output discarded

with the same worker count for both (1 and 2 by default). Target: stats <= 1.3 x decode alone.
Both run in this process, so neither pays interpreter start-up. Prints a table and writes
benchmarks/results/stats.json; exits 1 if a target is missed.

    .venv/bin/python benchmarks/bench_stats.py [--files 200] [--repeats 3] [--workers 1,2] [--cache DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from machine import describe, one_line  # noqa: E402

from rewardpatch.cli import main as rewardpatch_main  # noqa: E402
from rewardpatch.stats import find_label_maps, map_files  # noqa: E402

HEIGHT, WIDTH = 1024, 2048
NUM_CLASSES, IGNORE_INDEX = 19, 255
TARGET_RATIO = 1.3
GENERATOR_VERSION = 1
# Cityscapes train ids: road, sidewalk, building, wall, fence, pole, traffic light, traffic sign,
# vegetation, terrain, sky, person, rider, car, truck, bus, train, motorcycle, bicycle.
ROAD, SIDEWALK, BUILDING, VEGETATION, TERRAIN, SKY, CAR = 0, 1, 2, 8, 9, 10, 13
OBJECT_CLASSES = np.array([3, 4, 5, 6, 7, 11, 12, 13, 13, 13, 14, 15, 16, 17, 18])


def _wavy_boundary(rng, mean: float, spread: float) -> np.ndarray:
    """A row index per column that wanders smoothly, like a skyline or a kerb."""
    steps = rng.normal(0, spread / 40, WIDTH).cumsum()
    smooth = np.convolve(steps - steps.mean(), np.ones(64) / 64, mode="same")
    return np.clip(mean + smooth, 0, HEIGHT)


def street_scene(seed: int) -> np.ndarray:
    """A label map shaped like a street scene: layered background, objects, unlabelled areas."""
    rng = np.random.default_rng(seed)
    rows = np.arange(HEIGHT)[:, None]
    labels = np.full((HEIGHT, WIDTH), ROAD, np.uint8)
    horizon = rng.uniform(380, 520)
    labels[rows < _wavy_boundary(rng, horizon + 60, 80)] = SIDEWALK
    labels[rows < _wavy_boundary(rng, horizon, 120)] = rng.choice([BUILDING, VEGETATION, TERRAIN])
    labels[rows < _wavy_boundary(rng, horizon - 60, 200)] = BUILDING
    labels[rows < _wavy_boundary(rng, horizon - 250, 150)] = SKY
    for _ in range(rng.integers(40, 100)):
        _paint_object(rng, labels, horizon)
    _paint_unlabelled(rng, labels)
    return labels


def _paint_object(rng, labels: np.ndarray, horizon: float) -> None:
    # Objects further down the image are nearer, hence larger: an ellipse or a pole-like bar.
    centre_y = rng.uniform(horizon - 100, HEIGHT - 150)
    size = 8 + 0.4 * max(centre_y - horizon + 120, 0) * rng.uniform(0.2, 1.0)
    half_h, half_w = size * rng.uniform(0.4, 1.0), size * rng.uniform(0.5, 1.8)
    if rng.random() < 0.3:
        half_h, half_w = size * 1.5, rng.uniform(3, 9)
    centre_x = rng.uniform(0, WIDTH)
    top, bottom = int(max(centre_y - half_h, 0)), int(min(centre_y + half_h, HEIGHT))
    left, right = int(max(centre_x - half_w, 0)), int(min(centre_x + half_w, WIDTH))
    if bottom <= top or right <= left:
        return
    y = (np.arange(top, bottom)[:, None] - centre_y) / half_h
    x = (np.arange(left, right)[None, :] - centre_x) / half_w
    labels[top:bottom, left:right][y**2 + x**2 <= 1] = rng.choice(OBJECT_CLASSES)


def _paint_unlabelled(rng, labels: np.ndarray) -> None:
    # Like Cityscapes: the ego vehicle's bonnet, a frame, and a few unlabelled patches.
    bonnet = HEIGHT - rng.uniform(80, 140) + 60 * (np.linspace(-1, 1, WIDTH) ** 2)
    labels[np.arange(HEIGHT)[:, None] > bonnet[None, :]] = IGNORE_INDEX
    labels[:, :4] = labels[:, -4:] = IGNORE_INDEX
    for _ in range(rng.integers(2, 8)):
        top, left = rng.integers(0, HEIGHT - 40), rng.integers(0, WIDTH - 40)
        labels[top:top + rng.integers(10, 80), left:left + rng.integers(10, 120)] = IGNORE_INDEX


def _write_map(args: tuple[int, str]) -> int:
    seed, path = args
    Image.fromarray(street_scene(seed)).save(path)
    return Path(path).stat().st_size


def label_maps(cache: Path, files: int, workers: int) -> Path:
    """The folder of generated maps, made once; a marker file says it is complete."""
    folder = cache / f"v{GENERATOR_VERSION}-{files}x{HEIGHT}x{WIDTH}"
    marker = folder / "complete"
    if marker.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    print(f"generating {files} label maps of {HEIGHT} x {WIDTH} into {folder} (once)", file=sys.stderr)
    jobs = [(seed, str(folder / f"scene_{seed:04d}_gtFine_labelTrainIds.png")) for seed in range(files)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_write_map, jobs, chunksize=4))
    marker.write_text("")
    return folder


def decode(path: Path) -> None:
    with Image.open(path) as image:
        image.load()


def time_decode(folder: Path, workers: int) -> float:
    start = time.perf_counter()
    for _ in map_files(decode, find_label_maps(folder, ".png"), workers):
        pass
    return time.perf_counter() - start


def time_stats(folder: Path, workers: int) -> float:
    args = ["stats", str(folder), "--num-classes", str(NUM_CLASSES), "--workers", str(workers)]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = rewardpatch_main(args)
    elapsed = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"rewardpatch stats failed with exit code {code}")
    return elapsed


def _summary(runs: list[float]) -> dict:
    # The minimum is kept too: on a shared machine it is the run least disturbed by others.
    return {
        "median_s": round(statistics.median(runs), 3),
        "min_s": round(min(runs), 3),
        "runs_s": [round(t, 3) for t in runs],
    }


def measure(folder: Path, workers: int, repeats: int) -> dict:
    decode_runs, stats_runs = [], []
    for _ in range(repeats):
        # Alternate the two, so that a change in the machine's load hits both alike.
        decode_runs.append(time_decode(folder, workers))
        stats_runs.append(time_stats(folder, workers))
    ratio = statistics.median(stats_runs) / statistics.median(decode_runs)
    return {
        "workers": workers,
        "decode_alone": _summary(decode_runs),
        "stats": _summary(stats_runs),
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "met": ratio <= TARGET_RATIO,
    }


def print_table(results: dict, files: int) -> None:
    print(
        f"{'workers':>7}  {'decode alone':>12}  {'stats':>8}  {'ms per map':>13}  {'ratio':>5}  "
        f"target <= {TARGET_RATIO}"
    )
    for row in results.values():
        decode_s, stats_s = row["decode_alone"]["median_s"], row["stats"]["median_s"]
        per_map = f"{1000 * decode_s / files:.1f} / {1000 * stats_s / files:.1f}"
        print(f"{row['workers']:>7}  {decode_s:>11.2f}s  {stats_s:>7.2f}s  {per_map:>13}  {row['ratio']:>5.2f}  "
              f"{'met' if row['met'] else 'MISSED'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", default="1,2", help="worker counts to compare, separated by commas")
    default_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rewardpatch" / "bench-stats"
    parser.add_argument("--cache", type=Path, default=default_cache)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    options = parser.parse_args()

    info = describe()
    # The machine is shared: the load average says how much the figures can be trusted.
    conditions = {"pillow": Image.__version__, "load_average_at_start": list(os.getloadavg())}
    worker_counts = [int(w) for w in options.workers.split(",")]
    folder = label_maps(options.cache, options.files, max(worker_counts))
    paths = find_label_maps(folder, ".png")
    png_kib = statistics.mean(p.stat().st_size for p in paths) / 1024
    for _ in map_files(decode, paths, 1):  # untimed: puts every file in the page cache
        pass
    results = {f"{w} worker{'s' if w > 1 else ''}": measure(folder, w, options.repeats) for w in worker_counts}
    conditions["load_average_at_end"] = list(os.getloadavg())

    print(f"{len(paths)} label maps {HEIGHT} x {WIDTH} (PNG, mean {png_kib:.0f} KiB), median of {options.repeats}; "
          f"{one_line(info)}")
    print_table(results, len(paths))
    report = {
        "benchmark": "rewardpatch stats (whole command) vs decoding the same label maps alone, same workers",
        "machine": info,
        "conditions": conditions,
        "maps": {
            "files": len(paths), "height": HEIGHT, "width": WIDTH, "num_classes": NUM_CLASSES,
            "ignore_index": IGNORE_INDEX, "generator": f"street_scene v{GENERATOR_VERSION} (benchmarks/bench_stats.py)",
            "png_kib_mean": round(png_kib, 1),
        },
        "repeats": options.repeats,
        "results": results,
    }
    options.results.mkdir(parents=True, exist_ok=True)
    out = options.results / "stats.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if all(row["met"] for row in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
