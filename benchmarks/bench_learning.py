"""Does reward fine-tuning raise the metric users report, and by how much could it?

Three synthetic tasks where cross-entropy and mIoU disagree (rewardpatch.verify.synthetic):

    rare_small_class      one class only appears as small objects (about 1 % of the pixels)
    thin_structures       one class only appears as lines one or two pixels wide
    ambiguous_boundaries  one class appears as small objects whose labelled outline is the
                          visible one grown or shrunk by up to two pixels (held out)

Per task, a small MMSeg model (EncoderDecoder, narrow ResNetV1c-18, FCNHead) is
pretrained with cross-entropy once, on a poly schedule. From that one checkpoint, per
seed, every method is fine-tuned for the same iterations on the same data, with the
schedule `rewardpatch config` writes: starting at the learning rate where the CE
schedule ended, poly decay to 0. The methods:

    ce             CE continued (FCNHead, CrossEntropyLoss)
    lovasz         MMSeg's LovaszLoss (multi_class, per batch): the direct-IoU surrogate
    reinforce      REINFORCE, per-image mIoU, K=2, leave-one-out baseline, advantages
                   normalised (so that its steps have CE's size at this learning rate)
    local_image    local expectation gradient, per-image mIoU
    local_batch    local expectation gradient, mIoU of the batch's pooled counts
    local_dataset  local expectation gradient, mIoU of the decayed counts of recent batches
    local_*_T0.5   the same at sampling temperature 0.5, closer to the argmax that
                   IoUMetric scores (temperature 0.5 is the templates' default now; the
                   rows without the suffix say temperature=1.0)

The default reward_cfg is chosen among the local_* candidates: the best mean gain over
CE continued on every task run (or read from --with-results) but ambiguous_boundaries,
which, held out of that choice, says whether the choice carries over; the result also
lists the pick with each other task held out instead.

Validation reports MMSeg's IoUMetric (dataset mIoU: intersections and unions summed
over the dataset), the mean of per-image mIoU and each class's IoU. The headroom probe
asks how much any fine-tune could gain: the best dataset mIoU reachable by adding one
bias per class to the CE model's logits (coordinate search on the training set,
measured on validation). The gradient-size probe compares, on the pretrained model, the
norm of each method's parameter gradient with CE's: the learning rate where CE ended
suits a method whose ratio is near 1.

Two domain-adaptation tasks (da_tasks.py): a source domain and a shifted target domain
(lower contrast, colour cast, blur, noise), both with a thin class (4) and a rare small
class (3). The CE model is pretrained on the source domain (validation: the target's), and
fine-tuned on the target training images with

    active_adaptation     --al-budget of each image's pixels labelled (2 %, the pixels of
                          smallest softmax margin under the source model: one round of
                          pixel-budget active learning; --al-rule random), the rest 255
    self_training         no target labels, DAFormer's way: batches drawn from the labelled
                          source images and the target images together; a mean teacher
                          (EMA 0.99 of the model, from the source model) relabels each
                          batch's target images with its argmax, every pixel of an image
                          weighted (`seg_weight`) by DAFormer's pseudo-label weight: the
                          fraction of the image's pixels whose max softmax probability
                          exceeds 0.968 (--pseudo-weight softmax: each pixel's own max
                          probability; --teacher fixed: the source model's pseudo-labels,
                          written once)

with the methods of DA_METHODS: the heads take the per-pixel weights, the CE losses average
over labelled pixels (avg_non_ignore). Their headroom probe searches the biases on the dense
target training labels (an oracle no method sees). --quick is a smoke run: 300 pretrain and
40 fine-tune iterations on 64 / 48 images, written to results/learning_quick.json.

    .venv/bin/python benchmarks/bench_learning.py [--tasks ...] [--methods ...] [--seeds 0 1 2]
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

import da_tasks  # noqa: E402
from machine import describe, one_line  # noqa: E402
from patched_tree import import_patched_mmseg  # noqa: E402

NUM_CLASSES = 5
TARGET_CLASS = 4
SIZE = 64
TASKS = {
    "rare_small_class": dict(rare_small_class=TARGET_CLASS),
    "thin_structures": dict(thin_class=TARGET_CLASS),
    "ambiguous_boundaries": dict(ambiguous_class=TARGET_CLASS),
}
HELD_OUT = "ambiguous_boundaries"  # out of the default's selection: does the choice carry over?
CURRENT_DEFAULT = "local_dataset_T0.5"  # the templates' default reward_cfg (reward_schema.py)
REWARD_LOSS = dict(type="CrossEntropyRewardLoss")
METHODS = {
    "ce": ("FCNHead", dict(type="CrossEntropyLoss"), None),
    "lovasz": ("FCNHead", dict(type="LovaszLoss", loss_type="multi_class", per_image=False, reduction="none"), None),
    "reinforce": ("RewardFCNHead", REWARD_LOSS,
                  dict(mode="reinforce", num_samples=2, baseline="loo", normalize_advantage=True)),
    "local_image": ("RewardFCNHead", REWARD_LOSS, dict(mode="local", scope="image", temperature=1.0)),
    "local_batch": ("RewardFCNHead", REWARD_LOSS, dict(mode="local", scope="batch", temperature=1.0)),
    "local_dataset": ("RewardFCNHead", REWARD_LOSS, dict(mode="local", scope="dataset", temperature=1.0)),
    "local_image_T0.5": ("RewardFCNHead", REWARD_LOSS, dict(mode="local", scope="image", temperature=0.5)),
    "local_batch_T0.5": ("RewardFCNHead", REWARD_LOSS, dict(mode="local", scope="batch", temperature=0.5)),
    "local_dataset_T0.5": ("RewardFCNHead", REWARD_LOSS, dict(mode="local", scope="dataset", temperature=0.5)),
}
DA_METHODS = da_tasks.da_methods(METHODS, REWARD_LOSS)
EVERY_METHOD = {**METHODS, **DA_METHODS}  # by name: the DA ones differ in their heads and CE losses only
ALL_TASKS = list(TASKS) + list(da_tasks.DA_TASKS)
QUICK = dict(pretrain_iters=300, finetune_iters=40, train_images=64, val_images=48)
DEFAULTS = dict(pretrain_iters=2000, finetune_iters=300, train_images=240, val_images=160)


def methods_of(task: str) -> dict:
    return DA_METHODS if task in da_tasks.DA_TASKS else METHODS


def register_metric() -> str:
    """IoUMetric that also returns each class's IoU and the mean of per-image mIoU."""
    from mmseg.evaluation.metrics import IoUMetric
    from mmseg.registry import METRICS

    @METRICS.register_module(force=True)
    class DatasetAndImageIoUMetric(IoUMetric):
        def compute_metrics(self, results):
            metrics = super().compute_metrics(results)
            intersect = sum(r[0] for r in results)
            union = sum(r[1] for r in results)
            for name, i, u in zip(self.dataset_meta["classes"], intersect, union):
                metrics[f"IoU.{name}"] = round(float(i / u * 100), 2) if u > 0 else float("nan")
            per_image = [float((r[0][r[1] > 0] / r[1][r[1] > 0]).mean() * 100) for r in results if (r[1] > 0).any()]
            metrics["image_mIoU"] = round(statistics.mean(per_image), 2)
            return metrics

    return "DatasetAndImageIoUMetric"


