"""Stage 2 of verify: a short reward fine-tune with the real stack.

An mmengine Runner trains a real MMSeg EncoderDecoder (a ResNetV1c-18 of narrow width)
on a synthetic dataset written to disk and read by MMSeg's own pipeline: first a few
cross-entropy iterations that save a checkpoint, then reward iterations that start from
that checkpoint, with MMSeg's IoUMetric evaluated before and after.

mmengine saves checkpoints with pickled objects (message hub, meta), which torch >= 2.6
refuses to load with its default weights_only=True. The fine-tune converts its own,
just-written checkpoint to a weights-only file and loads that: the path users should take
with their checkpoints too, and one that keeps torch's check on.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..naming import reward_name
from .events import EventWriter
from .synthetic import classes, write_dataset

NUM_CLASSES = 4
IMAGE_SIZE = 64
CE_LR = 0.05
REWARD_LR = 0.01
MIOU_TOLERANCE = 5.0  # mIoU points the reward phase may lose on 8 validation images
# both phases train with the same loss: the reward head turns it into its reward loss
CE_LOSS = dict(type="CrossEntropyLoss", loss_weight=1.0)


# ImageNet's, in RGB order: both generations normalise the synthetic images with them
MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


def backbone_config() -> dict:
    """A narrow ResNetV1c-18 of output stride 8 with one 128-channel output (both generations)."""
    return dict(
        type="ResNetV1c", depth=18, stem_channels=16, base_channels=16, out_indices=(3,),
        dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1), norm_cfg=dict(type="BN", requires_grad=True),
        norm_eval=False, contract_dilation=True,
    )


def head_config(head_type: str, head_args: dict, loss: dict, reward_cfg: dict | None,
                num_classes: int = NUM_CLASSES) -> dict:
    """The decode head on backbone_config's output (both generations)."""
    head = dict(
        type=head_type, in_channels=128, channels=32, num_classes=num_classes, dropout_ratio=0.0,
        norm_cfg=dict(type="BN", requires_grad=True), align_corners=False, loss_decode=loss, **head_args,
    )
    if reward_cfg is not None:
        head["reward_cfg"] = reward_cfg
    return head


def model_config(head_type: str, head_args: dict, loss: dict, reward_cfg: dict | None,
                 num_classes: int = NUM_CLASSES, image_size: int = IMAGE_SIZE) -> dict:
    """An EncoderDecoder: a narrow ResNetV1c-18 (output stride 8) and the given head."""
    return dict(
        type="EncoderDecoder",
        data_preprocessor=dict(
            type="SegDataPreProcessor", mean=MEAN, std=STD,
            bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=(image_size, image_size),
        ),
        backbone=backbone_config(),
        decode_head=head_config(head_type, head_args, loss, reward_cfg, num_classes),
        train_cfg=dict(),
        test_cfg=dict(mode="whole"),
    )


def _dataloader(data_root: str, metainfo: dict, split: str, batch_size: int) -> dict:
    pipeline: list[dict[str, object]] = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations")]
    if split == "train":
        pipeline.append(dict(type="RandomFlip", prob=0.5))
    pipeline.append(dict(type="PackSegInputs"))
    sampler = (
        dict(type="InfiniteSampler", shuffle=True) if split == "train" else dict(type="DefaultSampler", shuffle=False)
    )
    return dict(
        batch_size=batch_size, num_workers=0, sampler=sampler,
        dataset=dict(
            type="BaseSegDataset", data_root=data_root, metainfo=metainfo, img_suffix=".png",
            seg_map_suffix=".png", pipeline=pipeline,
            data_prefix=dict(img_path=f"img_dir/{split}", seg_map_path=f"ann_dir/{split}"),
        ),
    )


def runner_config(
    name: str, work_dir: Path, model: dict, data_root: str, metainfo: dict, iters: int, lr: float,
    distributed: bool, device: str, load_from: str | None = None, schedule: bool = True,
    val_interval: int | None = None, batch_size: int = 4, seed: int = 0,
) -> dict:
    """A Runner config: SGD, poly decay (or constant LR), IoUMetric, a checkpoint at the end."""
    scheduler = [dict(type="PolyLR", eta_min=1e-4, power=0.9, begin=0, end=iters, by_epoch=False)] if schedule else []
    config = dict(
        experiment_name=f"{name}_{os.getpid()}",
        work_dir=str(work_dir),
        model=model,
        train_dataloader=_dataloader(data_root, metainfo, "train", batch_size=batch_size),
        val_dataloader=_dataloader(data_root, metainfo, "val", batch_size=1),
        val_evaluator=dict(type="IoUMetric", iou_metrics=["mIoU"]),
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=iters, val_interval=val_interval or iters),
        val_cfg=dict(type="ValLoop"),
        optim_wrapper=dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=lr, momentum=0.9, weight_decay=1e-4)),
        param_scheduler=scheduler,
        default_hooks=dict(
            timer=dict(type="IterTimerHook"),
            logger=dict(type="LoggerHook", interval=1, log_metric_by_epoch=False),
            param_scheduler=dict(type="ParamSchedulerHook"),
            checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=iters),
            sampler_seed=dict(type="DistSamplerSeedHook"),
        ),
        log_processor=dict(by_epoch=False),
        visualizer=dict(
            type="SegLocalVisualizer",
            name=f"{name}_visualizer_{os.getpid()}",
            vis_backends=[dict(type="LocalVisBackend")],
        ),
        env_cfg=dict(
            cudnn_benchmark=False,
            mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
            dist_cfg=dict(backend="nccl" if device == "cuda" else "gloo"),
        ),
        randomness=dict(seed=seed),
        launcher="pytorch" if distributed else "none",
        default_scope="mmseg",
        load_from=load_from,
        log_level="WARNING",
    )
    if distributed and device == "cpu":
        # mmengine's default wrapper passes a CUDA device id; on CPU DDP takes none
        config["model_wrapper_cfg"] = dict(type="MMDistributedDataParallel", device_ids=None)
    return config


