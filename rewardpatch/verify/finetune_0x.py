"""Stage 2 of verify on MMSeg 0.x: the fine-tune of finetune.py with mmcv-full 1.x's runner.

The same model (a narrow ResNetV1c-18 EncoderDecoder), dataset (verify/synthetic.py, read
by 0.x's CustomDataset and pipeline), phases and result as finetune.py's: cross-entropy
iterations that save a checkpoint, then reward iterations that load it, with MMSeg's own
evaluation (EvalHook / DistEvalHook: the dataset's mIoU) before and after.

The runner is built as mmseg.apis.train_segmentor builds it (IterBasedRunner, its
training hooks, the eval hook at priority LOW), with two differences: the model wrapper,
because train_segmentor's distributed wrapper needs CUDA (see _wrap), and the checkpoint
to start from, which goes through rewardpatch.checkpoints as in finetune.py (mmcv 1.7's
load_checkpoint calls torch.load without weights_only, so torch >= 2.6 loads it
weights-only).

Releases before 0.24 build the optimizer with mmcv.runner's build_optimizer (mmseg.core has
its own from 0.24), and before 0.20 they evaluate from whole predictions: no `pre_eval`
(progressive per-image statistics) in single_gpu_test, the eval hooks or dataset.evaluate.
Both are read from the tree at run time, never from its version.
"""

from __future__ import annotations

import inspect
import math
import os
from pathlib import Path

from .events import EventWriter
from .finetune import CE_LOSS, IMAGE_SIZE, MEAN, STD, Phase, backbone_config, head_config, record_iter, run_finetune

BATCH_SIZE = 4


def model_config(head_type: str, head_args: dict, loss: dict) -> dict:
    """finetune.py's EncoderDecoder, in 0.x's form: normalisation lives in the pipeline."""
    return dict(
        type="EncoderDecoder", pretrained=None, backbone=backbone_config(),
        decode_head=head_config(head_type, head_args, loss, None),
        train_cfg=dict(), test_cfg=dict(mode="whole"),
    )


def _dataset(data_root: Path, metainfo: dict, split: str) -> dict:
    normalize = dict(type="Normalize", mean=MEAN, std=STD, to_rgb=True)
    if split == "train":
        pipeline = [
            dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), dict(type="RandomFlip", prob=0.5),
            normalize, dict(type="DefaultFormatBundle"), dict(type="Collect", keys=["img", "gt_semantic_seg"]),
        ]
    else:
        pipeline = [
            dict(type="LoadImageFromFile"),
            dict(type="MultiScaleFlipAug", img_scale=(IMAGE_SIZE, IMAGE_SIZE), flip=False, transforms=[
                dict(type="Resize", keep_ratio=True), dict(type="RandomFlip"), normalize,
                dict(type="ImageToTensor", keys=["img"]), dict(type="Collect", keys=["img"]),
            ]),
        ]
    return dict(
        type="CustomDataset", data_root=str(data_root), img_dir=f"img_dir/{split}", ann_dir=f"ann_dir/{split}",
        img_suffix=".png", seg_map_suffix=".png", classes=metainfo["classes"], palette=metainfo["palette"],
        pipeline=pipeline,
    )


def _loader(dataset, distributed: bool, train: bool, seed: int = 0):
    from mmseg.datasets import build_dataloader

    # no worker processes: 64-pixel images, and nothing to tear down (persistent_workers
    # needs workers); pinned memory only helps a GPU
    return build_dataloader(
        dataset, samples_per_gpu=BATCH_SIZE if train else 1, workers_per_gpu=0, dist=distributed,
        shuffle=train, seed=seed, drop_last=train, pin_memory=False, persistent_workers=False,
    )


def _distributed_wrapper():
    """torch's DDP with mmcv's runner API, on CPU and CUDA alike.

    mmcv 1.7's MMDistributedDataParallel unwraps DataContainers only when it has device
    ids, and its forward uses DDP internals that torch 2.x no longer has
    (_replicated_tensor_module). This one unwraps them (to the device, or kept on the CPU)
    and then runs torch's own forward, so gradients are reduced by torch's reducer; its
    train_step is mmseg 0.x's BaseSegmentor.train_step, with the forward through DDP."""
    from mmcv.parallel import scatter_kwargs
    from torch.nn.parallel import DistributedDataParallel

    class DataContainerDDP(DistributedDataParallel):
        def forward(self, *inputs, **kwargs):
            inputs, kwargs = scatter_kwargs(inputs, kwargs, self.device_ids or [-1], dim=0)
            return super().forward(*inputs[0], **kwargs[0])

        def train_step(self, data_batch, optimizer=None, **kwargs):
            losses = self(**data_batch)
            loss, log_vars = self.module._parse_losses(losses)
            return dict(loss=loss, log_vars=log_vars, num_samples=len(data_batch["img_metas"].data[0]))

    return DataContainerDDP