def runner(name, workdir, method, data_root, metainfo, iters, lr, seed, schedule, load_from=None,
           train_split=None, weighted=False, teacher=None):
    from mmengine.config import Config
    from mmengine.runner import Runner

    from rewardpatch.verify.finetune import model_config, runner_config

    head, loss, reward_cfg = method
    model = model_config(head, {}, loss, reward_cfg, num_classes=NUM_CLASSES, image_size=SIZE)
    config = runner_config(name, workdir / name, model, str(data_root), metainfo, iters, lr, False, "cpu",
                           load_from=load_from, schedule=True, batch_size=8, seed=seed)
    config["param_scheduler"] = [schedule]
    config["val_evaluator"] = dict(type=register_metric(), iou_metrics=["mIoU"])
    if train_split:
        config["train_dataloader"]["dataset"]["data_prefix"] = dict(img_path=f"img_dir/{train_split}",
                                                                    seg_map_path=f"ann_dir/{train_split}")
    if weighted:
        config["train_dataloader"]["dataset"]["pipeline"] = da_tasks.weighted_pipeline(train=True)
    if teacher:
        config["model"].update(teacher)
    return Runner.from_cfg(Config(config))


def train(run) -> dict:
    from mmengine.hooks import Hook

    kept = {}

    class KeepMetrics(Hook):
        def after_val_epoch(self, runner, metrics=None):
            kept.update({k: float(v) for k, v in (metrics or {}).items()})

    run.register_hook(KeepMetrics(), priority="LOWEST")
    run.train()
    return kept


