"""Per-image segmentation rewards, computed for a whole batch at once.

Every reward here comes from one histogram over the batch: each labelled pixel adds one
count at (image, ground-truth class, predicted class). Nothing leaves the device and
nothing loops over images, pixels or classes in Python, so the reward of a batch of
sampled label maps costs about as much as reading them once.

Conventions (the same as MMSeg's IoUMetric, image by image):
- pixels whose ground truth is `ignore_index` count nowhere;
- a ground-truth value outside [0, num_classes) that is not `ignore_index` counts in no
  class, but the prediction there still counts as predicted (as `torch.histc` does in
  MMSeg's `intersect_and_union`);
- the mean IoU (or Dice) of an image averages the classes whose union is non-empty in
  that image;
- an image with no labelled pixel gets reward 0; the reward head gives it zero
  advantage, so it adds nothing to the gradient.
"""
import torch
import torch.nn as nn
from torch import Tensor

from mmseg.registry import MODELS


def per_image_confusion(pred: Tensor, gt: Tensor, num_classes: int,
                        ignore_index: int) -> Tensor:
    """Counts of (ground truth, prediction) pairs per image.

    Args:
        pred (Tensor): Predicted labels, long, shape [..., B, H, W], values in
            [0, num_classes). Leading dimensions (e.g. K samples) share `gt`.
        gt (Tensor): Ground truth, long, shape [B, H, W].

    Returns:
        Tensor: long counts of shape [..., B, num_classes + 1, num_classes]; row
        `num_classes` collects labelled pixels whose ground truth is out of range.
    """
    lead = pred.shape[:-3]
    batch = gt.shape[0]
    images = pred.numel() // gt.numel()
    rows = num_classes + 1
    in_range = (gt >= 0) & (gt < num_classes)
    gt_row = torch.where(in_range, gt, torch.full_like(gt, num_classes))
    image = torch.arange(images * batch, device=gt.device).view(*lead, batch, 1, 1)
    key = (image * rows + gt_row) * num_classes + pred
    # pixels of ignored ground truth land in one extra bin that is cut off below
    trash = images * batch * rows * num_classes
    key = torch.where(gt != ignore_index, key, torch.full_like(key, trash))
    flat = key.reshape(-1)
    # scatter_add_ rather than bincount: bincount reads the maximum back to the host
    counts = torch.zeros(trash + 1, dtype=torch.long, device=gt.device)
    counts.scatter_add_(0, flat, counts.new_ones(1).expand_as(flat))
    return counts[:trash].view(*lead, batch, rows, num_classes)


def _areas(pred: Tensor, gt: Tensor, num_classes: int, ignore_index: int):
    confusion = per_image_confusion(pred, gt, num_classes, ignore_index)
    area_pred = confusion.sum(-2).float()
    inside = confusion[..., :num_classes, :]
    area_gt = inside.sum(-1).float()
    intersect = torch.diagonal(inside, dim1=-2, dim2=-1).float()
    return intersect, area_pred, area_gt


def _mean_over_present(ratio_num: Tensor, ratio_den: Tensor) -> Tensor:
    present = ratio_den > 0
    ratio = ratio_num / ratio_den.clamp(min=1)
    count = present.sum(-1)
    total = (ratio * present).sum(-1)
    return torch.where(count > 0, total / count.clamp(min=1),
                       torch.zeros_like(total))


def per_image_miou(pred: Tensor, gt: Tensor, num_classes: int,
                   ignore_index: int = 255) -> Tensor:
    """Mean IoU of each image over the classes present in its prediction or
    ground truth. pred [..., B, H, W], gt [B, H, W] -> float [..., B]."""
    intersect, area_pred, area_gt = _areas(pred, gt, num_classes, ignore_index)
    union = area_pred + area_gt - intersect
    return _mean_over_present(intersect, union)


def per_image_dice(pred: Tensor, gt: Tensor, num_classes: int,
                   ignore_index: int = 255) -> Tensor:
    """Mean Dice (F1) of each image over the classes present in its prediction
    or ground truth. pred [..., B, H, W], gt [B, H, W] -> float [..., B]."""
    intersect, area_pred, area_gt = _areas(pred, gt, num_classes, ignore_index)
    return _mean_over_present(2 * intersect, area_pred + area_gt)


def per_image_pixel_accuracy(pred: Tensor, gt: Tensor, num_classes: int,
                             ignore_index: int = 255) -> Tensor:
    """Fraction of labelled pixels predicted right, per image.
    pred [..., B, H, W], gt [B, H, W] -> float [..., B]."""
    intersect, _, area_gt = _areas(pred, gt, num_classes, ignore_index)
    total = area_gt.sum(-1)
    return torch.where(total > 0,
                       intersect.sum(-1) / total.clamp(min=1),
                       torch.zeros_like(total))


REWARDS = {
    'miou': per_image_miou,
    'dice': per_image_dice,
    'pixel_acc': per_image_pixel_accuracy,
}


@MODELS.register_module()
class IoUMetricLoss(nn.Module):
    """Per-image 1 - mIoU: the task loss whose negation REINFORCE maximises.

    It has no gradient (the argmax and the counts are not differentiable): use it
    to score predictions, or as `reward_cfg=dict(reward=...)` of a reward head.

    Args:
        num_classes (int): Number of classes.
        ignore_index (int): Ground-truth value that counts nowhere. Default 255.
        reward (str): 'miou', 'dice' or 'pixel_acc'. Default 'miou'.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255,
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
            pred = pred.max(1).indices
        with torch.no_grad():
            score = REWARDS[self.reward](pred.long(), target.long(),
                                         self.num_classes, self.ignore_index)
        return 1.0 - score
