"""Decode-head bases that train with a task reward (Pinto et al., 2023).

`RewardDecodeHead` replaces BaseDecodeHead, `RewardCascadeDecodeHead` replaces
BaseCascadeDecodeHead. The reward lives in `loss_by_feat`, so heads whose own
`loss_by_feat` delegates to `super()` (DAHead, EncHead) use it too. What the
reward is and how its gradient is estimated is reward_estimator.py's (shared
by every MMSeg generation); this module only adapts it to the 1.x head API.

Modes, chosen by the head argument `reward_cfg=dict(mode=...)`:

- 'local' (default): per-pixel credit. Draw y ~ softmax(logits / T) per pixel
  at label resolution; for every pixel i and class b, R_i(b) is the reward of
  y with pixel i set to b, read from a table of count changes; the gradient on
  the logits is p_i(b) (R_i(b) - V_i) / T, an unbiased estimate of the
  gradient of the expected reward (the local expectation gradient).
- 'reinforce': score K label maps with one reward each, subtract a baseline
  and minimise mean_k (R_k - b_k) * CE(logits / T, y_k) over labelled pixels.
- 'weighted_ce': the earlier manual recipe, kept for comparison: CE with the
  ground truth, per image scaled by v = 1 - R(argmax, gt) minus 0.1 times the
  mean v of the other labelled images of the batch.

`scope` says what a reward scores: 'image' (per-image reward, the paper's),
'batch' (counts pooled over the batch of every rank) or 'dataset' (a decayed
sum of the recent batches' counts, as MMSeg's IoUMetric pools a dataset).

Reward heads are drop-in: `Reward<X>` takes X's arguments. Without a
CrossEntropyRewardLoss in `loss_decode`, the first CrossEntropyLoss there (or
in BaseDecodeHead's default) is built as a CrossEntropyRewardLoss with the
same arguments, which is the same loss at reward 1; other losses are kept.

Pixels whose ground truth is `ignore_index` add nothing, so sparse labels
work. Reward statistics are returned under keys without "loss"
(reward_mean, reward_greedy, and adv_std for 'reinforce' and 'weighted_ce'):
mmengine logs them and does not backpropagate them.
"""
import inspect
from collections.abc import Mapping
from typing import List

import torch
from mmengine.logging import print_log
from torch import Tensor

from ..losses.cross_entropy_loss import CrossEntropyLoss
from ..losses.cross_entropy_reward_loss import CrossEntropyRewardLoss
from ..losses.reward_estimator import RewardEstimator
from ..utils import resize
from .cascade_decode_head import BaseCascadeDecodeHead
from .decode_head import BaseDecodeHead