def logits_and_labels(model, data_root, metainfo, split, ann_split=None):
    """The model's logits and the labels of a split, read by MMSeg's own pipeline."""
    import torch
    from mmengine.runner import Runner

    from rewardpatch.verify.finetune import _dataloader

    config = _dataloader(str(data_root), metainfo, "val", batch_size=8)  # no augmentation
    config["dataset"]["data_prefix"] = dict(img_path=f"img_dir/{split}", seg_map_path=f"ann_dir/{ann_split or split}")
    loader = Runner.build_dataloader(config)
    logits, labels = [], []
    model.eval()
    with torch.no_grad():
        for batch in loader:
            for sample in model.test_step(batch):
                logits.append(sample.seg_logits.data.float())
                labels.append(sample.gt_sem_seg.data[0].long())
    model.train()
    return torch.stack(logits), torch.stack(labels)


def dataset_miou(logits, labels, bias):
    """IoUMetric's dataset mIoU of argmax(logits + bias)."""
    import torch

    pred = (logits + bias.view(1, -1, 1, 1)).max(1).indices
    keep = labels != 255
    pred, truth = pred[keep], labels[keep]
    classes = logits.shape[1]
    confusion = torch.bincount(truth * classes + pred, minlength=classes * classes).view(classes, classes).double()
    intersect = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - intersect
    return float((intersect[union > 0] / union[union > 0]).mean() * 100)


def headroom_probe(model, data_root, metainfo, train_labels_split=None) -> dict:
    """Coordinate search of one bias per class on train (its labels from ann_dir/
    `train_labels_split`, default ann_dir/train); its dataset mIoU on val."""
    import torch

    train_logits, train_labels = logits_and_labels(model, data_root, metainfo, "train", train_labels_split)
    val_logits, val_labels = logits_and_labels(model, data_root, metainfo, "val")
    bias = torch.zeros(train_logits.shape[1])
    best = dataset_miou(train_logits, train_labels, bias)
    grid = torch.linspace(-3, 3, 61)
    for _ in range(3):
        for c in range(1, len(bias)):  # class 0 is the reference: a common shift changes nothing
            for value in grid:
                trial = bias.clone()
                trial[c] = value
                score = dataset_miou(train_logits, train_labels, trial)
                if score > best + 1e-9:
                    best, bias = score, trial
    zero = torch.zeros_like(bias)
    return {
        "bias": [round(float(b), 2) for b in bias],
        "train_miou": round(dataset_miou(train_logits, train_labels, zero), 2),
        "train_miou_with_bias": round(best, 2),
        "val_miou": round(dataset_miou(val_logits, val_labels, zero), 2),
        "val_miou_with_bias": round(dataset_miou(val_logits, val_labels, bias), 2),
    }