def record_iter(record: dict, phase: str, iteration: int, log_vars: dict) -> None:
    """Keep an iteration's total loss and reward statistics; note any loss that is not finite.
    `log_vars`: the logged values (tensors or floats), keys possibly prefixed ('decode.')."""
    for key, value in log_vars.items():
        value = float(value.detach()) if hasattr(value, "detach") else float(value)
        if "loss" in key and not math.isfinite(value):
            record.setdefault("nonfinite", []).append(f"{phase} iter {iteration}: {key}={value}")
        if key.endswith(("reward_mean", "reward_greedy", "adv_std")):
            record.setdefault(key.rsplit(".", 1)[-1], []).append(value)
    loss = log_vars.get("loss", float("nan"))
    record.setdefault("loss", []).append(float(loss.detach()) if hasattr(loss, "detach") else float(loss))


def prepare_dataset(workdir: Path, distributed: bool) -> tuple[Path, dict]:
    """The synthetic dataset under workdir/data, written once by rank 0; (root, metainfo)."""
    import torch.distributed as dist

    data_root = workdir / "data"
    if (not distributed or dist.get_rank() == 0) and not (data_root / "ann_dir").exists():
        write_dataset(data_root, num_classes=NUM_CLASSES, size=IMAGE_SIZE, seed=0)
    if distributed:
        dist.barrier()
    names, palette = classes(NUM_CLASSES)
    return data_root, dict(classes=names, palette=palette)


def weights_only_load_from(saved: Path, distributed: bool, result: dict) -> str | None:
    """The checkpoint the reward phase loads: `saved`, or a weights-only copy beside it when
    torch would refuse `saved` by default. None (with result['error']) if neither loads."""
    import torch.distributed as dist

    from rewardpatch.checkpoints import check_weights_only, convert_to_weights_only, loads_weights_only

    # our own file, just written by the runner: converting it needs the unrestricted load
    weights_only = saved.parent / "weights_only.pth"
    if not check_weights_only(saved).checked:  # torch < 1.13: its load_from loads any checkpoint
        result["checkpoint_loads_weights_only"] = None
        result["load_from"] = str(saved)
        return str(saved)
    result["checkpoint_loads_weights_only"] = loads_weights_only(saved) is True
    if (not distributed or dist.get_rank() == 0) and not result["checkpoint_loads_weights_only"]:
        convert_to_weights_only(saved, weights_only)
    if distributed:
        dist.barrier()
    load_from = str(weights_only) if weights_only.exists() else str(saved)
    result["load_from"] = load_from
    if loads_weights_only(load_from) is not True:
        result["error"] = f"{load_from} does not load with torch.load(weights_only=True)"
        return None
    return load_from


def conclude(result: dict, ce_record: dict, reward_record: dict) -> dict:
    """The curves and the verdict from the two phases' records (both generations).

    A record holds 'loss', 'reward_mean', ... per iteration (record_iter), 'nonfinite',
    'miou_before' and 'val': (iteration, mIoU in %) per evaluation."""
    result["dataset_miou_before"] = reward_record.get("miou_before")
    result["dataset_miou_after"] = reward_record.get("val", [(None, None)])[-1][1]
    result["miou_curve"] = [[0, result["dataset_miou_before"]]] + [list(p) for p in reward_record.get("val", [])]
    rewards = reward_record.get("reward_mean", [])
    result["reward_mean_first"] = rewards[0] if rewards else None
    result["reward_mean_last"] = rewards[-1] if rewards else None
    result["reward_mean"] = rewards
    result["reward_greedy"] = reward_record.get("reward_greedy", [])
    result["ce_loss"] = ce_record.get("loss", [])
    result["reward_loss"] = reward_record.get("loss", [])
    failures = list(ce_record.get("nonfinite", [])) + list(reward_record.get("nonfinite", []))
    if not rewards:
        failures.append("no reward statistics were logged")
    before, after = result["dataset_miou_before"], result["dataset_miou_after"]
    if before is None or after is None:
        failures.append("mIoU was not evaluated before and after")
    elif after < before - MIOU_TOLERANCE:
        failures.append(
            f"dataset mIoU fell from {before:.2f} to {after:.2f} (more than the {MIOU_TOLERANCE} points allowed)"
        )
    result["ok"] = not failures
    result["error"] = "; ".join(failures) or None
    return result