class RewardDecodeHead(BaseDecodeHead):
    """BaseDecodeHead trained by reward optimisation (see the module
    docstring).

    Args:
        reward_cfg (dict, optional): mode ('local' | 'reinforce' |
            'weighted_ce'), scope ('image' | 'batch' | 'dataset'), reward
            ('miou' | 'dice' | 'pixel_acc'), num_samples, temperature,
            baseline and normalize_advantage ('reinforce'), decay ('dataset'),
            mle_weight. Defaults and checks: `check_reward_cfg` in
            reward_estimator.py.
        All other arguments are BaseDecodeHead's. `loss_decode` holds one
        CrossEntropyRewardLoss, or a CrossEntropyLoss that becomes one (see
        the module docstring); other losses in it are computed as usual.
    """

    def __init__(self, *args, reward_cfg=None, **kwargs):
        name = type(self).__name__
        if 'loss_decode' not in kwargs:
            kwargs['loss_decode'] = _default_loss_decode()
        kwargs['loss_decode'] = _with_reward_loss(kwargs['loss_decode'], name)
        super().__init__(*args, **kwargs)
        if self.out_channels == 1:
            raise ValueError(f'{name}: out_channels=1 (sigmoid binary '
                             'segmentation) is not supported; use '
                             'out_channels=num_classes')
        reward_losses = [
            m for m in self._loss_modules()
            if isinstance(m, CrossEntropyRewardLoss)
        ]
        if len(reward_losses) != 1:
            found = ', '.join(type(m).__name__ for m in self._loss_modules())
            raise ValueError(f'loss_decode: {name} needs one '
                             'CrossEntropyLoss or CrossEntropyRewardLoss for '
                             f'the reward to scale, got {found}')
        self.reward_estimator = RewardEstimator(reward_cfg, self.num_classes,
                                                self.ignore_index)
        self.reward_cfg = self.reward_estimator.cfg

    def _loss_modules(self) -> List:
        if isinstance(self.loss_decode, torch.nn.ModuleList):
            return list(self.loss_decode)
        return [self.loss_decode]

    def loss_by_feat(self, seg_logits: Tensor, batch_data_samples) -> dict:
        """Reward loss of the resized logits against the data samples'
        labels."""
        seg_label = self._stack_batch_gt(batch_data_samples)
        seg_logits = resize(
            input=seg_logits,
            size=seg_label.shape[2:],
            mode='bilinear',
            align_corners=self.align_corners)
        if self.sampler is not None:
            seg_weight = self.sampler.sample(seg_logits, seg_label)
        else:
            seg_weight = None
        seg_label = seg_label.squeeze(1)

        loss = dict()
        stats = dict()
        for loss_decode in self._loss_modules():
            if isinstance(loss_decode, CrossEntropyRewardLoss):
                value, stats = self.reward_estimator(seg_logits, seg_label,
                                                     loss_decode, seg_weight)
            else:
                value = loss_decode(
                    seg_logits,
                    seg_label,
                    weight=seg_weight,
                    ignore_index=self.ignore_index)
            name = loss_decode.loss_name
            loss[name] = loss[name] + value if name in loss else value
        loss.update({key: value.float() for key, value in stats.items()})
        return loss


def _default_loss_decode():
    parameters = inspect.signature(BaseDecodeHead.__init__).parameters
    return parameters['loss_decode'].default


_ANNOUNCED = set()


def _loss_type(cfg) -> str:
    """'CrossEntropyLoss' for type='CrossEntropyLoss', 'mmseg.CrossEntropyLoss'
    or the class itself."""
    loss_type = cfg.get('type')
    if isinstance(loss_type, str):
        return loss_type.rpartition('.')[2]
    return getattr(loss_type, '__name__', '')


def _with_reward_loss(loss_decode, head: str):
    """`loss_decode` with its first CrossEntropyLoss a CrossEntropyRewardLoss
    of the same arguments, unless it already holds a CrossEntropyRewardLoss.
    """
    many = isinstance(loss_decode, (list, tuple))
    configs = list(loss_decode) if many else [loss_decode]
    types = [_loss_type(c) if isinstance(c, Mapping) else '' for c in configs]
    if CrossEntropyRewardLoss.__name__ in types:
        return loss_decode
    found = [i for i, t in enumerate(types) if t == CrossEntropyLoss.__name__]
    softmax = [
        i for i in found if not configs[i].get('use_sigmoid', False)
        and not configs[i].get('use_mask', False)
    ]
    if found and not softmax:
        raise ValueError(f'loss_decode: {head} samples from a softmax, but '
                         'its CrossEntropyLoss has use_sigmoid=True (or '
                         'use_mask=True); set them to False')
    if not softmax:
        return loss_decode
    at = softmax[0]
    cfg = configs[at]
    loss_type = cfg['type']
    if isinstance(loss_type, str):
        scope = loss_type.rpartition('.')[0]
        new_type = '.'.join(filter(None, [scope, 'CrossEntropyRewardLoss']))
    else:
        new_type = CrossEntropyRewardLoss
    configs[at] = type(cfg)({**cfg, 'type': new_type})
    if head not in _ANNOUNCED:
        _ANNOUNCED.add(head)
        print_log(
            f'{head}: loss_decode CrossEntropyLoss is used as '
            'CrossEntropyRewardLoss with the same arguments',
            logger='current')
    if not many:
        return configs[0]
    return type(loss_decode)(configs)


class RewardCascadeDecodeHead(RewardDecodeHead, BaseCascadeDecodeHead):
    """BaseCascadeDecodeHead (OCRHead's base) trained by reward
    optimisation."""