def gradient_size(model, data_root, metainfo, batches=4, methods=METHODS, weighted=False) -> dict:
    """||grad of each method's loss|| / ||grad of CE|| on the pretrained model, per batch."""
    import torch
    from mmengine.runner import Runner
    from mmseg.registry import MODELS

    from rewardpatch.verify.finetune import _dataloader, model_config

    config = _dataloader(str(data_root), metainfo, "train", batch_size=8)
    if weighted:
        config["dataset"]["pipeline"] = da_tasks.weighted_pipeline(train=True)
    loader = Runner.build_dataloader(config)
    ratios: dict[str, list[float]] = {name: [] for name in methods}
    original = model.decode_head
    built = {}
    for name, (head, loss, reward_cfg) in methods.items():
        cfg = model_config(head, {}, loss, reward_cfg, num_classes=NUM_CLASSES, image_size=SIZE)["decode_head"]
        module = MODELS.build(cfg)
        module.load_state_dict(original.state_dict(), strict=False)
        built[name] = module
    torch.manual_seed(0)
    for index, batch in enumerate(loader):
        if index == batches:
            break
        norms = {}
        for name, module in built.items():
            model.decode_head = module
            model.zero_grad()
            data = model.data_preprocessor(batch, True)
            losses = model.loss(data["inputs"], data["data_samples"])
            total = sum(v for k, v in losses.items() if "loss" in k)
            total.backward()
            norms[name] = float(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).norm())
        for name in methods:
            ratios[name].append(norms[name] / norms["ce"])
    model.decode_head = original
    model.zero_grad()
    return {name: round(statistics.mean(values), 3) for name, values in ratios.items()}


def select_default(tasks: dict) -> dict | None:
    """The local_* candidate with the best mean gain over CE continued on every task but
    HELD_OUT (which then says whether the choice carries over); also which candidate that
    rule picks with each other task held out instead, and the current default's gain per task."""
    on = [t for t in tasks if t != HELD_OUT]
    candidates = [m for m in EVERY_METHOD if m.startswith("local_")
                  and all(m in tasks[t]["finetuned"] and "gain_over_ce" in tasks[t]["finetuned"][m] for t in on)]
    if not on or not candidates:
        return None

    def gain(method, task):
        return tasks[task]["finetuned"][method]["gain_over_ce"]["mean"]

    def best_on(selection):
        means = {m: statistics.mean(gain(m, t) for t in selection) for m in candidates}
        return max(means, key=means.get), means

    best, gains = best_on(on)
    everywhere = [t for t in tasks if all(m in tasks[t]["finetuned"] for m in candidates)]
    return {"default": best, "reward_cfg": EVERY_METHOD[best][2], "selected_on": on,
            "mean_gain_on_selection": round(gains[best], 2),
            "candidates": {m: round(g, 2) for m, g in gains.items()},
            "held_out": {t: tasks[t]["finetuned"][best] for t in tasks if t not in on},
            "pick_with_each_task_held_out": {t: best_on([u for u in everywhere if u != t])[0] for t in everywhere
                                             if len(everywhere) > 1},
            "current_default_gain_per_task": {t: gain(CURRENT_DEFAULT, t) for t in tasks
                                              if "gain_over_ce" in tasks[t]["finetuned"].get(CURRENT_DEFAULT, {})}}


def earlier_results(path: Path, running: list) -> tuple[dict, dict]:
    """The tasks of an earlier result file that this run does not run: for the selection."""
    earlier = json.loads(path.read_text())
    tasks = {t: r for t, r in earlier["tasks"].items() if t not in running}
    return tasks, {t: {"file": str(path.relative_to(HERE.parent) if path.is_relative_to(HERE.parent) else path),
                       "date": earlier["machine"]["date"], "seeds": earlier["settings"]["seeds"]} for t in tasks}


def mean_teacher(args) -> dict | None:
    """self_training's segmentor: the mean teacher relabelling each batch, or (--teacher
    fixed) the plain EncoderDecoder learning the source model's offline pseudo-labels."""
    if args.teacher == "fixed":
        return None
    return dict(type="MeanTeacherEncoderDecoder", ema=args.teacher_ema, weight=args.pseudo_weight)


