"""The learning tables of benchmarks/README.md, from a bench_learning.py result file.

    .venv/bin/python benchmarks/learning_tables.py benchmarks/results/learning.json [TASK ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

NAMES = {
    "ce": "CE continued",
    "lovasz": "Lovász (MMSeg `LovaszLoss`, per batch)",
    "reinforce": "`reinforce` (image, K=2, loo, normalised)",
    "local_image": "`local`, image",
    "local_batch": "`local`, batch",
    "local_dataset": "`local`, dataset",
    "local_image_T0.5": "`local`, image, T=0.5",
    "local_batch_T0.5": "`local`, batch, T=0.5",
    "local_dataset_T0.5": "**`local`, dataset, T=0.5 (the default)**",
    "local_dataset_T0.5_K4": "`local`, dataset, T=0.5, K=4",
}


def is_domain_adaptation(pretrained: dict) -> bool:
    """A domain-adaptation task's record: its source model was also scored on source val."""
    return "source_val_miou" in pretrained


def header(task: str, pretrained: dict) -> str:
    metrics, probe = pretrained["metrics"], pretrained["probe"]
    if not is_domain_adaptation(pretrained):
        return (f"**{task}** — CE-pretrained {metrics['mIoU']:.2f} mIoU (class 4: "
                f"{metrics['IoU.object4']:.1f} IoU); headroom probe on val {probe['val_miou']:.2f} → "
                f"{probe['val_miou_with_bias']:.2f}")
    return (f"**{task}** — source model: {pretrained['source_val_miou']:.2f} mIoU on source val, "
            f"{metrics['mIoU']:.2f} on target val (class 3: {metrics['IoU.object3']:.1f}, class 4: "
            f"{metrics['IoU.object4']:.1f} IoU); oracle probe (biases searched on the dense target labels) "
            f"{probe['val_miou']:.2f} → {probe['val_miou_with_bias']:.2f}")


def table(task: str, outcome: dict) -> str:
    classes = ("object3", "object4") if is_domain_adaptation(outcome["pretrained"]) else ("object4",)
    columns = ["fine-tune", "dataset mIoU", "vs CE continued (paired)",
               *(f"class {c[-1]} IoU" for c in classes), "mean per-image mIoU", "grad norm / CE's"]
    lines = [header(task, outcome["pretrained"]), "", "| " + " | ".join(columns) + " |",
             "| " + " | ".join("---" for _ in columns) + " |"]
    norms = outcome["pretrained"]["gradient_norm_over_ce"]
    for method, row in outcome["finetuned"].items():
        miou, gain = row["dataset_miou"], row.get("gain_over_ce")
        cells = [NAMES.get(method, method), f"{miou['mean']:.2f} ± {miou['std']:.2f}",
                 f"{gain['mean']:+.2f} ± {gain['std']:.2f}" if gain else "",
                 *(f"{row['per_class_iou'][f'IoU.{c}']:.1f}" for c in classes),
                 f"{row['image_miou']['mean']:.2f}", f"{norms[method]:.2f}" if method in norms else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    result = json.loads(Path(sys.argv[1]).read_text())
    tasks = sys.argv[2:] or list(result["tasks"])
    print("\n\n".join(table(task, result["tasks"][task]) for task in tasks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
