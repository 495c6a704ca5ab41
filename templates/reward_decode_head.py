"""Decode-head bases that train with a task reward (Pinto et al., 2023).

`RewardDecodeHead` replaces BaseDecodeHead, `RewardCascadeDecodeHead` replaces
BaseCascadeDecodeHead. The reward lives in `loss_by_feat`, so heads whose own
`loss_by_feat` delegates to `super()` (DAHead, EncHead) use it too.

Modes, chosen by the head argument `reward_cfg=dict(mode=...)`:

- 'reinforce' (default): sample K label maps y_k ~ softmax(logits / T) per pixel at
  label resolution, score each with the reward R(y_k, gt) per image, subtract a
  baseline b_k and minimise mean_k (R_k - b_k) * CE(logits / T, y_k) over labelled
  pixels. Its gradient is an unbiased estimate of the gradient of the expected
  reward of the sampling policy (the log-derivative trick); the advantages carry no
  gradient.
- 'weighted_ce': the earlier manual recipe, kept for comparison: cross-entropy with
  the ground truth, per image scaled by v = 1 - R(argmax, gt) minus 0.1 times the mean
  v of the other labelled images of the batch. It weights hard examples; it is not
  REINFORCE.

Pixels whose ground truth is `ignore_index` add nothing to the log-likelihood nor to
the reward, so sparse labels work. An image without labelled pixels has reward 0 and
advantage 0. Reward statistics are returned under keys without "loss" (reward_mean,
reward_greedy, adv_std): mmengine logs them and does not backpropagate them.
"""
from typing import List

import torch
from torch import Tensor

from ..losses import accuracy
from ..losses.cross_entropy_reward_loss import CrossEntropyRewardLoss
from ..losses.iou_metric_loss import REWARDS
from ..utils import resize
from .cascade_decode_head import BaseCascadeDecodeHead
from .decode_head import BaseDecodeHead


def _loo(rewards: Tensor, greedy: Tensor, labelled: Tensor) -> Tensor:
    """Mean reward of the other samples of the same image (K=2: Algorithm 2)."""
    return (rewards.sum(0, keepdim=True) - rewards) / (rewards.shape[0] - 1)


def _greedy(rewards: Tensor, greedy: Tensor, labelled: Tensor) -> Tensor:
    """Reward of the argmax prediction of the same image."""
    return greedy.expand_as(rewards)


def _batch_mean(rewards: Tensor, greedy: Tensor, labelled: Tensor) -> Tensor:
    """Mean reward over all samples of the labelled images of the batch."""
    mask = labelled.expand_as(rewards).float()
    return ((rewards * mask).sum() / mask.sum().clamp(min=1)).expand_as(rewards)


def _no_baseline(rewards: Tensor, greedy: Tensor, labelled: Tensor) -> Tensor:
    return torch.zeros_like(rewards)


BASELINES = {
    'loo': _loo,
    'greedy': _greedy,
    'batch_mean': _batch_mean,
    'none': _no_baseline,
}
MODES = ('reinforce', 'weighted_ce')
REWARD_CFG_DEFAULTS = dict(
    mode='reinforce',
    num_samples=2,
    baseline='loo',
    reward='miou',
    temperature=1.0,
    normalize_advantage=False,
    mle_weight=0.0)


