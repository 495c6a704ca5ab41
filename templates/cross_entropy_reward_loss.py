"""Cross-entropy scaled per image by a reward (or a REINFORCE advantage).

With `reward=1.0` it is MMSeg's own CrossEntropyLoss, to the bit: it
subclasses it and hands the reward to it as a sample-wise weight, which MMSeg
applies before reduction.

For REINFORCE, `label` may carry a leading dimension of K sampled label maps
that share one set of logits: the log-softmax is then computed once and the
samples cost one gather, instead of K full cross-entropies.

It subclasses the tree's own CrossEntropyLoss, whatever its release: where
that loss has no `loss_name` (MMSeg < 0.20) this class keeps its own, and
where it has no `avg_non_ignore` (MMSeg < 0.23) averaging over the labelled
pixels only is refused, as the tree's loss could not do it either.
"""
import inspect

import torch
import torch.nn.functional as F
from torch import Tensor

from mmseg.registry import MODELS
from .cross_entropy_loss import CrossEntropyLoss
from .utils import weight_reduce_loss


def _per_image(reward, like: Tensor) -> Tensor:
    """A reward of shape [..., B] as a weight broadcastable to label maps
    [..., B, H, W]."""
    reward = torch.as_tensor(reward, dtype=torch.float32, device=like.device)
    return reward.detach().reshape(*reward.shape,
                                   *([1] * (like.dim() - reward.dim())))


