"""Does reward fine-tuning help where cross-entropy and mIoU disagree?

A synthetic task (rewardpatch.verify.synthetic, `rare_small_class`): one class appears
only as small objects in about a third of the images. Cross-entropy gains little from it;
mIoU counts it like any other class. A small MMSeg model (EncoderDecoder, narrow
ResNetV1c-18, FCNHead) is pretrained with CE once; from that one checkpoint, per seed, it
is fine-tuned for the same number of iterations at the same learning rate with:

    ce            CE continued (FCNHead, CrossEntropyLoss)
    weighted_ce   the earlier manual recipe (RewardFCNHead, mode='weighted_ce')
    reinforce_loo REINFORCE, K=2 samples, leave-one-out baseline
    reinforce_greedy  REINFORCE, K=2 samples, greedy (argmax) baseline

and validated with MMSeg's IoUMetric (per-class IoU kept). Starting every method from the
same checkpoint makes the comparison paired: the spread over seeds is the fine-tune's own.
REINFORCE runs with normalize_advantage=True, so that its update has the scale of a CE
update at the same learning rate. Everything runs through mmengine's Runner on a patched
MMSeg 1.2.2 checkout.

    .venv/bin/python benchmarks/bench_learning.py [--seeds 0 1 2] [--pretrain-iters 2400] [--finetune-iters 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from machine import describe, one_line  # noqa: E402
from patched_tree import import_patched_mmseg  # noqa: E402

NUM_CLASSES = 5
RARE = 4
SIZE = 64
METHODS = {
    "ce": ("FCNHead", dict(type="CrossEntropyLoss"), None),
    "weighted_ce": ("RewardFCNHead", dict(type="CrossEntropyRewardLoss"), dict(mode="weighted_ce")),
    "reinforce_loo": ("RewardFCNHead", dict(type="CrossEntropyRewardLoss"),
                      dict(num_samples=2, baseline="loo", normalize_advantage=True)),
    "reinforce_greedy": ("RewardFCNHead", dict(type="CrossEntropyRewardLoss"),
                         dict(num_samples=2, baseline="greedy", normalize_advantage=True)),
}


def register_per_class_metric() -> str:
    """IoUMetric that also returns each class's IoU, to see where the methods differ."""
    from mmseg.evaluation.metrics import IoUMetric
    from mmseg.registry import METRICS

    @METRICS.register_module(force=True)
    class PerClassIoUMetric(IoUMetric):
        def compute_metrics(self, results):
            metrics = super().compute_metrics(results)
            intersect = sum(r[0] for r in results)
            union = sum(r[1] for r in results)
            for name, i, u in zip(self.dataset_meta["classes"], intersect, union):
                metrics[f"IoU.{name}"] = round(float(i / u * 100), 2) if u > 0 else float("nan")
            return metrics

    return "PerClassIoUMetric"