def check_reward_cfg(reward_cfg) -> dict:
    """`reward_cfg` merged with the defaults; a ValueError names any bad key."""
    if reward_cfg is None:
        reward_cfg = {}
    if not isinstance(reward_cfg, dict):
        raise TypeError('reward_cfg must be a dict, got '
                        f'{type(reward_cfg).__name__}')
    unknown = sorted(set(reward_cfg) - set(REWARD_CFG_DEFAULTS))
    if unknown:
        raise ValueError(f'reward_cfg: unknown key {unknown[0]!r}; known keys: '
                         f'{", ".join(REWARD_CFG_DEFAULTS)}')
    cfg = {**REWARD_CFG_DEFAULTS, **reward_cfg}

    def bad(key, expected):
        return ValueError(f'reward_cfg.{key} must be {expected}, '
                          f'got {cfg[key]!r}')

    choices = dict(mode=MODES, baseline=tuple(BASELINES),
                   reward=tuple(REWARDS))
    for key, allowed in choices.items():
        if cfg[key] not in allowed:
            raise bad(key, 'one of ' + ', '.join(map(repr, allowed)))
    if type(cfg['num_samples']) is not int or cfg['num_samples'] < 1:
        raise bad('num_samples', 'an integer >= 1')
    if cfg['baseline'] == 'loo' and cfg['num_samples'] < 2:
        raise bad('num_samples', ">= 2 with baseline='loo'")
    if isinstance(cfg['temperature'], bool) or not isinstance(
            cfg['temperature'], (int, float)) or cfg['temperature'] <= 0:
        raise bad('temperature', 'a number > 0')
    if not isinstance(cfg['normalize_advantage'], bool):
        raise bad('normalize_advantage', 'True or False')
    if isinstance(cfg['mle_weight'], bool) or not isinstance(
            cfg['mle_weight'], (int, float)) or cfg['mle_weight'] < 0:
        raise bad('mle_weight', 'a number >= 0')
    return cfg


def sample_label_maps(logits: Tensor, num_samples: int) -> Tensor:
    """K label maps drawn per pixel from softmax(logits).

    logits [B, C, H, W] -> long [K, B, H, W], by inverse-CDF sampling: one
    cumulative sum and a binary search per pixel, on the logits' device.
    """
    probs = torch.softmax(logits.float().permute(0, 2, 3, 1), dim=-1)
    cdf = probs.cumsum(-1).contiguous()
    draws = torch.rand(
        *cdf.shape[:-1], num_samples, device=cdf.device, dtype=cdf.dtype)
    draws = draws * cdf[..., -1:]
    samples = torch.searchsorted(cdf, draws, right=True)
    samples = samples.clamp_(max=logits.shape[1] - 1)
    return samples.permute(3, 0, 1, 2).contiguous()


def _masked_mean_std(values: Tensor, mask: Tensor):
    mask = mask.expand_as(values).float()
    count = mask.sum().clamp(min=1)
    mean = (values * mask).sum() / count
    var = ((values - mean)**2 * mask).sum() / (count - 1).clamp(min=1)
    return mean, var.sqrt()