def make_probe(events: EventWriter, phase: str, offset: int, record: dict, validate_first: bool = False):
    """A hook that reports progress, checks every loss, keeps reward statistics and metrics."""
    from mmengine.hooks import Hook

    class FinetuneProbe(Hook):
        """Reports progress, checks every loss, keeps reward statistics and metrics."""

        priority = "LOW"

        def before_train(self, runner):
            if validate_first:
                record["miou_before"] = float(runner.val_loop.run()["mIoU"])

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            record_iter(record, phase, runner.iter + 1, outputs or {})
            events.emit("iter", phase=phase, iter=offset + runner.iter + 1)

        def after_val_epoch(self, runner, metrics=None):
            if metrics and "mIoU" in metrics:
                record.setdefault("val", []).append((runner.iter, float(metrics["mIoU"])))

    return FinetuneProbe()


@dataclass(frozen=True)
class Phase:
    """One phase of the fine-tune, as each generation's runner trains it."""

    name: str  # 'ce' or 'reward': the work sub-directory and the events' phase
    head_type: str
    lr: float
    iters: int
    offset: int  # iterations before this phase, for the progress events
    record: dict  # filled by the phase's probe: losses, reward statistics, mIoU
    load_from: str | None = None  # the CE checkpoint, for the reward phase

    @property
    def reward(self) -> bool:
        """The reward phase: constant LR, mIoU before training and at every quarter."""
        return self.load_from is not None

    @property
    def val_interval(self) -> int:
        return max(1, self.iters // 4) if self.reward else self.iters


def run_finetune(workdir: Path, head: str, ce_iters: int, iters: int, distributed: bool,
                 train: Callable[[Phase, Path, dict], Any]) -> dict:  # -> the trained model (torch's: Any)
    """Stage 2 in every MMSeg generation: CE, its checkpoint made weights-only, reward, verdict.

    `train(phase, data_root, metainfo)` trains one phase with the generation's own runner
    and returns the trained model (unwrapped)."""
    import torch.distributed as dist

    data_root, metainfo = prepare_dataset(workdir, distributed)
    start = time.perf_counter()
    result = {"ok": False, "head": reward_name(head), "ce_iters": ce_iters, "iters": iters,
              "miou_tolerance": MIOU_TOLERANCE, "world_size": dist.get_world_size() if distributed else 1}

    ce_record: dict = {}
    train(Phase("ce", head, CE_LR, ce_iters, 0, ce_record), data_root, metainfo)
    saved = workdir / "ce" / f"iter_{ce_iters}.pth"
    result["checkpoint"] = str(saved)
    result["miou_ce"] = ce_record.get("val", [(None, None)])[-1][1]
    if distributed:
        dist.barrier()
    load_from = weights_only_load_from(saved, distributed, result)
    if load_from is None:
        return result

    reward_record: dict = {}
    # a config that only swaps the head's type: its CrossEntropyLoss becomes the reward
    # loss, with the default reward_cfg
    model = train(Phase("reward", reward_name(head), REWARD_LR, iters, ce_iters, reward_record, load_from),
                  data_root, metainfo)
    result["reward_cfg"] = dict(model.decode_head.reward_cfg)
    result["seconds"] = round(time.perf_counter() - start, 2)
    result["device"] = str(next(model.parameters()).device)
    return conclude(result, ce_record, reward_record)


def finetune(
    workdir: Path, head: str, head_args: dict, ce_iters: int, iters: int, device: str,
    distributed: bool, events: EventWriter,
) -> dict:
    """Stage 2 on MMSeg 1.x: each phase is an mmengine Runner."""

    def train(phase: Phase, data_root: Path, metainfo: dict):
        from mmengine.model import is_model_wrapper
        from mmengine.runner import Runner

        model = model_config(phase.head_type, head_args, CE_LOSS, None)
        runner = Runner.from_cfg(_cfg(runner_config(
            phase.name, workdir / phase.name, model, str(data_root), metainfo, phase.iters, phase.lr,
            distributed, device, load_from=phase.load_from, schedule=not phase.reward,
            val_interval=phase.val_interval,
        )))
        runner.register_hook(make_probe(events, phase.name, phase.offset, phase.record, validate_first=phase.reward))
        runner.train()
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    return run_finetune(workdir, head, ce_iters, iters, distributed, train)


def _cfg(config: dict):
    from mmengine.config import Config

    return Config(config)