def train(name, workdir, head, loss, reward_cfg, data_root, metainfo, iters, lr, seed, load_from=None,
          schedule=True):
    from mmengine.config import Config
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    from rewardpatch.verify.events import EventWriter
    from rewardpatch.verify.finetune import make_probe, model_config, runner_config

    model = model_config(head, {}, loss, reward_cfg, num_classes=NUM_CLASSES, image_size=SIZE)
    config = runner_config(name, workdir / name, model, str(data_root), metainfo, iters, lr, False, "cpu",
                           load_from=load_from, schedule=schedule, batch_size=8, seed=seed)
    config["val_evaluator"] = dict(type=register_per_class_metric(), iou_metrics=["mIoU"])
    runner = Runner.from_cfg(Config(config))
    record: dict = {}
    runner.register_hook(make_probe(EventWriter(workdir / "events", enabled=False), name, 0, record))
    kept = {}

    class KeepMetrics(Hook):
        def after_val_epoch(self, runner, metrics=None):
            kept.update({k: float(v) for k, v in (metrics or {}).items()})

    runner.register_hook(KeepMetrics(), priority="LOWEST")
    runner.train()
    return kept, workdir / name / f"iter_{iters}.pth"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pretrain-iters", type=int, default=2400)
    parser.add_argument("--finetune-iters", type=int, default=200)
    parser.add_argument("--pretrain-lr", type=float, default=0.05)
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    parser.add_argument("--train-images", type=int, default=160)
    parser.add_argument("--val-images", type=int, default=64)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "learning.json")
    parser.add_argument("--workdir", type=Path, help="keep runs here; an existing pretrained checkpoint is reused")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--temperature", type=float, default=1.0, help="REINFORCE sampling temperature")
    args = parser.parse_args()
    import_patched_mmseg()
    from rewardpatch.checkpoints import convert_to_weights_only
    from rewardpatch.verify.synthetic import classes, write_dataset

    names, palette = classes(NUM_CLASSES)
    metainfo = dict(classes=names, palette=palette)
    started = time.perf_counter()
    results: dict[str, list[dict]] = {m: [] for m in args.methods}
    with tempfile.TemporaryDirectory() as temporary:
        scratch = args.workdir or Path(temporary)
        data_root = scratch / "data"
        if not (data_root / "ann_dir").exists():
            write_dataset(data_root, num_train=args.train_images, num_val=args.val_images, size=SIZE,
                          num_classes=NUM_CLASSES, seed=1234, rare_small_class=RARE)
        # one pretrained model for every method and seed: a paired comparison from the same start
        weights = scratch / f"pretrain_{args.pretrain_iters}_weights.pth"
        pretrained_json = weights.with_suffix(".json")
        if weights.exists() and pretrained_json.exists():
            pretrained = json.loads(pretrained_json.read_text())
        else:
            pretrained, checkpoint = train("pretrain", scratch, "FCNHead", dict(type="CrossEntropyLoss"), None,
                                           data_root, metainfo, args.pretrain_iters, args.pretrain_lr, 0)
            convert_to_weights_only(checkpoint, weights)
            pretrained_json.write_text(json.dumps(pretrained))
        print(f"pretrained: {pretrained['mIoU']:.2f} mIoU, rare class IoU {pretrained[f'IoU.{names[RARE]}']}",
              flush=True)
        for seed in args.seeds:
            for method in args.methods:
                head, loss, reward_cfg = METHODS[method]
                if reward_cfg and reward_cfg.get("mode", "reinforce") == "reinforce":
                    reward_cfg = dict(reward_cfg, temperature=args.temperature)
                metrics, _ = train(f"{method}_seed{seed}", scratch, head, loss, reward_cfg, data_root, metainfo,
                                   args.finetune_iters, args.finetune_lr, seed, load_from=str(weights),
                                   schedule=False)
                results[method].append(metrics)
                print(f"seed {seed}: {method} {metrics['mIoU']:.2f} mIoU, rare class IoU "
                      f"{metrics[f'IoU.{names[RARE]}']}", flush=True)

    def summary(values):
        return {"mean": round(statistics.mean(values), 2),
                "std": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0,
                "runs": [round(v, 2) for v in values]}

    machine = describe()
    rows = {m: summary([r["mIoU"] for r in runs]) for m, runs in results.items()}
    per_class = {m: {k: round(statistics.mean(r[k] for r in runs), 2) for k in runs[0] if k.startswith("IoU.")}
                 for m, runs in results.items()}
    gains = {m: round(rows[m]["mean"] - rows["ce"]["mean"], 2) for m in rows if m != "ce" and "ce" in rows}
    result = {
        "benchmark": "reward fine-tuning vs CE continued on a rare-small-object synthetic task",
        "machine": machine,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        | {"num_classes": NUM_CLASSES, "rare_class": RARE, "image_size": SIZE},
        "pretrained": {k: round(v, 2) for k, v in pretrained.items() if k == "mIoU" or k.startswith("IoU.")},
        "finetuned_miou": rows, "finetuned_per_class_iou": per_class, "gain_over_ce_points": gains,
        "target": "reinforce beats CE continued by >= 1.0 mIoU point",
        "seconds": round(time.perf_counter() - started),
    }
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nvalidation mIoU over seeds {args.seeds} ({one_line(machine)})")
    print(f"  pretrained (CE, {args.pretrain_iters} it)   {pretrained['mIoU']:6.2f}")
    for method, row in rows.items():
        gain = f"  ({gains[method]:+.2f} vs CE)" if method in gains else ""
        print(f"  {method:<28}{row['mean']:6.2f} +- {row['std']:.2f}{gain}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
