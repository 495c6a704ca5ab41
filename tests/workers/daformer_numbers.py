"""Run by the interpreter of an MMSeg 0.x stack, with a patched DAFormer-style tree first on the path.

argv: TREE INPUTS OUT [RELAX]. INPUTS is a JSON file of logits, labels and per-pixel weights
(written by the test, so that every stack reads the very same numbers); for each reward mode,
RewardFCNHead of the tree takes its training step (`forward_train` with `seg_weight`, the
fork's own entry point) and its loss (`losses(logits, labels, seg_weight)`) twice, the second
time scoring the dataset history. OUT gets, per case, each loss item and the gradient on the
logits as plain JSON, which any torch can write and any torch can read. RELAX: the mmcv
version the tree's import check is to see (the 0.x stack's mmcv-full 1.7.2 is newer than a
0.16.0 tree allows; the check is the tree's only objection).

Written for the oldest stack it runs on: Python 3.7 syntax, torch 1.7 API.
"""

import json
import sys

tree, inputs_file, out_file = sys.argv[1:4]
sys.path.insert(0, tree)

import torch  # noqa: E402

if len(sys.argv) > 4:
    import mmcv  # noqa: E402

    real, mmcv.__version__ = mmcv.__version__, sys.argv[4]
    import mmseg.models  # noqa: E402,F401

    mmcv.__version__ = real
from mmseg.models import build_head  # noqa: E402

CASES = [
    dict(mode='local'),
    dict(mode='local', scope='batch', reward='dice'),
    dict(mode='local', scope='dataset', num_samples=2, mle_weight=0.5),
    dict(mode='reinforce'),
    dict(mode='reinforce', scope='batch', baseline='greedy'),
    dict(mode='weighted_ce'),
]

with open(inputs_file) as handle:
    data = json.load(handle)
logits_in = torch.tensor(data['logits'], dtype=torch.float32)
labels = torch.tensor(data['labels'], dtype=torch.long)
weight = torch.tensor(data['weight'], dtype=torch.float32)
features = [torch.tensor(data['features'], dtype=torch.float32)]
classes = logits_in.shape[1]

out = dict(torch=torch.__version__, python=sys.version.split()[0], cases=[])


def build(case):
    torch.manual_seed(0)
    return build_head(dict(type='RewardFCNHead', in_channels=features[0].shape[1], channels=4,
                           num_classes=classes, num_convs=1, concat_input=False, dropout_ratio=0.0,
                           reward_cfg=dict(case)))


for case in CASES:
    head = build(case)  # the fork's training step: its weights are drawn by this torch, not compared
    torch.manual_seed(1)
    trained = head.forward_train(features, [{}] * len(labels), labels, None, seg_weight=weight)
    total = sum(v for k, v in trained.items() if 'loss' in k)
    total.backward()
    assert torch.isfinite(total) and head.conv_seg.weight.grad.abs().sum() > 0, case
    head = build(case)  # the loss on the test's logits: the numbers every stack must agree on
    steps = []
    for step in range(2):
        logits = logits_in.clone().requires_grad_()
        torch.manual_seed(10 + step)
        losses = head.losses(logits, labels, weight)
        sum(v for k, v in losses.items() if k.startswith('loss')).backward()
        steps.append(dict(losses={k: float(v) for k, v in sorted(losses.items())},
                          grad=logits.grad.flatten().tolist()))
    out['cases'].append(dict(case=case, steps=steps))
with open(out_file, 'w') as handle:
    json.dump(out, handle)
print('ok')
