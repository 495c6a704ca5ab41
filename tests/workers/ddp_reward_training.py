"""Run by torchrun (2 CPU processes, gloo): a reward head trains under DistributedDataParallel.

argv: TREE OUT_JSON. Each rank trains on its own data; the result records every rank's
losses and whether the parameters agree across ranks after the steps.
"""

import json
import sys

tree, out = sys.argv[1], sys.argv[2]
sys.path.insert(0, tree)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from mmengine.structures import PixelData  # noqa: E402

import mmseg.models  # noqa: E402,F401
from mmseg.registry import MODELS  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)  # the same initial weights on every rank
head = MODELS.build(dict(
    type="RewardFCNHead", in_channels=8, channels=8, num_convs=1, num_classes=4,
    loss_decode=dict(type="CrossEntropyRewardLoss"), reward_cfg=dict(num_samples=2),
))
head.init_weights()
model = torch.nn.parallel.DistributedDataParallel(head)
initial = torch.cat([p.detach().flatten() for p in model.parameters()]).clone()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
torch.manual_seed(100 + rank)  # each rank its own data and its own samples
losses = []
for _ in range(4):
    features = [torch.randn(2, 8, 8, 8)]
    samples = []
    for _ in range(2):
        sample = SegDataSample()
        label = torch.randint(0, 4, (1, 16, 16))
        label[:, :3] = 255
        sample.gt_sem_seg = PixelData(data=label)
        samples.append(sample)
    optimizer.zero_grad()
    # the forward goes through DDP so that its gradient hooks all-reduce
    seg_logits = model(features)
    loss_dict = model.module.loss_by_feat(seg_logits, samples)
    loss = loss_dict["loss_ce_reward"]
    loss.backward()
    optimizer.step()
    losses.append(float(loss))

flat = torch.cat([p.detach().flatten() for p in model.parameters()])
gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
dist.all_gather(gathered, flat)
all_losses = [None] * dist.get_world_size()
dist.all_gather_object(all_losses, losses)
if rank == 0:
    with open(out, "w") as handle:
        json.dump({
            "world_size": dist.get_world_size(),
            "losses": all_losses,
            "parameters_agree": all(torch.equal(gathered[0], g) for g in gathered),
            "moved": not torch.equal(flat, initial),
        }, handle)
dist.destroy_process_group()
