"""Domain-adaptation tasks for bench_learning.py: a source domain, a shifted target domain.

Both domains are drawn by rewardpatch.verify.synthetic with a thin class (4: lines one or
two pixels wide) and a rare small class (3: small squares/ellipses in half of the images);
classes 1 and 2 are the common large objects. The target domain is a camera shift applied
to the images when they are written (`shift`): lower contrast, a colour cast, a Gaussian
blur and more sensor noise. The blur takes most of a one-pixel line's contrast and the
cast moves the class colours, so the source model transfers worst on the thin and small
classes. The label maps are not shifted.

Layout of a task's data root (BaseSegDataset, one folder per split):

    img_dir/source_train, ann_dir/source_train   source domain, dense labels (CE pretrain)
    img_dir/source_val,   ann_dir/source_val     source domain, dense labels (reported only)
    img_dir/train,        ann_dir/train_dense    target training images, dense labels: the
                                                 oracle, read by the headroom probe and by
                                                 the active-learning annotator only
    ann_dir/train                                active_adaptation: the bought pixels, the
                                                 rest 255; self_training: the source
                                                 model's pseudo-labels (the record, and
                                                 what --teacher fixed learns)
    weight_dir/train/NNNN.npy                    their per-pixel weights (self_training)
    img_dir/self_training, ann_dir/..., weight_dir/...
                                                 what self-training learns from: the source
                                                 images s_NNNN (dense labels, weight 1) and
                                                 the target images t_NNNN (pseudo-labels)
    img_dir/val,          ann_dir/val            target validation, dense labels

Self-training as the DAFormer family does it: the batches mix labelled source and target
images; `MeanTeacherEncoderDecoder` relabels the target ones before each step with its
mean teacher (an EMA of the model) and weights them by DAFormer's pseudo-label weight.

How `seg_weight` reaches the loss in the mmengine loop (MMSeg 1.2.2's BaseDecodeHead takes
no `seg_weight`; the reward head's `reward_losses` does): `LoadSegWeight` reads the .npy
next to the image and adds it to `seg_fields` (so RandomFlip flips it with the label),
`PackSegInputsWithWeight` packs it as the data sample's `gt_seg_weight` (PixelData) - the
mean teacher replaces it -, and two head subclasses registered here read it back in
`loss_by_feat`: `WeightedFCNHead` (FCNHead; MMSeg's own loss_by_feat with
`weight=seg_weight`, the path MMSeg 1.x takes for a pixel sampler's weights) and
`WeightedRewardFCNHead` (the patched RewardFCNHead; hands the weights to
`reward_losses(seg_logits, seg_label, seg_weight)`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Tuple, TypedDict

import numpy as np
from PIL import Image, ImageFilter

THIN_CLASS = 4
RARE_CLASS = 3
GENERATOR = dict(thin_class=THIN_CLASS, rare_small_class=RARE_CLASS)
SOURCE_SEED, TARGET_SEED, SHIFT_SEED = 1234, 4321, 99


class Shift(TypedDict):
    """How the target domain differs from the source (`shift`), per RGB channel where a triple."""

    contrast: float
    gain: Tuple[float, float, float]
    offset: Tuple[float, float, float]
    blur_sigma: float
    noise_std: float


# the target camera: x -> contrast * x + (1 - contrast) * 128, times a per-channel gain plus
# an offset (RGB), blurred, plus Gaussian noise
SHIFT: Shift = dict(contrast=0.8, gain=(1.1, 1.0, 0.85), offset=(5.0, 0.0, 10.0), blur_sigma=1.0, noise_std=10.0)

DA_TASKS = {
    # a pixel budget bought on the target domain, the rest ignore_index
    "active_adaptation": dict(labels="active"),
    # no target labels: the source model's pseudo-labels, weighted by its confidence
    "self_training": dict(labels="pseudo"),
}


def shift(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The target domain's version of a source-style image (uint8 RGB)."""
    x = image.astype(np.float64)
    x = SHIFT["contrast"] * x + (1 - SHIFT["contrast"]) * 128.0
    x = x * np.array(SHIFT["gain"]) + np.array(SHIFT["offset"])
    blurred = Image.fromarray(np.clip(x, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(SHIFT["blur_sigma"]))
    x = np.asarray(blurred, np.float64) + rng.normal(0.0, SHIFT["noise_std"], x.shape)
    return np.clip(x, 0, 255).astype(np.uint8)


def write_domains(root: Path, num_train: int, num_val: int, size: int, num_classes: int) -> None:
    """Source and (shifted) target domains under `root`, in the layout above."""
    from rewardpatch.verify.synthetic import write_dataset

    source, target = root / "_source", root / "_target"
    write_dataset(source, num_train=num_train, num_val=num_val, size=size, num_classes=num_classes,
                  seed=SOURCE_SEED, **GENERATOR)
    write_dataset(target, num_train=num_train, num_val=num_val, size=size, num_classes=num_classes,
                  seed=TARGET_SEED, **GENERATOR)
    rng = np.random.default_rng(SHIFT_SEED)
    moves = [(source, "train", "source_train", False), (source, "val", "source_val", False),
             (target, "train", "train", True), (target, "val", "val", True)]
    for origin, split, name, shifted in moves:
        ann_name = "train_dense" if name == "train" else name
        (root / "img_dir" / name).mkdir(parents=True, exist_ok=True)
        (root / "ann_dir" / ann_name).mkdir(parents=True, exist_ok=True)
        for path in sorted((origin / "img_dir" / split).glob("*.png")):
            image = np.asarray(Image.open(path).convert("RGB"))
            Image.fromarray(shift(image, rng) if shifted else image).save(root / "img_dir" / name / path.name)
            label = origin / "ann_dir" / split / path.name
            label.rename(root / "ann_dir" / ann_name / path.name)
    for origin in (source, target):
        for path in sorted(origin.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        origin.rmdir()


def predict(model, data_root: Path, metainfo: dict, img_split: str, ann_split: str):
    """[(image path, logits [C, H, W], labels [H, W])] of a split, no augmentation."""
    import torch
    from mmengine.runner import Runner

    from rewardpatch.verify.finetune import _dataloader

    config = _dataloader(str(data_root), metainfo, "val", batch_size=8)
    config["dataset"]["data_prefix"] = dict(img_path=f"img_dir/{img_split}", seg_map_path=f"ann_dir/{ann_split}")
    out = []
    model.eval()
    with torch.no_grad():
        for batch in Runner.build_dataloader(config):
            for sample in model.test_step(batch):
                out.append((sample.img_path, sample.seg_logits.data.float(), sample.gt_sem_seg.data[0].long()))
    model.train()
    return out


def write_active_labels(model, data_root: Path, metainfo: dict, budget: float, rule: str, seed: int,
                        num_classes: int) -> dict:
    """One active-learning round on the target training images: per image, `budget` of its
    pixels are bought and labelled by the oracle (ann_dir/train_dense), the rest 255.
    rule 'margin' buys the pixels where the source model's top-two softmax probabilities are
    closest (PixelPick's margin sampling), 'random' buys them uniformly; either way among the
    pixels the oracle can label (the synthetic ignore band around objects is never bought)."""

    rng = np.random.default_rng(seed)
    out = data_root / "ann_dir" / "train"
    out.mkdir(parents=True, exist_ok=True)
    bought = np.zeros(num_classes, np.int64)
    total = 0
    for path, logits, labels in predict(model, data_root, metainfo, "train", "train_dense"):
        valid = (labels != 255).flatten()
        k = max(1, round(budget * labels.numel()))
        if rule == "margin":
            top2 = logits.softmax(0).flatten(1).topk(2, dim=0).values
            score = (top2[0] - top2[1]).numpy()
        else:
            score = rng.random(labels.numel())
        score = np.where(valid.numpy(), score, np.inf)
        chosen = np.argsort(score, kind="stable")[:min(k, int(valid.sum()))]
        sparse = np.full(labels.numel(), 255, np.uint8)
        sparse[chosen] = labels.flatten().numpy()[chosen]
        bought += np.bincount(sparse[chosen], minlength=num_classes)[:num_classes]
        total += labels.numel()
        Image.fromarray(sparse.reshape(labels.shape)).save(out / Path(path).name)
    return {"rule": rule, "budget": budget, "labelled_fraction": round(float(bought.sum() / total), 4),
            "bought_per_class": bought.tolist()}


def write_pseudo_labels(model, data_root: Path, metainfo: dict, rule: str, num_classes: int,
                        threshold: float = 0.968) -> dict:
    """The fixed source teacher's pseudo-labels (argmax) on the target training images, and
    per-pixel weights: rule 'softmax' the pixel's max softmax probability; 'daformer' the
    fraction of the image's pixels whose max probability exceeds `threshold` (DAFormer's
    pseudo_weight, one value per image). Also how good they are against the dense labels."""
    import torch

    labels_out, weights_out = data_root / "ann_dir" / "train", data_root / "weight_dir" / "train"
    labels_out.mkdir(parents=True, exist_ok=True)
    weights_out.mkdir(parents=True, exist_ok=True)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    weight_sum = torch.zeros(num_classes, dtype=torch.float64)
    pixels = torch.zeros(num_classes, dtype=torch.float64)
    for path, logits, labels in predict(model, data_root, metainfo, "train", "train_dense"):
        confidence, pseudo = logits.softmax(0).max(0)
        if rule == "daformer":
            weight = pseudo_weight_daformer(confidence[None], threshold)[0]
        else:
            weight = confidence
        name = Path(path).name
        Image.fromarray(pseudo.numpy().astype(np.uint8)).save(labels_out / name)
        np.save(weights_out / name.replace(".png", ".npy"), weight.numpy().astype(np.float32))
        keep = labels != 255
        confusion += torch.bincount(labels[keep] * num_classes + pseudo[keep],
                                    minlength=num_classes ** 2).view(num_classes, num_classes).double()
        weight_sum += torch.bincount(pseudo.flatten(), weights=weight.flatten().double(), minlength=num_classes)
        pixels += torch.bincount(pseudo.flatten(), minlength=num_classes).double()
    intersect = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - intersect
    iou = intersect / union.clamp(min=1) * 100
    return {"rule": rule, "teacher": "fixed source model (CE pretrain), offline, no augmentation",
            "pseudo_label_miou_vs_dense": round(float(iou[union > 0].mean()), 2),
            "pseudo_label_iou_per_class": [round(float(v), 2) for v in iou],
            "mean_weight_per_pseudo_class": [round(float(w / max(p, 1)), 3) for w, p in zip(weight_sum, pixels)]}


SELF_TRAINING_SPLIT = "self_training"


def is_target(path: str) -> bool:
    """Whether an image of the self-training split is a target one (t_NNNN.png)."""
    return Path(path).name.startswith("t_")


def write_self_training_split(data_root: Path) -> dict:
    """The split self-training learns from, DAFormer's way: the labelled source images
    (s_NNNN.png, their dense labels, weight 1) and the target training images (t_NNNN.png,
    the teacher's pseudo-labels and weights), shuffled together into the batches."""
    import shutil

    split = SELF_TRAINING_SPLIT
    for kind in ("img_dir", "ann_dir", "weight_dir"):
        (data_root / kind / split).mkdir(parents=True, exist_ok=True)
    count = {}
    for prefix, images, labels in (("s_", "source_train", "source_train"), ("t_", "train", "train")):
        paths = sorted((data_root / "img_dir" / images).glob("*.png"))
        count[images] = len(paths)
        for path in paths:
            name = prefix + path.name
            shutil.copyfile(path, data_root / "img_dir" / split / name)
            shutil.copyfile(data_root / "ann_dir" / labels / path.name, data_root / "ann_dir" / split / name)
            weights = data_root / "weight_dir" / "train" / (path.stem + ".npy")
            target = data_root / "weight_dir" / split / (prefix + path.stem + ".npy")
            if prefix == "t_":
                shutil.copyfile(weights, target)
            else:
                shape = np.asarray(Image.open(path)).shape[:2]
                np.save(target, np.ones(shape, np.float32))
    return {"split": split, "source_images": count["source_train"], "target_images": count["train"]}


def pseudo_weight_daformer(confidence, threshold: float = 0.968):
    """DAFormer's pseudo-label weight: per image [B, H, W], the fraction of its pixels whose
    max softmax probability exceeds `threshold`, given to every pixel of the image."""
    fraction = (confidence > threshold).float().mean(dim=(1, 2), keepdim=True)
    return fraction.expand_as(confidence).clone()


def da_methods(methods: dict, reward_loss: dict) -> dict:
    """The methods compared on the DA tasks: the heads that take per-pixel weights, and the
    cross-entropy losses averaged over the labelled pixels (avg_non_ignore: with 2 % of the
    pixels labelled, MMSeg's default mean over all pixels would shrink CE's and the reward's
    steps fifty-fold; LovaszLoss averages over labelled pixels anyway and takes no weights)."""
    base = {name: spec for name, spec in methods.items() if name != "reinforce"}
    base["local_dataset_T0.5_K4"] = ("RewardFCNHead", reward_loss,
                                     dict(mode="local", scope="dataset", temperature=0.5, num_samples=4))
    heads = {"FCNHead": "WeightedFCNHead", "RewardFCNHead": "WeightedRewardFCNHead"}
    out = {}
    for name, (head, loss, reward_cfg) in base.items():
        if loss["type"] in ("CrossEntropyLoss", "CrossEntropyRewardLoss"):
            loss = dict(loss, avg_non_ignore=True)
        out[name] = (heads[head], loss, reward_cfg)
    return out


def weighted_pipeline(train: bool) -> list:
    """The training pipeline that also loads and packs the per-pixel weights."""
    pipeline: list[dict[str, object]] = [
        dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), dict(type="LoadSegWeight")
    ]
    if train:
        pipeline.append(dict(type="RandomFlip", prob=0.5))
    return pipeline + [dict(type="PackSegInputsWithWeight")]


def register() -> None:
    """Register LoadSegWeight, PackSegInputsWithWeight, WeightedFCNHead, WeightedRewardFCNHead."""
    import copy

    import torch
    from mmcv.transforms import BaseTransform
    from mmengine.structures import PixelData
    from mmseg.datasets.transforms import PackSegInputs
    from mmseg.models.decode_heads import FCNHead, RewardFCNHead
    from mmseg.models.losses import accuracy
    from mmseg.models.segmentors import EncoderDecoder
    from mmseg.models.utils import resize
    from mmseg.registry import MODELS, TRANSFORMS
    from torch import nn

    @TRANSFORMS.register_module(force=True)
    class LoadSegWeight(BaseTransform):
        """weight_dir/<split>/<name>.npy for img_dir/<split>/<name>.png, as `gt_seg_weight`."""

        def transform(self, results):
            image = Path(results["img_path"])
            path = image.parents[2] / "weight_dir" / image.parent.name / (image.stem + ".npy")
            results["gt_seg_weight"] = np.load(path).astype(np.float32)
            results["seg_fields"].append("gt_seg_weight")
            return results

    @TRANSFORMS.register_module(force=True)
    class PackSegInputsWithWeight(PackSegInputs):
        def transform(self, results):
            packed = super().transform(results)
            weight = np.ascontiguousarray(results["gt_seg_weight"])
            packed["data_samples"].gt_seg_weight = PixelData(data=torch.from_numpy(weight)[None])
            return packed

    def seg_weight(batch_data_samples):
        if not all("gt_seg_weight" in s for s in batch_data_samples):
            return None
        return torch.stack([s.gt_seg_weight.data for s in batch_data_samples]).squeeze(1)

    def labels_and_logits(head, seg_logits, batch_data_samples):
        """The stacked labels [B, 1, H, W] and the logits resized to them, as BaseDecodeHead.loss_by_feat does."""
        seg_label = head._stack_batch_gt(batch_data_samples)
        return seg_label, resize(seg_logits, size=seg_label.shape[2:], mode="bilinear",
                                 align_corners=head.align_corners)

    @MODELS.register_module(force=True)
    class WeightedFCNHead(FCNHead):
        """FCNHead whose loss_by_feat weights each pixel by the samples' gt_seg_weight."""

        def loss_by_feat(self, seg_logits, batch_data_samples):
            seg_label, seg_logits = labels_and_logits(self, seg_logits, batch_data_samples)
            weight = seg_weight(batch_data_samples)
            if self.sampler is not None:
                sampled = self.sampler.sample(seg_logits, seg_label)
                weight = sampled if weight is None else weight * sampled
            seg_label = seg_label.squeeze(1)
            losses = self.loss_decode if isinstance(self.loss_decode, nn.ModuleList) else [self.loss_decode]
            loss = {}
            for loss_decode in losses:
                value = loss_decode(seg_logits, seg_label, weight=weight, ignore_index=self.ignore_index)
                loss[loss_decode.loss_name] = loss.get(loss_decode.loss_name, 0) + value
            loss["acc_seg"] = accuracy(seg_logits, seg_label, ignore_index=self.ignore_index)
            return loss

    @MODELS.register_module(force=True)
    class MeanTeacherEncoderDecoder(EncoderDecoder):
        """Self-training with a mean teacher, as the DAFormer family does it: before each
        training step the teacher (an exponential moving average of this model, `ema` per
        step, started from the loaded weights) labels the batch's target images - its argmax
        replaces `gt_sem_seg`, its confidence `gt_seg_weight` (each pixel's max softmax
        probability, or with weight="daformer" DAFormer's per-image fraction) - and the model
        learns from them with its own head's loss. The teacher sees the same (flipped) images
        and is not a submodule: no optimiser, no checkpoint. No mixing (ClassMix) or
        colour augmentation of the student's input."""

        def __init__(self, *args, ema: float = 0.99, weight: str = "softmax", **kwargs):
            super().__init__(*args, **kwargs)
            self.ema, self.weight = ema, weight
            self.__dict__["teacher"] = None

        @torch.no_grad()
        def update_teacher(self):
            if self.teacher is None:  # first step: the loaded weights
                self.__dict__["teacher"] = copy.deepcopy(self).eval()
                return
            student = dict(self.named_parameters()) | dict(self.named_buffers())
            for name, value in [*self.teacher.named_parameters(), *self.teacher.named_buffers()]:
                if value.dtype.is_floating_point:
                    value.mul_(self.ema).add_(student[name].detach(), alpha=1 - self.ema)
                else:
                    value.copy_(student[name])

        def loss(self, inputs, data_samples):
            self.update_teacher()
            with torch.no_grad():
                logits = self.teacher.encode_decode(inputs, [s.metainfo for s in data_samples])
                confidence, pseudo = logits.float().softmax(1).max(1)
                if self.weight == "daformer":
                    confidence = pseudo_weight_daformer(confidence)
            for sample, label, weight in zip(data_samples, pseudo, confidence):
                if is_target(sample.img_path):  # source images keep their labels, weight 1
                    sample.gt_sem_seg = PixelData(data=label[None])
                    sample.gt_seg_weight = PixelData(data=weight[None])
            return super().loss(inputs, data_samples)

    @MODELS.register_module(force=True)
    class WeightedRewardFCNHead(RewardFCNHead):
        """The patched RewardFCNHead, handed the samples' gt_seg_weight as seg_weight."""

        def loss_by_feat(self, seg_logits, batch_data_samples):
            seg_label, seg_logits = labels_and_logits(self, seg_logits, batch_data_samples)
            return self.reward_losses(seg_logits, seg_label, seg_weight(batch_data_samples))
