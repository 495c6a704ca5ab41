"""Per-image segmentation rewards, computed for a whole batch at once.

Each comes from one histogram over the batch (see reward_counts.py, which
holds the counting and the conventions, MMSeg's IoUMetric's image by image):
nothing leaves the device and nothing loops over images, pixels or classes in
Python. The rewards are the rows of REWARDS in reward_schema.py, the table
the reward heads read too.
"""
import torch
import torch.nn as nn
from torch import Tensor

from mmseg.registry import MODELS
from .reward_counts import class_counts, label_confusion, reward_of_counts
from .reward_sampling import channel_max
from .reward_schema import REWARDS


def _per_image(reward: str, pred: Tensor, gt: Tensor, num_classes: int,
               ignore_index: int) -> Tensor:
    table = label_confusion(pred, gt, num_classes, ignore_index)
    return reward_of_counts(reward, *class_counts(table)).float()


def per_image_miou(pred: Tensor,
                   gt: Tensor,
                   num_classes: int,
                   ignore_index: int = 255) -> Tensor:
    """Mean IoU of each image over the classes present in its prediction or
    ground truth. pred [..., B, H, W], gt [B, H, W] -> float [..., B]."""
    return _per_image('miou', pred, gt, num_classes, ignore_index)


def per_image_dice(pred: Tensor,
                   gt: Tensor,
                   num_classes: int,
                   ignore_index: int = 255) -> Tensor:
    """Mean Dice (F1) of each image over the classes present in its prediction
    or ground truth. pred [..., B, H, W], gt [B, H, W] -> float [..., B]."""
    return _per_image('dice', pred, gt, num_classes, ignore_index)


def per_image_pixel_accuracy(pred: Tensor,
                             gt: Tensor,
                             num_classes: int,
                             ignore_index: int = 255) -> Tensor:
    """Fraction of labelled pixels predicted right, per image.
    pred [..., B, H, W], gt [B, H, W] -> float [..., B]."""
    return _per_image('pixel_acc', pred, gt, num_classes, ignore_index)


@MODELS.register_module()
class IoUMetricLoss(nn.Module):
    """Per-image 1 - mIoU: the task loss whose negation the reward heads
    maximise.

    It has no gradient (the argmax and the counts are not differentiable): use
    it to score predictions, or as `reward_cfg=dict(reward=...)` of a reward
    head.

    Args:
        num_classes (int): Number of classes.
        ignore_index (int): Ground-truth value that counts nowhere.
            Default 255.
        reward (str): A name in REWARDS (reward_schema.py): 'miou',
            'dice', ... Default 'miou'.
    """

    def __init__(self,
                 num_classes: int,
                 ignore_index: int = 255,
                 reward: str = 'miou'):
        super().__init__()
        if reward not in REWARDS:
            raise ValueError(f'reward must be one of {sorted(REWARDS)}, '
                             f'got {reward!r}')
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reward = reward

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """pred: logits [B, C, H, W] or labels [B, H, W]; target [B, H, W].

        Returns a float tensor [B] on the input's device."""
        if pred.dim() == target.dim() + 1:
            # the reward heads' argmax: max(1) has no CPU float16 before
            # torch 1.9
            pred = channel_max(pred.flatten(2))[1].view_as(target)
        with torch.no_grad():
            score = _per_image(self.reward, pred.long(), target.long(),
                               self.num_classes, self.ignore_index)
        return 1.0 - score