def _wrap(model, device: str, distributed: bool):
    """train_segmentor's wrappers, except for DDP (see _distributed_wrapper): its build_ddp
    accepts CUDA only and calls model.cuda()."""
    from mmcv.parallel import MMDataParallel

    if distributed:
        if device == "cuda":
            rank = int(os.environ.get("LOCAL_RANK", "0"))
            return _distributed_wrapper()(model.cuda(), device_ids=[rank], broadcast_buffers=False)
        return _distributed_wrapper()(model, device_ids=None, broadcast_buffers=False)
    if device == "cuda":
        return MMDataParallel(model.cuda(), device_ids=[0])
    # no device ids: MMDataParallel scatters to the CPU ([-1]) and runs the module there
    if _cpu_scatter_adds_a_dimension():
        return _cpu_wrapper()(model, device_ids=None)
    return MMDataParallel(model, device_ids=None)


def _cpu_scatter_adds_a_dimension() -> bool:
    """Whether this mmcv-full scatters a batch to the CPU with an extra leading dimension: its
    CPU scatter was written for one image at a time (mmcv-full < 1.4, e.g. DAFormer's 1.3.7,
    whose own training runs on GPUs only), so MMDataParallel cannot train on the CPU there."""
    import torch
    from mmcv.parallel._functions import Scatter

    return Scatter.forward([-1], [torch.zeros(2)])[0].dim() == 2


def _unwrapped(value):
    """`value` with every DataContainer replaced by its data for the one device: the whole batch."""
    from mmcv.parallel import DataContainer

    if isinstance(value, DataContainer):
        return value.data[0]
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrapped(item) for item in value)
    if isinstance(value, dict):
        return {key: _unwrapped(item) for key, item in value.items()}
    return value


def _cpu_wrapper():
    """MMDataParallel on the CPU for such an mmcv-full: the DataContainers of a batch are
    unwrapped as its GPU path unwraps them, with no dimension added."""
    from mmcv.parallel import MMDataParallel

    class CPUDataParallel(MMDataParallel):
        def scatter(self, inputs, kwargs, device_ids):
            return (_unwrapped(tuple(inputs)),), (_unwrapped(dict(kwargs or {})),)

    return CPUDataParallel


def _pre_eval() -> dict:
    """{'pre_eval': True} where the tree's tests and eval hooks take it (MMSeg >= 0.20: each
    image's statistics as it goes), else {} (whole predictions, evaluated at the end)."""
    from mmseg.apis import single_gpu_test

    return {"pre_eval": True} if "pre_eval" in inspect.signature(single_gpu_test).parameters else {}


def _build_optimizer(model, config: dict):
    """The optimizer builder train_segmentor uses: mmseg.core's (MMSeg >= 0.24), else mmcv's."""
    import mmseg.core
    from mmcv.runner import build_optimizer

    return getattr(mmseg.core, "build_optimizer", build_optimizer)(model, config)


def _evaluate(model, loader, distributed: bool, tmpdir: Path) -> float | None:
    """MMSeg's mIoU (%) of `model` on `loader`'s dataset, as its eval hooks compute it; rank 0
    gets the number, other ranks None."""
    import torch.distributed as dist
    from mmseg.apis import multi_gpu_test, single_gpu_test

    if distributed:
        # results are gathered through files in tmpdir: no CUDA tensor involved
        results = multi_gpu_test(model, loader, tmpdir=str(tmpdir), **_pre_eval())
        if dist.get_rank() != 0:
            return None
    else:
        results = single_gpu_test(model, loader, **_pre_eval())
    return round(float(loader.dataset.evaluate(results, metric="mIoU")["mIoU"]) * 100, 2)


def make_probe(events: EventWriter, phase: str, offset: int, record: dict, distributed: bool,
               val_loader=None):
    """finetune.py's probe as an mmcv Hook: progress, losses, reward statistics, mIoU.
    With `val_loader`, the model (its checkpoint loaded) is evaluated once before training."""
    from mmcv.runner import Hook

    class FinetuneProbe(Hook):
        def before_run(self, runner):
            if val_loader is not None:
                miou = _evaluate(runner.model, val_loader, distributed, Path(runner.work_dir) / ".eval_before")
                if miou is not None:
                    record["miou_before"] = miou

        def after_train_iter(self, runner):
            # mmseg's _parse_losses: floats, the total under 'loss', the others as the heads
            # named them, prefixed ('decode.reward_mean')
            record_iter(record, phase, runner.iter + 1, runner.outputs["log_vars"])
            events.emit("iter", phase=phase, iter=offset + runner.iter + 1)

    return FinetuneProbe()


