"""Reward heads: what makes a decode head train with a task reward (Pinto et
al., 2023), in every MMSeg generation.

`RewardHeadMixin`, first below, says what a reward head does and takes: its
modes, its scopes and the drop-in rules. Each generation's adapter
(decode_heads/reward_decode_head.py) puts it before that generation's
BaseDecodeHead; the functions after it read configs and modules for it. The
reward loss itself is `RewardEstimator`'s (reward_estimator.py); what
`reward_cfg` may say is reward_schema.py's.
"""
import contextlib
import inspect
from collections.abc import Mapping

import torch
from torch import Tensor

from .reward_estimator import RewardEstimator


class RewardHeadMixin:
    """What makes a decode head a reward head, in every MMSeg generation.

    A generation's adapter (reward_decode_head.py) puts it before that
    generation's BaseDecodeHead and says which loss method computes the loss
    (1.x: `loss_by_feat`, 0.x: `losses`); the reward lives there, so heads
    whose own loss method delegates to `super()` (DAHead, EncHead) use it too.

    Modes, chosen by the head argument `reward_cfg=dict(mode=...)`:

    - 'local' (default): per-pixel credit. Draw y ~ softmax(logits / T) per
      pixel at label resolution; for every pixel i and class b, R_i(b) is the
      reward of y with pixel i set to b, read from a table of count changes;
      the gradient on the logits is p_i(b) (R_i(b) - V_i) / T, an unbiased
      estimate of the gradient of the expected reward (the local expectation
      gradient).
    - 'reinforce': score K label maps with one reward each, subtract a
      baseline and minimise mean_k (R_k - b_k) * CE(logits / T, y_k) over
      labelled pixels.
    - 'weighted_ce': the earlier manual recipe, kept for comparison: CE with
      the ground truth, per image scaled by v = 1 - R(argmax, gt) minus 0.1
      times the mean v of the other labelled images of the batch.

    `scope` says what a reward scores: 'image' (per-image reward, the
    paper's), 'batch' (counts pooled over the batch of every rank) or
    'dataset' (a decayed sum of the recent batches' counts, as MMSeg's
    IoUMetric pools a dataset). That sum is part of the head's state (the
    buffer `reward_estimator.history`): saved in checkpoints and restored
    when a run resumes; a checkpoint without it starts it from zeros.

    Reward heads are drop-in: `Reward<X>` takes X's arguments. Without a
    CrossEntropyRewardLoss in `loss_decode`, the first CrossEntropyLoss there
    (or in BaseDecodeHead's default) is built as a CrossEntropyRewardLoss with
    the same arguments, which is the same loss at reward 1; other losses are
    kept.

    Pixels whose ground truth is `ignore_index` add nothing, so sparse labels
    work. Where the tree's BaseDecodeHead passes per-pixel weights to its
    loss method (`seg_weight`: DAFormer's pseudo-label confidence), they
    scale each pixel's term of the reward gradient as they scale its
    cross-entropy. Reward statistics are returned under keys without "loss"
    (reward_mean, reward_greedy, and adv_std for 'reinforce' and
    'weighted_ce'): MMSeg logs them and does not backpropagate them.

    Args:
        reward_cfg (dict, optional): mode ('local' | 'reinforce' |
            'weighted_ce'), scope ('image' | 'batch' | 'dataset'), reward
            (a name in REWARDS: 'miou', 'dice', ...), num_samples,
            temperature, baseline and normalize_advantage ('reinforce'), decay
            ('dataset'), mle_weight. Defaults, checks and REWARDS:
            reward_schema.py.
        All other arguments are BaseDecodeHead's. `loss_decode` holds one
        CrossEntropyRewardLoss, or a CrossEntropyLoss that becomes one;
        other losses in it are computed as usual.
    """

    # set by the adapter: the generation's BaseDecodeHead, its
    # CrossEntropyRewardLoss, and how to log one line
    decode_head_base = None
    reward_loss_class = None
    announced = set()

    @staticmethod
    def log(message: str) -> None:
        raise NotImplementedError

    def __init__(self, *args, reward_cfg=None, **kwargs):
        name = type(self).__name__
        loss_decode = kwargs.get('loss_decode',
                                 default_loss_decode(self.decode_head_base))
        kwargs['loss_decode'], changed = with_reward_loss(
            loss_decode, name, self.reward_loss_class)
        if changed and name not in self.announced:
            self.announced.add(name)
            self.log(f'{name}: loss_decode CrossEntropyLoss is used as '
                     'CrossEntropyRewardLoss with the same arguments')
        super().__init__(*args, **kwargs)
        check_reward_head(self, self.reward_loss_class)
        self.reward_estimator = RewardEstimator(reward_cfg, self.num_classes,
                                                self.ignore_index)
        self.reward_cfg = self.reward_estimator.cfg

    def reward_losses(self,
                      seg_logits: Tensor,
                      seg_label: Tensor,
                      seg_weight: Tensor = None,
                      **kwargs) -> dict:
        """The loss dict of `seg_logits` [B, C, H, W] at the resolution of
        `seg_label` [B, 1, H, W], each pixel weighted by `seg_weight` (see
        `decode_head_losses`)."""
        return decode_head_losses(self, seg_logits, seg_label,
                                  self.reward_loss_class, seg_weight, **kwargs)