class RewardDecodeHead(BaseDecodeHead):
    """BaseDecodeHead trained by reward optimisation (see the module docstring).

    Args:
        reward_cfg (dict, optional): mode ('reinforce' | 'weighted_ce'),
            num_samples (2), baseline ('loo' | 'greedy' | 'batch_mean' |
            'none'), reward ('miou' | 'dice' | 'pixel_acc'), temperature (1.0),
            normalize_advantage (False: divide advantages by their batch std
            when True), mle_weight (0.0: add that multiple of the ordinary
            cross-entropy with the ground truth).
        All other arguments are BaseDecodeHead's. `loss_decode` must hold a
        CrossEntropyRewardLoss; other losses in it are computed as usual.
    """

    def __init__(self, *args, reward_cfg=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.reward_cfg = check_reward_cfg(reward_cfg)
        name = type(self).__name__
        if self.out_channels == 1:
            raise ValueError(f'{name}: out_channels=1 (sigmoid binary '
                             'segmentation) is not supported; use '
                             'out_channels=num_classes')
        if not any(
                isinstance(m, CrossEntropyRewardLoss)
                for m in self._loss_modules()):
            found = ', '.join(type(m).__name__ for m in self._loss_modules())
            raise ValueError(f'loss_decode: {name} needs a '
                             'CrossEntropyRewardLoss for the reward to scale, '
                             f'got {found}')

    def _loss_modules(self) -> List:
        if isinstance(self.loss_decode, torch.nn.ModuleList):
            return list(self.loss_decode)
        return [self.loss_decode]

    def _reward(self, pred: Tensor, gt: Tensor) -> Tensor:
        return REWARDS[self.reward_cfg['reward']](pred, gt, self.num_classes,
                                                  self.ignore_index)

    # Each mode returns (logit scale, targets, per-image reward, statistics).
    @torch.no_grad()
    def _reinforce_targets(self, logits: Tensor, gt: Tensor, labelled: Tensor,
                           greedy_reward: Tensor):
        cfg = self.reward_cfg
        scale = 1.0 / cfg['temperature']
        samples = sample_label_maps(logits * scale, cfg['num_samples'])
        rewards = self._reward(samples, gt)
        baseline = BASELINES[cfg['baseline']](rewards, greedy_reward, labelled)
        advantage = (rewards - baseline) * labelled
        reward_mean, _ = _masked_mean_std(rewards, labelled)
        _, adv_std = _masked_mean_std(advantage, labelled)
        if cfg['normalize_advantage']:
            advantage = advantage / (adv_std + 1e-6)
        # ignored pixels carry no log-likelihood: give the samples the ignore label
        targets = samples.masked_fill_(gt.eq(self.ignore_index),
                                       self.ignore_index)
        return scale, targets, advantage, dict(
            reward_mean=reward_mean, adv_std=adv_std)

    @torch.no_grad()
    def _weighted_ce_targets(self, logits: Tensor, gt: Tensor,
                             labelled: Tensor, greedy_reward: Tensor):
        miss = (1.0 - greedy_reward) * labelled
        count = labelled.sum()
        others = (miss.sum() - miss) / (count - labelled.long()).clamp(min=1)
        weight = (miss - 0.1 * others) * labelled
        _, spread = _masked_mean_std(weight, labelled)
        reward_mean, _ = _masked_mean_std(greedy_reward, labelled)
        return 1.0, gt, weight, dict(reward_mean=reward_mean, adv_std=spread)

    def loss_by_feat(self, seg_logits: Tensor, batch_data_samples) -> dict:
        """Reward loss of the resized logits against the data samples' labels."""
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

        with torch.no_grad():
            labelled = seg_label.ne(self.ignore_index).flatten(1).any(1)
            greedy = seg_logits.detach().max(1).indices
            greedy_reward = self._reward(greedy, seg_label) * labelled
        targets_of = getattr(self, f"_{self.reward_cfg['mode']}_targets")
        scale, targets, reward, stats = targets_of(seg_logits.detach(),
                                                   seg_label, labelled,
                                                   greedy_reward)
        logits = seg_logits * scale if scale != 1.0 else seg_logits

        loss = dict()
        mle_weight = self.reward_cfg['mle_weight']
        for loss_decode in self._loss_modules():
            if isinstance(loss_decode, CrossEntropyRewardLoss):
                value = loss_decode(
                    logits,
                    targets,
                    reward=reward,
                    weight=seg_weight,
                    ignore_index=self.ignore_index)
                if mle_weight:
                    value = value + mle_weight * loss_decode(
                        seg_logits,
                        seg_label,
                        weight=seg_weight,
                        ignore_index=self.ignore_index)
            else:
                value = loss_decode(
                    seg_logits,
                    seg_label,
                    weight=seg_weight,
                    ignore_index=self.ignore_index)
            name = loss_decode.loss_name
            loss[name] = loss[name] + value if name in loss else value

        loss['acc_seg'] = accuracy(
            seg_logits, seg_label, ignore_index=self.ignore_index)
        loss['reward_greedy'] = _masked_mean_std(greedy_reward, labelled)[0]
        loss.update(stats)
        return loss


class RewardCascadeDecodeHead(RewardDecodeHead, BaseCascadeDecodeHead):
    """BaseCascadeDecodeHead (OCRHead's base) trained by reward optimisation."""
