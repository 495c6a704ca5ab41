"""Decode-head bases that train with a task reward (Pinto et al., 2023).

For MMSegmentation 0.x (mmcv-full 1.x). `RewardDecodeHead` replaces
BaseDecodeHead, `RewardCascadeDecodeHead` replaces BaseCascadeDecodeHead. The
reward lives in `losses(seg_logit, seg_label)`, which `forward_train` calls,
so heads whose own `losses` delegates to `super()` (DAHead, EncHead) use it
too. What the reward is and how its gradient is estimated is
reward_estimator.py's (shared by every MMSeg generation, the same file as in
1.x); this module only adapts it to the 0.x head API.

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
from mmcv.runner import force_fp32
from mmcv.utils import print_log

from mmseg.ops import resize
from mmseg.utils import get_root_logger
from ..losses.cross_entropy_reward_loss import CrossEntropyRewardLoss
from ..losses.reward_estimator import (RewardEstimator, check_reward_head,
                                       decode_head_losses, default_loss_decode,
                                       with_reward_loss)
from .cascade_decode_head import BaseCascadeDecodeHead
from .decode_head import BaseDecodeHead

_ANNOUNCED = set()


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
        loss_decode = kwargs.get('loss_decode',
                                 default_loss_decode(BaseDecodeHead))
        kwargs['loss_decode'], changed = with_reward_loss(
            loss_decode, name, CrossEntropyRewardLoss)
        if changed and name not in _ANNOUNCED:
            _ANNOUNCED.add(name)
            print_log(
                f'{name}: loss_decode CrossEntropyLoss is used as '
                'CrossEntropyRewardLoss with the same arguments',
                logger=get_root_logger())
        super().__init__(*args, **kwargs)
        check_reward_head(self, CrossEntropyRewardLoss)
        self.reward_estimator = RewardEstimator(reward_cfg, self.num_classes,
                                                self.ignore_index)
        self.reward_cfg = self.reward_estimator.cfg

    @force_fp32(apply_to=('seg_logit', ))
    def losses(self, seg_logit, seg_label):
        """Reward loss of the resized logits against the labels
        [B, 1, H, W]."""
        seg_logit = resize(
            input=seg_logit,
            size=seg_label.shape[2:],
            mode='bilinear',
            align_corners=self.align_corners)
        return decode_head_losses(self, seg_logit, seg_label,
                                  CrossEntropyRewardLoss)


class RewardCascadeDecodeHead(RewardDecodeHead, BaseCascadeDecodeHead):
    """BaseCascadeDecodeHead (OCRHead's base) trained by reward
    optimisation."""
