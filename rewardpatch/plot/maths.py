"""`rewardpatch plot`'s maths: TensorBoard's smoothing and a least-squares trend."""

from __future__ import annotations

import math


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
