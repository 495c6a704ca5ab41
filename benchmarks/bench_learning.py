"""Does reward fine-tuning help where cross-entropy and mIoU disagree?

A synthetic task (rewardpatch.verify.synthetic, `rare_small_class`): one class appears
only as small objects in about a third of the images. Cross-entropy gains little from it;
mIoU counts it like any other class. Per seed, a small MMSeg model (EncoderDecoder,
narrow ResNetV1c-18, FCNHead) is pretrained with CE, then fine-tuned for the same number
of iterations and the same learning rate with:

    ce            CE continued (FCNHead, CrossEntropyLoss)
    weighted_ce   the earlier manual recipe (RewardFCNHead, mode='weighted_ce')
    reinforce_loo REINFORCE, K=2 samples, leave-one-out baseline
    reinforce_greedy  REINFORCE, K=2 samples, greedy (argmax) baseline

and validated with MMSeg's IoUMetric. Everything runs through mmengine's Runner on a
patched MMSeg 1.2.2 checkout.

    .venv/bin/python benchmarks/bench_learning.py [--seeds 0 1 2] [--pretrain-iters 400] [--finetune-iters 200]
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


def train(name, workdir, head, loss, reward_cfg, data_root, metainfo, iters, lr, seed, load_from=None,
          schedule=True):
    from mmengine.config import Config
    from mmengine.runner import Runner

    from rewardpatch.verify.events import EventWriter
    from rewardpatch.verify.finetune import make_probe, model_config, runner_config

    model = model_config(head, {}, loss, reward_cfg, num_classes=NUM_CLASSES, image_size=SIZE)
    config = runner_config(name, workdir / name, model, str(data_root), metainfo, iters, lr, False, "cpu",
                           load_from=load_from, schedule=schedule, batch_size=8, seed=seed)
    runner = Runner.from_cfg(Config(config))
    record: dict = {}
    runner.register_hook(make_probe(EventWriter(workdir / "events", enabled=False), name, 0, record))
    runner.train()
    return record, workdir / name / f"iter_{iters}.pth"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pretrain-iters", type=int, default=400)
    parser.add_argument("--finetune-iters", type=int, default=200)
    parser.add_argument("--pretrain-lr", type=float, default=0.05)
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    parser.add_argument("--train-images", type=int, default=160)
    parser.add_argument("--val-images", type=int, default=64)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "learning.json")
    args = parser.parse_args()
    import_patched_mmseg()
    from rewardpatch.checkpoints import convert_to_weights_only
    from rewardpatch.verify.synthetic import classes, write_dataset

    names, palette = classes(NUM_CLASSES)
    metainfo = dict(classes=names, palette=palette)
    started = time.perf_counter()
    results: dict[str, list[float]] = {m: [] for m in METHODS}
    pretrained: list[float] = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        data_root = scratch / "data"
        write_dataset(data_root, num_train=args.train_images, num_val=args.val_images, size=SIZE,
                      num_classes=NUM_CLASSES, seed=1234, rare_small_class=RARE)
        for seed in args.seeds:
            workdir = scratch / f"seed{seed}"
            record, checkpoint = train("pretrain", workdir, "FCNHead", dict(type="CrossEntropyLoss"), None,
                                       data_root, metainfo, args.pretrain_iters, args.pretrain_lr, seed)
            pretrained.append(record["val"][-1][1])
            weights = convert_to_weights_only(checkpoint, workdir / "pretrain_weights.pth").path
            for method, (head, loss, reward_cfg) in METHODS.items():
                record, _ = train(method, workdir, head, loss, reward_cfg, data_root, metainfo,
                                  args.finetune_iters, args.finetune_lr, seed, load_from=str(weights),
                                  schedule=False)
                results[method].append(record["val"][-1][1])
                print(f"seed {seed}: pretrained {pretrained[-1]:.2f}, {method} {results[method][-1]:.2f} mIoU",
                      flush=True)

    def summary(values):
        return {"mean": round(statistics.mean(values), 2),
                "std": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0,
                "runs": [round(v, 2) for v in values]}

    machine = describe()
    rows = {m: summary(v) for m, v in results.items()}
    gains = {m: round(rows[m]["mean"] - rows["ce"]["mean"], 2) for m in METHODS if m != "ce"}
    result = {
        "benchmark": "reward fine-tuning vs CE continued on a rare-small-object synthetic task",
        "machine": machine, "settings": vars(args) | {"out": str(args.out), "num_classes": NUM_CLASSES,
                                                       "rare_class": RARE, "image_size": SIZE},
        "pretrained_miou": summary(pretrained), "finetuned_miou": rows, "gain_over_ce_points": gains,
        "target": "reinforce beats CE continued by >= 1.0 mIoU point",
        "seconds": round(time.perf_counter() - started),
    }
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nvalidation mIoU over seeds {args.seeds} ({one_line(machine)})")
    print(f"  pretrained (CE, {args.pretrain_iters} it)   {result['pretrained_miou']['mean']:6.2f} +- {result['pretrained_miou']['std']:.2f}")
    for method, row in rows.items():
        gain = f"  ({gains[method]:+.2f} vs CE)" if method in gains else ""
        print(f"  {method:<28}{row['mean']:6.2f} +- {row['std']:.2f}{gain}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