def recording_eval_hook(base, record: dict):
    """mmseg's EvalHook or DistEvalHook that also keeps each mIoU (%) in record['val']."""

    class RecordingEvalHook(base):
        def evaluate(self, runner, results):
            # runs where the dataset is evaluated (rank 0); the metrics, as fractions, have
            # just been written to the log buffer
            score = super().evaluate(runner, results)
            if "mIoU" in runner.log_buffer.output:
                record.setdefault("val", []).append(
                    (runner.iter + 1, round(float(runner.log_buffer.output["mIoU"]) * 100, 2))
                )
            return score

    return RecordingEvalHook


def _train(phase: Phase, workdir: Path, model_cfg: dict, data_root: Path, metainfo: dict, device: str,
           distributed: bool, events: EventWriter, seed: int = 0):
    """Build and run an IterBasedRunner for `phase` as train_segmentor does; the runner."""
    import torch.distributed as dist
    from mmcv import ConfigDict
    from mmcv.runner import IterBasedRunner
    from mmseg.apis import set_random_seed
    from mmseg.core import DistEvalHook, EvalHook
    from mmseg.datasets import RepeatDataset, build_dataset
    from mmseg.models import build_segmentor
    from mmseg.utils import get_root_logger

    set_random_seed(seed)
    work_dir = workdir / phase.name
    work_dir.mkdir(parents=True, exist_ok=True)
    # a ConfigDict, as from a config file: mmseg reads test_cfg.mode as an attribute
    model = build_segmentor(ConfigDict(model_cfg))
    model.init_weights()
    train_set = build_dataset(_dataset(data_root, metainfo, "train"))
    # mmcv's IterLoader sleeps 2 s at every pass over the data ("prevent possible deadlock");
    # repeated, as MMSeg 0.x's own configs repeat small datasets, one pass covers the run
    world = dist.get_world_size() if distributed else 1
    train_set = RepeatDataset(train_set, math.ceil(phase.iters * BATCH_SIZE * world / len(train_set)) + 1)
    model.CLASSES, model.PALETTE = train_set.CLASSES, train_set.PALETTE
    model = _wrap(model, device, distributed)
    optimizer = _build_optimizer(model, dict(type="SGD", lr=phase.lr, momentum=0.9, weight_decay=1e-4))
    runner = IterBasedRunner(model=model, optimizer=optimizer, work_dir=str(work_dir),
                             logger=get_root_logger(log_level="WARNING"), max_iters=phase.iters)
    runner.timestamp = f"{phase.name}_{os.getpid()}"
    lr_config = None if phase.reward else dict(policy="poly", power=0.9, min_lr=1e-4, by_epoch=False)
    runner.register_training_hooks(
        lr_config, dict(grad_clip=None), dict(by_epoch=False, interval=phase.iters),
        dict(interval=1, hooks=[dict(type="TextLoggerHook", by_epoch=False)]),
    )
    val_loader = _loader(build_dataset(_dataset(data_root, metainfo, "val"), dict(test_mode=True)),
                         distributed, train=False)
    eval_hook = recording_eval_hook(DistEvalHook if distributed else EvalHook, phase.record)
    runner.register_hook(eval_hook(val_loader, by_epoch=False, interval=phase.val_interval, metric="mIoU",
                                   **_pre_eval()), priority="LOW")
    val_first = val_loader if phase.reward else None
    runner.register_hook(make_probe(events, phase.name, phase.offset, phase.record, distributed, val_first),
                         priority="LOW")
    if phase.load_from:
        runner.load_checkpoint(phase.load_from)
    runner.run([_loader(train_set, distributed, train=True, seed=seed)], [("train", 1)])
    return runner


def finetune(
    workdir: Path, head: str, head_args: dict, ce_iters: int, iters: int, device: str,
    distributed: bool, events: EventWriter,
) -> dict:
    """Stage 2 on MMSeg 0.x: each phase is an mmcv IterBasedRunner."""

    def train(phase: Phase, data_root: Path, metainfo: dict):
        runner = _train(phase, workdir, model_config(phase.head_type, head_args, CE_LOSS), data_root, metainfo,
                        device, distributed, events)
        return runner.model.module

    return run_finetune(workdir, head, ce_iters, iters, distributed, train)
