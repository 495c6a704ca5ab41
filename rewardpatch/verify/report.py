"""What verify shows a person: a summary table, and a plot of the fine-tune's curves."""

from __future__ import annotations

from pathlib import Path

import click


def _number(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def print_summary(report: dict) -> None:
    heads = report["heads"]
    width = max([len(h["name"]) for h in heads] + [len("HEAD")]) + 2
    echo = click.echo
    echo(f"\n{'HEAD':<{width}}{'STATUS':<8}{'LOSS':>12}{'TIME':>9}")
    for head in heads:
        status = "ok" if head["ok"] else "skipped" if head.get("skipped") else "FAILED"
        echo(f"{head['name']:<{width}}{status:<8}{_number(head['loss']):>12}{head['seconds']:>8.2f}s")
    fine = report.get("finetune")
    if fine:
        echo(
            f"\nfine-tune {fine.get('head', '')}: {'ok' if fine.get('ok') else 'FAILED'}, "
            f"{fine.get('ce_iters')} CE + {fine.get('iters')} reward iterations on {report.get('device')}"
            f" x{fine.get('world_size', 1)}, dataset mIoU {_number(fine.get('dataset_miou_before'))} -> "
            f"{_number(fine.get('dataset_miou_after'))}, reward_mean {_number(fine.get('reward_mean_first'))} -> "
            f"{_number(fine.get('reward_mean_last'))}, {_number(fine.get('seconds'), 3)} s"
        )
    passed = sum(h["ok"] for h in heads)
    skipped = sum(bool(h.get("skipped")) for h in heads)
    mode = " (plugin mode)" if report.get("mode") == "plugin" else ""
    skipped_text = f", {skipped} skipped" if skipped else ""
    echo(f"\n{passed}/{len(heads)} heads passed{skipped_text}{mode} on {report.get('device')}"
         + (f" ({report['gpu']})" if report.get("gpu") else "")
         + f" in {report.get('seconds')} s; work dir {report['workdir']}")
    for head in heads:
        if head.get("skipped"):
            click.echo(f"SKIPPED {head['name']}: {head['skipped']}", err=True)
        elif not head["ok"]:
            click.echo(f"FAILED {head['name']}: {head['error']}", err=True)
    if fine and not fine.get("ok"):
        click.echo(f"FAILED fine-tune: {fine.get('error')}", err=True)


def write_plot(fine: dict, path: Path) -> Path:
    """Reward statistics over the reward iterations, and mIoU at each evaluation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    steps = range(1, len(fine["reward_mean"]) + 1)
    left.plot(steps, fine["reward_mean"], label="reward_mean (samples)")
    if fine.get("reward_greedy"):
        left.plot(steps, fine["reward_greedy"], label="reward_greedy (argmax)")
    cfg = fine.get("reward_cfg") or {}
    left.set(title=f"Reward during the fine-tune of {fine.get('head', '')}", xlabel="reward iteration",
             ylabel=f"{cfg.get('reward', 'miou')} reward, scope {cfg.get('scope', '?')}")
    left.legend()
    left.grid(alpha=0.3)
    curve = [(step, value) for step, value in fine.get("miou_curve", []) if value is not None]
    if curve:
        right.plot([s for s, _ in curve], [v for _, v in curve], marker="o", color="#3a7bd5", label="reward fine-tune")
        right.axhline(curve[0][1], color="#888888", linestyle="--", label="CE checkpoint")
        right.legend()
    right.set(title="Validation dataset mIoU (MMSeg IoUMetric)", xlabel="reward iteration", ylabel="mIoU (%)")
    right.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
