"""Decode-head bases that train with a task reward (Pinto et al., 2023).

`RewardDecodeHead` replaces BaseDecodeHead and, where the tree has it,
`RewardCascadeDecodeHead` replaces BaseCascadeDecodeHead, for MMSegmentation
1.x. What a reward head does, its modes and arguments are RewardHeadMixin's,
in reward_head.py (shared by every MMSeg generation); this module only
adapts it to the 1.x head API: the reward lives in `loss_by_feat(seg_logits,
batch_data_samples)`, which takes whatever else the tree's own
BaseDecodeHead.loss_by_feat takes (`seg_weight`: per-pixel weights).
"""
from mmengine.logging import print_log
from torch import Tensor

from ..losses.cross_entropy_reward_loss import CrossEntropyRewardLoss
from ..losses.reward_head import RewardHeadMixin
from ..utils import resize
from .cascade_decode_head import BaseCascadeDecodeHead
from .decode_head import BaseDecodeHead


class RewardDecodeHead(RewardHeadMixin, BaseDecodeHead):
    """BaseDecodeHead trained by reward optimisation: see RewardHeadMixin in
    reward_head.py for `reward_cfg` and the drop-in rules."""

    decode_head_base = BaseDecodeHead
    reward_loss_class = CrossEntropyRewardLoss

    @staticmethod
    def log(message: str) -> None:
        print_log(message, logger='current')

    def loss_by_feat(self, seg_logits: Tensor, batch_data_samples) -> dict:
        """Reward loss of the resized logits against the data samples'
        labels."""
        seg_label = self._stack_batch_gt(batch_data_samples)
        seg_logits = resize(
            input=seg_logits,
            size=seg_label.shape[2:],
            mode='bilinear',
            align_corners=self.align_corners)
        return self.reward_losses(seg_logits, seg_label)


class RewardCascadeDecodeHead(RewardDecodeHead, BaseCascadeDecodeHead):
    """BaseCascadeDecodeHead (OCRHead's base) trained by reward
    optimisation."""