def summary(values):
    return {"mean": round(statistics.mean(values), 2),
            "std": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0,
            "runs": [round(v, 2) for v in values]}


def run_task(task, args, scratch, names, metainfo) -> dict:
    from rewardpatch.checkpoints import convert_to_weights_only
    from rewardpatch.verify.synthetic import write_dataset

    da = da_tasks.DA_TASKS.get(task)
    pseudo = da is not None and da["labels"] == "pseudo"  # self-training: weighted pseudo-labels
    methods = methods_of(task)
    data_root = scratch / task / "data"
    if not (data_root / "ann_dir").exists():
        if da:
            da_tasks.write_domains(data_root, args.train_images, args.val_images, SIZE, NUM_CLASSES)
        else:
            write_dataset(data_root, num_train=args.train_images, num_val=args.val_images, size=SIZE,
                          num_classes=NUM_CLASSES, seed=1234, **TASKS[task])
    workdir = scratch / task
    key = f"{args.pretrain_iters}"
    if da:  # the target training labels are written from the pretrained model: part of its record
        key += (f"_al{args.al_budget}_{args.al_rule}" if da["labels"] == "active" else f"_{args.pseudo_weight}")
    weights = workdir / f"pretrain_{key}_weights.pth"
    record = workdir / f"pretrain_{key}.json"
    if weights.exists() and record.exists():
        pretrained = json.loads(record.read_text())
    else:
        schedule = dict(type="PolyLR", eta_min=args.pretrain_end_lr, power=0.9, begin=0, end=args.pretrain_iters,
                        by_epoch=False)
        run = runner("pretrain", workdir, METHODS["ce"], data_root, metainfo, args.pretrain_iters,
                     args.pretrain_lr, 0, schedule, train_split="source_train" if da else None)
        metrics = train(run)
        convert_to_weights_only(workdir / "pretrain" / f"iter_{args.pretrain_iters}.pth", weights)
        if da:
            # validation above is the target's: CE's transfer; the source's for comparison
            source_logits, source_labels = logits_and_labels(run.model, data_root, metainfo, "source_val")
            pretrained = {"metrics": metrics, "source_val_miou": round(
                dataset_miou(source_logits, source_labels, __import__("torch").zeros(NUM_CLASSES)), 2)}
            if da["labels"] == "active":
                pretrained["target_labels"] = da_tasks.write_active_labels(
                    run.model, data_root, metainfo, args.al_budget, args.al_rule, 0, NUM_CLASSES)
                pretrained["probe_on_bought_pixels"] = headroom_probe(run.model, data_root, metainfo)
            else:
                pretrained["target_labels"] = da_tasks.write_pseudo_labels(
                    run.model, data_root, metainfo, args.pseudo_weight, NUM_CLASSES)
                pretrained["self_training_split"] = da_tasks.write_self_training_split(data_root)
            # the oracle probe: biases searched on the dense target training labels
            pretrained["probe"] = headroom_probe(run.model, data_root, metainfo, "train_dense")
            pretrained["gradient_norm_over_ce"] = gradient_size(
                run.model, data_root, metainfo, methods=methods, weighted=pseudo)
        else:
            pretrained = {"metrics": metrics, "probe": headroom_probe(run.model, data_root, metainfo),
                          "gradient_norm_over_ce": gradient_size(run.model, data_root, metainfo)}
        record.write_text(json.dumps(pretrained))
    target = f"IoU.{names[TARGET_CLASS]}"
    if da:
        rare = f"IoU.{names[da_tasks.RARE_CLASS]}"
        print(f"[{task}] source-pretrained: source val {pretrained['source_val_miou']:.2f} mIoU; target val "
              f"{pretrained['metrics']['mIoU']:.2f} ({rare} {pretrained['metrics'][rare]}); target labels "
              f"{pretrained['target_labels']}", flush=True)
    print(f"[{task}] pretrained: {pretrained['metrics']['mIoU']:.2f} mIoU ({target} "
          f"{pretrained['metrics'][target]}), image mIoU {pretrained['metrics']['image_mIoU']:.2f}; "
          f"probe on val {pretrained['probe']['val_miou']:.2f} -> {pretrained['probe']['val_miou_with_bias']:.2f}; "
          f"gradient norm / CE's {pretrained['gradient_norm_over_ce']}", flush=True)

    runs: dict[str, list[dict]] = {m: [] for m in args.methods if m in methods}
    skipped = [m for m in args.methods if m not in methods]
    if skipped:
        print(f"[{task}] not a method of this task: {skipped}", flush=True)
    finetune = dict(type="PolyLR", eta_min=0.0, power=0.9, begin=0, end=args.finetune_iters, by_epoch=False)
    for seed in args.seeds:
        for method in runs:
            started = time.perf_counter()
            run = runner(f"{method}_seed{seed}", workdir, methods[method], data_root, metainfo,
                         args.finetune_iters, args.pretrain_end_lr, seed, finetune, load_from=str(weights),
                         weighted=pseudo, train_split=da_tasks.SELF_TRAINING_SPLIT if pseudo else None,
                         teacher=mean_teacher(args) if pseudo else None)
            metrics = train(run)
            metrics["seconds"] = round(time.perf_counter() - started, 1)
            runs[method].append(metrics)
            print(f"[{task}] seed {seed} {method:<14} {metrics['mIoU']:6.2f} mIoU  {target} {metrics[target]:6.2f}  "
                  f"image mIoU {metrics['image_mIoU']:6.2f}  ({metrics['seconds']} s)", flush=True)

    result = {"pretrained": pretrained, "finetuned": {}}
    for method, seeds_metrics in runs.items():
        result["finetuned"][method] = {
            "dataset_miou": summary([m["mIoU"] for m in seeds_metrics]),
            "image_miou": summary([m["image_mIoU"] for m in seeds_metrics]),
            "per_class_iou": {k: round(statistics.mean(m[k] for m in seeds_metrics), 2) for k in seeds_metrics[0]
                              if k.startswith("IoU.")},
        }
        if method != "ce" and "ce" in runs:
            paired = [m["mIoU"] - c["mIoU"] for m, c in zip(seeds_metrics, runs["ce"])]
            result["finetuned"][method]["gain_over_ce"] = summary(paired)
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", nargs="+", default=ALL_TASKS, choices=ALL_TASKS,
                        help="default: all five (the three single-domain tasks and the two domain-adaptation ones)")
    parser.add_argument("--methods", nargs="+", choices=list(EVERY_METHOD),
                        help="default: every method of each task (METHODS; DA_METHODS on the DA tasks)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK} unless given, out results/learning_quick.json")
    parser.add_argument("--pretrain-iters", type=int, help=f"default {DEFAULTS['pretrain_iters']}")
    parser.add_argument("--pretrain-lr", type=float, default=0.05)
    parser.add_argument("--pretrain-end-lr", type=float, default=0.005,
                        help="where the CE schedule ends: every fine-tune starts here")
    parser.add_argument("--finetune-iters", type=int, help=f"default {DEFAULTS['finetune_iters']}")
    parser.add_argument("--train-images", type=int, help=f"default {DEFAULTS['train_images']}")
    parser.add_argument("--val-images", type=int, help=f"default {DEFAULTS['val_images']}")
    parser.add_argument("--al-budget", type=float, default=0.02,
                        help="active_adaptation: fraction of each target training image's pixels labelled")
    parser.add_argument("--al-rule", choices=["margin", "random"], default="margin",
                        help="active_adaptation: which pixels are bought (source model's softmax margin, or random)")
    parser.add_argument("--pseudo-weight", choices=["daformer", "softmax"], default="daformer",
                        help="self_training: DAFormer's per-image fraction of pixels whose max softmax probability "
                             "exceeds 0.968, or each pixel's own max softmax probability")
    parser.add_argument("--teacher", choices=["ema", "fixed"], default="ema",
                        help="self_training: pseudo-labels from a mean teacher (EMA of the model, relabelling "
                             "each batch) or the fixed source model's, written once")
    parser.add_argument("--teacher-ema", type=float, default=0.99, help="self_training: the mean teacher's decay")
    parser.add_argument("--with-results", type=Path,
                        help="an earlier result file whose other tasks join the default's selection")
    parser.add_argument("--out", type=Path, help="default results/learning.json (--quick: results/learning_quick.json)")
    parser.add_argument("--workdir", type=Path, help="keep runs here; an existing pretrained checkpoint is reused")
    args = parser.parse_args()
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.out is None:
        args.out = HERE / "results" / ("learning_quick.json" if args.quick else "learning.json")
    if args.methods is None:
        args.methods = list(dict.fromkeys(m for t in args.tasks for m in methods_of(t)))
    import_patched_mmseg()
    da_tasks.register()
    from rewardpatch.verify.synthetic import classes

    names, palette = classes(NUM_CLASSES)
    metainfo = dict(classes=names, palette=palette)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temporary:
        scratch = args.workdir or Path(temporary)
        tasks = {task: run_task(task, args, scratch, names, metainfo) for task in args.tasks}
    machine = describe()
    earlier, provenance = earlier_results(args.with_results, args.tasks) if args.with_results else ({}, {})
    selection = select_default(tasks | earlier)
    result = {
        "benchmark": "reward fine-tuning against CE continued and Lovasz, dataset mIoU (IoUMetric)",
        "machine": machine,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        | {"num_classes": NUM_CLASSES, "target_class": names[TARGET_CLASS], "image_size": SIZE, "batch_size": 8,
           "finetune_schedule": "PolyLR from --pretrain-end-lr to 0, power 0.9 (what `rewardpatch config` writes)",
           "methods": {m: {"head": h, "loss": loss, "reward_cfg": r} for m, (h, loss, r) in METHODS.items()
                       if m in args.methods}}
        | ({"da_methods": {m: {"head": h, "loss": loss, "reward_cfg": r} for m, (h, loss, r) in DA_METHODS.items()
                           if m in args.methods},
            "da_shift": da_tasks.SHIFT, "da_generator": da_tasks.GENERATOR}
           if any(t in da_tasks.DA_TASKS for t in args.tasks) else {}),
        "tasks": tasks,
        **({"selection_also_reads": provenance} if provenance else {}),
        "selection": selection,
        "goal": "issue 19: on both domain-adaptation tasks the default beats CE continued by >= 1.0 dataset "
                "mIoU (3 seeds); on none of the five tasks is it below CE continued",
        **({"smoke_run": "--quick: reduced iterations and images; not a result"} if args.quick else {}),
        "seconds": round(time.perf_counter() - started),
    }
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\ndataset mIoU (IoUMetric) over seeds {args.seeds} ({one_line(machine)})")
    for task, outcome in tasks.items():
        probe = outcome["pretrained"]["probe"]
        print(f"  {task}: pretrained {probe['val_miou']:.2f}, headroom probe {probe['val_miou_with_bias']:.2f}")
        for method, row in outcome["finetuned"].items():
            gain = row.get("gain_over_ce")
            gain = f"  ({gain['mean']:+.2f} +- {gain['std']:.2f} vs CE)" if gain else ""
            print(f"    {method:<20}{row['dataset_miou']['mean']:6.2f} +- {row['dataset_miou']['std']:.2f}"
                  f"   image mIoU {row['image_miou']['mean']:6.2f}{gain}")
    if selection:
        print(f"  default: {selection['default']} {selection['reward_cfg']} (mean gain over CE on "
              f"{', '.join(selection['selected_on'])}: {selection['mean_gain_on_selection']:+.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