@MODELS.register_module()
class CrossEntropyRewardLoss(CrossEntropyLoss):
    """Softmax cross-entropy, its pixel terms scaled by a per-image reward.

    Args:
        use_sigmoid (bool): Must be False: the reward scales a softmax
            cross-entropy. Default False.
        use_mask (bool): Must be False, as `use_sigmoid`. Default False.
        reduction (str): 'mean', 'sum' or 'none'. Default 'mean'.
        class_weight (list[float] | str, optional): Weight of each class, or a
            file holding them (see `rewardpatch stats`). Default None.
        loss_weight (float): Weight of the loss. Default 1.0.
        loss_name (str): Name of the loss item; it must start with `loss_` to
            be backpropagated. Default 'loss_ce_reward'.
        avg_non_ignore (bool): Average over non-ignored pixels only.
            Default False.
    """

    def __init__(self,
                 use_sigmoid=False,
                 use_mask=False,
                 reduction='mean',
                 class_weight=None,
                 loss_weight=1.0,
                 loss_name='loss_ce_reward',
                 avg_non_ignore=False):
        for option, value in (('use_sigmoid', use_sigmoid), ('use_mask',
                                                             use_mask)):
            if value:
                raise ValueError(f'{option}: CrossEntropyRewardLoss scales a '
                                 f'softmax cross-entropy; {option}=True is '
                                 'not supported')
        accepted = inspect.signature(CrossEntropyLoss.__init__).parameters
        if avg_non_ignore and 'avg_non_ignore' not in accepted:
            raise ValueError('avg_non_ignore: the CrossEntropyLoss of this '
                             'MMSegmentation has no avg_non_ignore; leave it '
                             'False')
        optional = dict(loss_name=loss_name, avg_non_ignore=avg_non_ignore)
        optional = {k: v for k, v in optional.items() if k in accepted}
        super().__init__(
            use_sigmoid=False,
            reduction=reduction,
            class_weight=class_weight,
            loss_weight=loss_weight,
            **optional)
        self._loss_name = loss_name
        self.avg_non_ignore = avg_non_ignore

    @property
    def loss_name(self):
        """The name of the loss item in the head's loss dict."""
        return self._loss_name

    def forward(self,
                cls_score: Tensor,
                label: Tensor,
                reward=1.0,
                weight=None,
                avg_factor=None,
                reduction_override=None,
                ignore_index=255,
                ground_truth=None,
                **kwargs) -> Tensor:
        """Cross-entropy of `cls_score` [B, C, H, W] against `label`, per image
        scaled by `reward` (a float, or a tensor [B]; no gradient flows into
        it).

        `label` is [B, H, W], or [K, B, H, W] for K label maps sampled from
        the same logits, with `reward` then of shape [K, B] and the ground
        truth [B, H, W] in `ground_truth`: class weights apply by the
        ground-truth class of each pixel, never by the sampled one, which
        would bias the REINFORCE estimate.

        Computed in float32 whatever the dtype of `cls_score` (fp16 or bf16
        under mixed precision), as autocast computes cross-entropy: the loss
        is float32 and its gradient is cast to the logits' dtype last.
        """
        cls_score = cls_score.float()
        if label.dim() == cls_score.dim():
            return self._sampled(cls_score, label, reward, weight, avg_factor,
                                 reduction_override, ignore_index,
                                 ground_truth)
        if isinstance(reward, (int, float)):
            return reward * super().forward(
                cls_score,
                label,
                weight,
                avg_factor,
                reduction_override,
                ignore_index=ignore_index,
                **kwargs)
        scale = _per_image(reward, label).expand(label.shape)
        weight = scale if weight is None else scale * weight.float()
        return super().forward(
            cls_score,
            label,
            weight,
            avg_factor,
            reduction_override,
            ignore_index=ignore_index,
            **kwargs)

    def _class_weight_on(self, device) -> Tensor:
        """`class_weight` as a float32 tensor on `device`, made once per
        device: a list copied to a GPU every step makes the host wait."""
        source, weights = getattr(self, '_class_weight_cache', (None, None))
        if source is not self.class_weight or weights.device != device:
            weights = torch.as_tensor(
                self.class_weight, dtype=torch.float32, device=device)
            self._class_weight_cache = (self.class_weight, weights)
        return weights

    def _sampled(self, cls_score, labels, reward, weight, avg_factor,
                 reduction_override, ignore_index, ground_truth):
        reduction = reduction_override or self.reduction
        log_probs = F.log_softmax(cls_score, dim=1)
        # one gather of the K samples' log-probabilities: its backward writes
        # one logits-sized gradient, where K nll_loss calls would write K
        labelled = labels != ignore_index
        at = labels.masked_fill(~labelled, 0).transpose(0, 1)
        picked = log_probs.gather(1, at).transpose(0, 1)
        losses = torch.where(labelled, -picked, torch.zeros_like(picked))
        pixel = weight.float() if weight is not None else None
        if self.class_weight is not None:
            if ground_truth is None:
                raise ValueError('class_weight: sampled labels need the '
                                 'ground truth (ground_truth=...) to weight '
                                 'by its class')
            by_class = _class_weight_at(
                self._class_weight_on(ground_truth.device), ground_truth,
                ignore_index)
            pixel = by_class if pixel is None else pixel * by_class
        scale = _per_image(reward, labels)
        if pixel is not None:
            scale = scale * pixel
        if avg_factor is None and reduction == 'mean':
            if not self.avg_non_ignore:
                avg_factor = float(labels.numel())
            elif self.class_weight is not None:
                avg_factor = by_class.sum() * labels.shape[0]
            else:
                avg_factor = (labels != ignore_index).sum()
        return self.loss_weight * weight_reduce_loss(
            losses, scale.expand(losses.shape), reduction, avg_factor)


def _class_weight_at(class_weight, ground_truth: Tensor,
                     ignore_index: int) -> Tensor:
    """Each pixel's class weight: 1 for a labelled value out of range, 0 for
    an ignored pixel."""
    weights = torch.as_tensor(
        class_weight, dtype=torch.float32, device=ground_truth.device)
    inside = (ground_truth >= 0) & (ground_truth < len(weights))
    at = weights[ground_truth.clamp(0, len(weights) - 1)]
    at = torch.where(inside, at, torch.ones_like(at))
    return at.masked_fill(ground_truth == ignore_index, 0.0)
