"""Run by torchrun (2 CPU processes, gloo): the reward head under DistributedDataParallel.

argv: TREE OUT_JSON [POLICY]: POLICY is the estimator's device policy, 'cpu' (the default)
or 'gpu' (forced on these CPU tensors). Two parts, reported by rank 0:

1. Pooling. For each scope, every rank generates every rank's features, labels and
   label samples (seeded), so each can also compute, alone, one process's result on the
   concatenated batch. The sampler is fixed to those samples; each rank then computes
   its own batch's loss through DDP. The scored counts must equal the single-process
   counts of the concatenated batch, and the DDP-averaged parameter gradients its
   gradients. Scope 'dataset' runs two steps, so the second scores the history too.
2. Training. A few SGD steps with the default reward_cfg (scope 'dataset') and real
   sampling: the parameters move and stay equal on every rank, and so does the history
   after every step (DDP broadcasts rank 0's buffers before each forward; the update
   after it must agree too, being computed from all-reduced counts).

The worker ends with os._exit after a barrier and destroy_process_group: interpreter
teardown under load can abort a gloo process ("terminate called without an active
exception") after its work is done, and nothing after the report needs it.
"""

import copy
import json
import os
import sys
from typing import Any, Dict, List

tree, out = sys.argv[1], sys.argv[2]
sys.path.insert(0, tree)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from mmengine.structures import PixelData  # noqa: E402

import mmseg.models  # noqa: E402,F401
import mmseg.models.losses.reward_device as reward_device  # noqa: E402
import mmseg.models.losses.reward_estimator as estimator  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402

CLASSES, BATCH, SIZE = 4, 2, 16
# for the whole run, which ends with os._exit
reward_device.device_policy(sys.argv[3] if len(sys.argv) > 3 else "cpu").__enter__()

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()


def build(reward_cfg):
    torch.manual_seed(0)  # the same initial weights on every rank
    head = MODELS.build(dict(
        type="RewardFCNHead", in_channels=8, channels=8, num_convs=1, num_classes=CLASSES, dropout_ratio=0.0,
        loss_decode=dict(type="CrossEntropyRewardLoss"), reward_cfg=reward_cfg,
    ))
    head.init_weights()
    return head


def data_samples(labels):
    samples = []
    for label in labels:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=label[None])
        samples.append(sample)
    return samples


def batch_of(source_rank, step):
    """Features, labels and one label sample for `source_rank`'s batch at `step`."""
    generator = torch.Generator().manual_seed(1000 * step + source_rank)
    features = torch.randn(BATCH, 8, SIZE // 2, SIZE // 2, generator=generator)
    labels = torch.randint(0, CLASSES, (BATCH, SIZE, SIZE), generator=generator)
    labels[torch.rand(labels.shape, generator=generator) < 0.2] = 255
    drawn = torch.randint(0, CLASSES, (1, BATCH, SIZE, SIZE), generator=generator)
    return features, labels, drawn


fixed = {}


def fixed_samples(flat, num_samples, temperature, peak, probs=None):
    if probs is not None:
        probs.copy_(torch.softmax(flat.float() / temperature, 1))
    return fixed["samples"].reshape(1, flat.shape[0], -1)


scored_by: Dict[str, List[Any]] = {}
original_score = estimator.RewardEstimator._score


def recording_score(self, tables):
    result = original_score(self, tables)
    scored_by.setdefault(self.tag, []).append(result[0].clone())
    return result


def single_process_world():
    return 1


def gradients(module):
    return torch.cat([p.grad.flatten() for p in module.parameters()])


real_sample_labels = estimator.sample_labels
estimator.sample_labels = fixed_samples
estimator.RewardEstimator._score = recording_score
pooling = {}
for scope in ("image", "batch", "dataset"):
    head = build(dict(scope=scope))
    alone = copy.deepcopy(head)
    head.reward_estimator.tag, alone.reward_estimator.tag = "ddp", "alone"
    model = torch.nn.parallel.DistributedDataParallel(head)
    report: Dict[str, List[Any]] = {"counts_equal": [], "max_grad_difference": [], "grad_norm": []}
    for step in range(2 if scope == "dataset" else 1):
        features, labels, drawn = batch_of(rank, step)
        fixed["samples"] = drawn
        model.zero_grad()
        logits = model([features])
        model.module.loss_by_feat(logits, data_samples(labels))["loss_ce_reward"].backward()
        ddp_grad = gradients(model.module)

        everyone = [batch_of(r, step) for r in range(world)]
        fixed["samples"] = torch.cat([b[2] for b in everyone], dim=1)
        all_features = torch.cat([b[0] for b in everyone])
        all_labels = torch.cat([b[1] for b in everyone])
        estimator._world_size, saved = single_process_world, estimator._world_size
        alone.zero_grad()
        alone.loss_by_feat(alone([all_features]), data_samples(all_labels))["loss_ce_reward"].backward()
        estimator._world_size = saved
        alone_grad = gradients(alone)

        ddp_counts, alone_counts = scored_by["ddp"][-1], scored_by["alone"][-1]
        if scope == "image":  # each rank scores its own images: compare them with theirs
            alone_counts = alone_counts[:, rank * BATCH:(rank + 1) * BATCH]
        report["counts_equal"].append(torch.equal(ddp_counts, alone_counts))
        report["max_grad_difference"].append(float((ddp_grad - alone_grad).abs().max()))
        report["grad_norm"].append(float(alone_grad.norm()))
    pooling[scope] = report

estimator.sample_labels = real_sample_labels  # real sampling again, for the training part
estimator.RewardEstimator._score = original_score
head = build(None)
model = torch.nn.parallel.DistributedDataParallel(head)
initial = torch.cat([p.detach().flatten() for p in model.parameters()]).clone()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
torch.manual_seed(100 + rank)  # each rank its own data and its own samples
losses: List[float] = []
histories = []
for _ in range(4):
    features, labels, _ = batch_of(rank, 10 + len(losses))
    optimizer.zero_grad()
    # the forward goes through DDP so that its gradient hooks all-reduce
    loss = model.module.loss_by_feat(model([features]), data_samples(labels))["loss_ce_reward"]
    loss.backward()
    optimizer.step()
    losses.append(float(loss.detach()))
    histories.append(model.module.reward_estimator.history.clone())

flat = torch.cat([p.detach().flatten() for p in model.parameters()])
gathered = [torch.zeros_like(flat) for _ in range(world)]
dist.all_gather(gathered, flat)
all_losses = [None] * world
dist.all_gather_object(all_losses, losses)
histories = torch.stack(histories)
all_histories = [torch.zeros_like(histories) for _ in range(world)]
dist.all_gather(all_histories, histories)
if rank == 0:
    with open(out, "w") as handle:
        json.dump({
            "world_size": world,
            "pooling": pooling,
            "losses": all_losses,
            "parameters_agree": all(torch.equal(gathered[0], g) for g in gathered),
            "moved": not torch.equal(flat, initial),
            "history_dtype": str(histories.dtype),
            "history_agrees": all(torch.equal(all_histories[0], h) for h in all_histories),
            "history_grows": all(bool(histories[i + 1].sum() > histories[i].sum())
                                 for i in range(len(histories) - 1)),
        }, handle)
        handle.flush()
        os.fsync(handle.fileno())
dist.barrier()
dist.destroy_process_group()
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
