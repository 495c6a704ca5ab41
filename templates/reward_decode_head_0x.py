"""Decode-head bases that train with a task reward (Pinto et al., 2023).

`RewardDecodeHead` replaces BaseDecodeHead and, where the tree has it,
`RewardCascadeDecodeHead` replaces BaseCascadeDecodeHead, for MMSegmentation
0.x (mmcv-full 1.x). What a reward head does, its modes and arguments are
RewardHeadMixin's, in reward_head.py (the same file as in 1.x); this
module only adapts it to the 0.x head API: the reward lives in
`losses(seg_logit, seg_label)`, which `forward_train` calls, and which takes
whatever else the tree's own BaseDecodeHead.losses takes (`seg_weight`:
per-pixel weights, as DAFormer's pseudo-label confidence).
"""
from mmcv.runner import force_fp32
from mmcv.utils import print_log

from mmseg.ops import resize
from mmseg.utils import get_root_logger
from ..losses.cross_entropy_reward_loss import CrossEntropyRewardLoss
from ..losses.reward_head import RewardHeadMixin
from .cascade_decode_head import BaseCascadeDecodeHead
from .decode_head import BaseDecodeHead


class RewardDecodeHead(RewardHeadMixin, BaseDecodeHead):
    """BaseDecodeHead trained by reward optimisation: see RewardHeadMixin in
    reward_head.py for `reward_cfg` and the drop-in rules."""

    decode_head_base = BaseDecodeHead
    reward_loss_class = CrossEntropyRewardLoss

    @staticmethod
    def log(message: str) -> None:
        print_log(message, logger=get_root_logger())

    @force_fp32(apply_to=('seg_logit', ))
    def losses(self, seg_logit, seg_label):
        """Reward loss of the resized logits against the labels
        [B, 1, H, W]."""
        seg_logit = resize(
            input=seg_logit,
            size=seg_label.shape[2:],
            mode='bilinear',
            align_corners=self.align_corners)
        return self.reward_losses(seg_logit, seg_label)


class RewardCascadeDecodeHead(RewardDecodeHead, BaseCascadeDecodeHead):
    """BaseCascadeDecodeHead (OCRHead's base) trained by reward
    optimisation."""
