"""Run with a patched tree first on the path, by the interpreter of that tree's stack.

argv: TREE OUT. For every reward_cfg of CASES, builds RewardFCNHead from the tree's
registry and takes its reward loss through the generation's own head API (1.x:
`loss_by_feat(seg_logits, data_samples)`, 0.x: `losses(seg_logit, seg_label)`) on the same
seeded logits and labels, twice in a row (scope 'dataset' then scores its history too).
Writes, per case, the completed reward_cfg, each loss item and the gradient on the logits
to OUT (torch.save), so that the 1.x and 0.x results can be compared; every case runs
under the estimator's CPU policy and under its GPU policy (forced on the CPU).
"""

import sys

tree, out = sys.argv[1], sys.argv[2]
sys.path.insert(0, tree)

import torch  # noqa: E402

import mmseg  # noqa: E402

ONE_X = not mmseg.__version__.startswith('0.')
if ONE_X:
    from mmengine.structures import PixelData  # noqa: E402

    from mmseg.registry import MODELS  # noqa: E402
    from mmseg.structures import SegDataSample  # noqa: E402
    from mmseg.utils import register_all_modules  # noqa: E402

    register_all_modules(init_default_scope=False)
    build_head = MODELS.build
else:
    # 0.x's builder function under the name 1.x's registry method has above: mypy takes no
    # alternative definitions of one name
    from mmseg.models import build_head  # type: ignore[no-redef]  # noqa: E402
from mmseg.models.losses.reward_device import device_policy  # noqa: E402

CASES = [
    {},
    dict(scope='image'),
    dict(scope='batch', reward='dice', temperature=1.0),
    dict(scope='dataset', decay=0.5, reward='pixel_acc'),
    dict(num_samples=3, mle_weight=0.5),
    dict(mode='reinforce'),
    dict(mode='reinforce', scope='batch', baseline='greedy', normalize_advantage=True),
    dict(mode='reinforce', baseline='batch_mean', num_samples=1, reward='dice'),
    dict(mode='reinforce', scope='dataset', baseline='none', temperature=0.7),
    dict(mode='weighted_ce'),
    dict(mode='weighted_ce', reward='pixel_acc', mle_weight=1.0),
    dict(scope='dataset', reward='fwiou'),
]
CLASSES, BATCH, SIZE, IGNORE = 5, 3, 32, 255
CLASS_WEIGHT = [1.0, 2.0, 0.5, 1.0, 1.5]


def loss_decode(case):
    """Class weights wherever MMSeg 1.2's own cross_entropy is not called: with them and
    ignored pixels it raises IndexError (upstream), and mle_weight and weighted_ce call it."""
    if case.get('mle_weight') or case.get('mode') == 'weighted_ce':
        return dict(type='CrossEntropyLoss')
    return dict(type='CrossEntropyLoss', class_weight=CLASS_WEIGHT)


def inputs(step):
    generator = torch.Generator().manual_seed(step)
    logits = torch.randn(BATCH, CLASSES, SIZE // 4, SIZE // 4, generator=generator) * 2
    labels = torch.randint(0, CLASSES, (BATCH, 1, SIZE, SIZE), generator=generator)
    labels[:, :, :4] = IGNORE  # sparse labels: a band of ignored pixels
    return logits.requires_grad_(), labels


def reward_losses(head, logits, labels):
    if ONE_X:
        samples = [SegDataSample(gt_sem_seg=PixelData(data=label)) for label in labels]
        return head.loss_by_feat(logits, samples)
    return head.losses(logits, labels)


results = []
for policy in ('cpu', 'gpu'):
    for case in CASES:
        torch.manual_seed(0)
        head = build_head(dict(type='RewardFCNHead', in_channels=8, channels=8, num_classes=CLASSES,
                               num_convs=1, reward_cfg=case, loss_decode=loss_decode(case)))
        steps = []
        for step in range(2):
            logits, labels = inputs(step)
            torch.manual_seed(100 + step)  # the label samples
            with device_policy(policy):
                losses = reward_losses(head, logits, labels)
                total = sum(value for key, value in losses.items() if 'loss' in key)
                total.backward()
            steps.append(dict(losses={key: value.detach() for key, value in losses.items()}, grad=logits.grad))
        results.append(dict(case=case, policy=policy, reward_cfg=dict(head.reward_cfg), steps=steps))
torch.save(dict(mmseg=mmseg.__version__, results=results), out)