# What RewardHeadMixin reads of configs and modules (`Reward<X>` takes X's
# arguments), and the loss dict it returns.


def default_loss_decode(head_class):
    """The default `loss_decode` of a decode-head base class's __init__."""
    parameters = inspect.signature(head_class.__init__).parameters
    return parameters['loss_decode'].default


def _loss_type(cfg) -> str:
    """'CrossEntropyLoss' for type='CrossEntropyLoss', 'mmseg.CrossEntropyLoss'
    or the class itself."""
    loss_type = cfg.get('type')
    if isinstance(loss_type, str):
        return loss_type.rpartition('.')[2]
    return getattr(loss_type, '__name__', '')


def with_reward_loss(loss_decode, head: str, reward_class):
    """(`loss_decode` with its first softmax CrossEntropyLoss a
    `reward_class` of the same arguments, whether it changed), unchanged when
    it already holds a `reward_class`."""
    many = isinstance(loss_decode, (list, tuple))
    configs = list(loss_decode) if many else [loss_decode]
    types = [_loss_type(c) if isinstance(c, Mapping) else '' for c in configs]
    if reward_class.__name__ in types:
        return loss_decode, False
    found = [i for i, t in enumerate(types) if t == 'CrossEntropyLoss']
    softmax = [
        i for i in found if not configs[i].get('use_sigmoid', False)
        and not configs[i].get('use_mask', False)
    ]
    if found and not softmax:
        raise ValueError(f'loss_decode: {head} samples from a softmax, but '
                         'its CrossEntropyLoss has use_sigmoid=True (or '
                         'use_mask=True); set them to False')
    if not softmax:
        return loss_decode, False
    at = softmax[0]
    cfg = configs[at]
    loss_type = cfg['type']
    if isinstance(loss_type, str):
        scope = loss_type.rpartition('.')[0]
        new_type = '.'.join(filter(None, [scope, reward_class.__name__]))
    else:
        new_type = reward_class
    configs[at] = type(cfg)({**cfg, 'type': new_type})
    if not many:
        return configs[0], True
    return type(loss_decode)(configs), True


def loss_modules(head) -> list:
    """The head's losses: `loss_decode` as a list."""
    if isinstance(head.loss_decode, torch.nn.ModuleList):
        return list(head.loss_decode)
    return [head.loss_decode]


def check_reward_head(head, reward_class) -> None:
    """Raise ValueError unless the head samples from a softmax and holds
    exactly one `reward_class` for the reward to scale."""
    name = type(head).__name__
    if getattr(head, 'out_channels', head.num_classes) == 1:
        raise ValueError(f'{name}: out_channels=1 (sigmoid binary '
                         'segmentation) is not supported; use '
                         'out_channels=num_classes')
    losses = loss_modules(head)
    if sum(isinstance(m, reward_class) for m in losses) != 1:
        found = ', '.join(type(m).__name__ for m in losses)
        raise ValueError(f'loss_decode: {name} needs one CrossEntropyLoss '
                         f'or {reward_class.__name__} for the reward to '
                         f'scale, got {found}')


def _autocast_off(device_type: str):
    """A context in which autocast is off for `device_type`; a no-op where
    torch has no autocast for it."""
    if hasattr(torch, 'autocast'):
        try:
            return torch.autocast(device_type, enabled=False)
        except RuntimeError:  # a device type without autocast
            return contextlib.nullcontext()
    if device_type == 'cuda':
        return torch.cuda.amp.autocast(enabled=False)
    return contextlib.nullcontext()


def decode_head_losses(head,
                       seg_logits: Tensor,
                       seg_label: Tensor,
                       reward_class,
                       seg_weight: Tensor = None,
                       **kwargs) -> dict:
    """A reward head's loss dict: `seg_logits` [B, C, H, W] at the
    resolution of `seg_label` [B, 1, H, W]; its `reward_class` loss is the
    head's reward_estimator's, every other loss of `loss_decode` is computed
    as usual, with `kwargs`. Reward statistics come under keys without
    'loss'.

    `seg_weight` [B, H, W] weights each pixel's term of every loss (a
    domain-adaptation fork's pseudo-label confidence); with a pixel sampler
    too, a pixel's weight is the product of both.
    """
    if seg_weight is not None and seg_weight.dim() == seg_label.dim():
        seg_weight = seg_weight.squeeze(1)
    if head.sampler is not None:
        sampled = head.sampler.sample(seg_logits, seg_label)
        seg_weight = sampled if seg_weight is None else seg_weight * sampled
    seg_label = seg_label.squeeze(1)
    loss = dict()
    stats = dict()
    for loss_decode in loss_modules(head):
        if isinstance(loss_decode, reward_class):
            # out of autocast (AMP), as autocast computes cross-entropy in
            # float32: the reward chooses its dtypes, and a float16/bfloat16
            # matmul would round the sampler's cumulative sums and draw the
            # labels from another distribution than softmax(logits / T)
            with _autocast_off(seg_logits.device.type):
                value, stats = head.reward_estimator(seg_logits, seg_label,
                                                     loss_decode, seg_weight)
        else:
            value = loss_decode(
                seg_logits,
                seg_label,
                weight=seg_weight,
                ignore_index=head.ignore_index,
                **kwargs)
        name = loss_decode.loss_name
        loss[name] = loss[name] + value if name in loss else value
    loss.update({key: value.float() for key, value in stats.items()})
    return loss
