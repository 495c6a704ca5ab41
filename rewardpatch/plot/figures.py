"""`rewardpatch plot`'s figures (matplotlib, imported only when a figure is drawn)."""

from __future__ import annotations

from .logs import ScalarLog, series
from .maths import linear_trend, tensorboard_smoothing


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
