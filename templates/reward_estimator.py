"""The reward loss of a decode head, for every mode and scope:
`RewardEstimator`.

Each mode of `reward_cfg` is one loss of MODE_LOSSES: 'local', the local
expectation gradient of K label maps drawn per pixel (reward_sampling.py);
'reinforce', REINFORCE with a baseline of BASELINES; 'weighted_ce',
cross-entropy with the ground truth, scaled per image by the argmax's reward.
Each scope scores its units from IoUMetric's counts (reward_counts.py): an
image, the batch of every rank, or the recent batches (the buffer
`history`). A loss's value is loss_weight x (1 - the reward); its gradient
is the estimate (`_LossWithGradient`).

Nothing here imports MMSeg: the reward heads of each MMSeg generation call
it (reward_head.py). What `reward_cfg` may say, and the table of rewards,
are reward_schema.py's.
"""
from collections import namedtuple

import torch
import torch.distributed as dist
from torch import Tensor

from .reward_counts import (class_counts, confusion, count_keys, flip_terms,
                            label_rows, labelled_pixels, reward_of_counts)
from .reward_device import fusion
from .reward_sampling import channel_max, local_expectation, sample_labels
from .reward_schema import check_reward_cfg


class _LossWithGradient(torch.autograd.Function):
    """A scalar with a chosen value whose gradient is a chosen tensor.

    Mixed precision: the value and the gradient stay float32 whatever the
    dtype of `inputs` (fp16 or bf16 logits under autocast); the gradient is
    cast to it only after it is multiplied by the incoming one (AMP's loss
    scale), so fp16 neither overflows nor flushes small entries to zero.
    """

    @staticmethod
    def forward(ctx, inputs, gradient, value):
        ctx.save_for_backward(gradient)
        ctx.dtype = inputs.dtype
        return value.detach().to(torch.float32, copy=True)

    @staticmethod
    def backward(ctx, grad_output):
        # in place: no second tensor of the logits' size (a second backward
        # through the same graph fails on the modified saved tensor)
        gradient, = ctx.saved_tensors
        return gradient.mul_(grad_output.float()).to(ctx.dtype), None, None


def _mean_std(values: Tensor, mask: Tensor):
    """Mean and standard deviation of `values` where `mask` (broadcast)."""
    mask = mask.expand_as(values).to(values.dtype)
    count = mask.sum().clamp(min=1)
    mean = (values * mask).sum() / count
    var = ((values - mean)**2 * mask).sum() / (count - 1).clamp(min=1)
    return mean, var.sqrt()


def _loo(rewards, greedy, labelled):
    """Mean reward of the other samples of the same unit (K=2: Algorithm 2)."""
    return (rewards.sum(0, keepdim=True) - rewards) / (rewards.shape[0] - 1)


def _greedy(rewards, greedy, labelled):
    """Reward of the argmax prediction of the same unit."""
    return greedy.expand_as(rewards)


def _batch_mean(rewards, greedy, labelled):
    """Mean reward over all samples of the labelled units."""
    return _mean_std(rewards, labelled)[0].expand_as(rewards)


def _no_baseline(rewards, greedy, labelled):
    return torch.zeros_like(rewards)


BASELINES = dict(
    loo=_loo, greedy=_greedy, batch_mean=_batch_mean, none=_no_baseline)


def _world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


# What each mode's loss reads of one step: the logits, and flat, their
# detached view [B, C, N]; the labels gt [B, H, W] and their count-table
# rows and histogram keys; the argmax (peak, the logits' maximum [B, N], and
# greedy, its class [B, H, W]); the head's CrossEntropyRewardLoss, the pixel
# weights (or None), and the dict of statistics the step returns.
_Step = namedtuple('_Step', [
    'logits', 'flat', 'gt', 'rows', 'keys', 'peak', 'greedy', 'loss_module',
    'pixel_weight', 'stats'
])


class RewardEstimator(torch.nn.Module):
    """The reward loss of a decode head, for every mode and scope.

    Args:
        reward_cfg (dict | None): See `check_reward_cfg`.
        num_classes (int): Number of classes.
        ignore_index (int): Ground-truth value that counts nowhere.

    Called with the logits at label resolution, the labels and the head's
    CrossEntropyRewardLoss, it returns (loss, statistics). Under
    DistributedDataParallel, scope 'batch' and 'dataset' pool the counts of
    every rank with one all_reduce per call, so that the rewards are those of
    the global batch and training on W ranks matches one process on their
    concatenated batches.

    A submodule of the head, so that its state is the head's. The buffer
    `history`, float64 [2, C + 2, C], holds what scope='dataset' adds to a
    batch: the decayed sums of the pooled confusion tables of the samples
    (their mean) and of the argmax; zeros mean no history yet. It is saved
    in checkpoints, so that a resumed run scores its next step as the
    uninterrupted run would, and it is updated from all-reduced tables, so
    it is the same on every rank. Every scope has it (zeros but for
    'dataset'): a checkpoint loads whatever the scope of the head it loads
    into. It stays float64 when the model is cast (`half()`, `to(dtype)`):
    only its device follows. A checkpoint without it (written before it was
    saved, or a cross-entropy model's for `load_from`) loads without a
    missing key and leaves zeros.
    """

    def __init__(self, reward_cfg, num_classes: int, ignore_index: int):
        super().__init__()
        self.cfg = check_reward_cfg(reward_cfg)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.register_buffer(
            'history',
            torch.zeros(2, num_classes + 2, num_classes, dtype=torch.float64))

    def _apply(self, fn, *args, **kwargs):
        # a cast to fp16 would overflow the counts (and round them): keep
        # float64 and follow the device alone
        history = self.history
        super()._apply(fn, *args, **kwargs)
        if self.history.dtype != history.dtype:
            self.history = history.to(self.history.device)
        return self

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        key = prefix + 'history'
        saved = state_dict.get(key)
        if saved is not None and saved.shape != self.history.shape:
            error_msgs.append(
                f"size mismatch for {key}: the scope='dataset' reward "
                f'history in the checkpoint has shape {tuple(saved.shape)} '
                f'({saved.shape[-1]} classes), this head has '
                f'{tuple(self.history.shape)} ({self.num_classes} classes);'
                ' it starts from zeros')
            state_dict = {k: v for k, v in state_dict.items() if k != key}
            saved = None
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if saved is None:
            # a checkpoint without history: no history yet
            if key in missing_keys:
                missing_keys.remove(key)
            with torch.no_grad():
                self.history.zero_()

    def forward(self,
                logits: Tensor,
                gt: Tensor,
                loss_module,
                pixel_weight: Tensor = None):
        """Reward loss of `logits` [B, C, H, W] against `gt` [B, H, W].

        `loss_module` is the head's CrossEntropyRewardLoss: its loss_weight,
        class_weight and avg_non_ignore apply; `pixel_weight` [B, H, W] (a
        pixel sampler's, or a fork's `seg_weight`: pseudo-label confidence)
        scales each pixel's term, in every mode, so that the estimate is
        unbiased for the gradient of the pixel-weighted objective.
        """
        with fusion(self.cfg.get('fuse', False)):
            return self._step(logits, gt, loss_module, pixel_weight)

    def _step(self, logits, gt, loss_module, pixel_weight):
        cfg = self.cfg
        classes = self.num_classes
        rows = label_rows(gt, classes, self.ignore_index)
        keys = count_keys(rows, classes)
        flat = logits.detach().flatten(2)
        with torch.no_grad():
            peak, greedy = channel_max(flat)
            greedy = greedy.view_as(gt)
            stats = dict(acc_seg=self._accuracy(greedy, gt, rows))
        step = _Step(logits, flat, gt, rows, keys, peak, greedy, loss_module,
                     pixel_weight, stats)
        loss = MODE_LOSSES[cfg['mode']](self, step)
        if cfg['mle_weight']:
            loss = loss + cfg['mle_weight'] * loss_module(
                logits,
                gt,
                weight=pixel_weight,
                ignore_index=self.ignore_index)
        return loss, stats

    def _sample(self, step, probs: Tensor = None):
        """K label maps drawn from softmax(logits / T), scored with the
        argmax ('local' and 'reinforce'); `probs`, when given, receives the
        probabilities.

        Returns (samples [K, B, H, W], then for the samples and the argmax
        last: the scored tables, the world size, the pooled tables of this
        batch (`_score`), the rewards and whether each unit is labelled).
        """
        cfg = self.cfg
        stats = step.stats
        with torch.no_grad():
            samples = sample_labels(step.flat, cfg['num_samples'],
                                    cfg['temperature'], step.peak, probs)
            samples = samples.view(-1, *step.gt.shape)
            tables = confusion(
                torch.cat([samples, step.greedy[None]]), step.keys,
                self.num_classes)
            scored, world, current = self._score(tables)
            rewards = reward_of_counts(cfg['reward'], *class_counts(scored))
            labelled = labelled_pixels(scored) > 0
            stats['reward_mean'] = _mean_std(rewards[:-1], labelled[:-1])[0]
            stats['reward_greedy'] = _mean_std(rewards[-1], labelled[-1])[0]
        return samples, scored, world, current, rewards, labelled

    def _accuracy(self, greedy: Tensor, gt: Tensor, rows: Tensor) -> Tensor:
        """MMSeg's acc_seg (top-1, percent of labelled pixels), from the
        argmax that the rewards use."""
        labelled = rows != self.num_classes + 1
        correct = (greedy == gt) & labelled
        return correct.sum() * 100.0 / labelled.sum().clamp(min=1)

    def _score(self, tables: Tensor):
        """The confusion tables of the scoring units, [S, U, C + 2, C].

        Returns (scored tables, world size, pooled tables of this batch);
        the last table of `tables` is the argmax's.
        """
        scope = self.cfg['scope']
        if scope == 'image':
            return tables, 1, tables
        pooled = tables.sum(1, keepdim=True)
        world = _world_size()
        if world > 1:
            dist.all_reduce(pooled)
        if scope == 'batch':
            return pooled, world, pooled
        decay = self.cfg['decay']
        current = torch.stack([pooled[:-1, 0].mean(0), pooled[-1, 0]])
        # zeros before the first batch: past is then zero too
        past = decay * self.history.to(current.device)
        scored = pooled + torch.cat(
            [past[:1].expand(pooled.shape[0] - 1, -1, -1), past[1:]])[:, None]
        # in place: DDP broadcasts (and a caller may hold) this very tensor
        self.history.copy_(past + current)
        return scored, world, pooled

    def _local(self, step) -> Tensor:
        """A loss whose value is loss_weight x (1 - the samples' reward) and
        whose gradient is minus the local expectation estimate, scaled.

        Scale: each unit's reward is multiplied by its labelled pixels M_u
        and the sum divided by Z, the labelled pixels of the local batch
        (all its pixels unless avg_non_ignore, as CrossEntropyLoss divides;
        pooled scopes: the global count over the world size). A pixel's
        flip then changes M_u R_u by about 1 / (class frequency x classes),
        so the gradient has the size of cross-entropy's and the learning
        rate where a CE schedule ended suits it.
        """
        with torch.no_grad():
            probs = torch.empty(
                step.flat.shape, dtype=torch.float32, device=step.flat.device)
        samples, scored, world, current = self._sample(step, probs)[:4]
        scored = scored[:-1]  # the samples' units, not the argmax's
        logits, loss_module = step.logits, step.loss_module
        with torch.no_grad():
            cfg = self.cfg
            batch_tables = current[:-1]
            if loss_module.avg_non_ignore:
                normaliser = labelled_pixels(batch_tables[0]).sum()
            else:
                normaliser = batch_tables[0].sum()
            normaliser = normaliser / world
            count = samples.shape[0]
            # minus: the loss's gradient is minus the estimate
            scale = labelled_pixels(scored) * -loss_module.loss_weight / (
                normaliser.clamp(min=1) * cfg['temperature'] * count)
            terms = flip_terms(cfg['reward'], *class_counts(scored))
            # by the ground-truth class: a fixed positive scale per pixel, so
            # the estimate stays unbiased for the weighted gradient
            weight = self._row_weights(loss_module.class_weight, logits.device)
            rows = step.rows.flatten(1)
            pixel_scale = weight[rows.long()]
            if step.pixel_weight is not None:
                pixel_scale.mul_(step.pixel_weight.flatten(1))
            gradient = local_expectation(probs, samples.flatten(2), rows,
                                         [t.float() for t in terms],
                                         scale.float(), pixel_scale)
        value = loss_module.loss_weight * (1 - step.stats['reward_mean'])
        return _LossWithGradient.apply(logits, gradient.view_as(logits),
                                       value.float())

    def _row_weights(self, class_weight, device) -> Tensor:
        """Each count-table row's pixel weight, float32 [C + 2]: its class
        weight (1 without them), 1 for a labelled value out of range, 0 for
        an ignored pixel.

        Made once per device and class weights and kept: host numbers
        copied to a GPU every step would make the host wait for it.
        """
        if class_weight is not None:
            class_weight = tuple(float(w) for w in class_weight)
            if len(class_weight) != self.num_classes:
                raise ValueError(f'class_weight: {len(class_weight)} weights '
                                 f'for {self.num_classes} classes')
        key = (str(device), class_weight)
        if getattr(self, '_row_weight_key', None) != key:
            weights = list(class_weight or [1.0] * self.num_classes)
            self._row_weight = torch.tensor(
                weights + [1.0, 0.0], dtype=torch.float32, device=device)
            self._row_weight_key = key
        return self._row_weight

    def _reinforce(self, step) -> Tensor:
        """Minimise mean_k (R_k - b_k) * CE(logits / T, y_k) over labelled
        pixels, b_k the baseline of BASELINES."""
        cfg = self.cfg
        logits, gt, stats = step.logits, step.gt, step.stats
        samples, _, _, _, rewards, labelled = self._sample(step)
        with torch.no_grad():
            sampled, greedy = rewards[:-1], rewards[-1]
            labelled = labelled[:-1]
            baseline = BASELINES[cfg['baseline']](sampled, greedy, labelled)
            advantage = (sampled - baseline) * labelled
            adv_std = _mean_std(advantage, labelled)[1]
            stats['adv_std'] = adv_std
            if cfg['normalize_advantage']:
                advantage = advantage / (adv_std + 1e-6)
            advantage = advantage.float().expand(-1, gt.shape[0])
            # ignored pixels carry no log-likelihood
            targets = samples.masked_fill(gt == self.ignore_index,
                                          self.ignore_index)
        scale = 1.0 / cfg['temperature']
        return step.loss_module(
            logits * scale if scale != 1.0 else logits,
            targets,
            reward=advantage,
            weight=step.pixel_weight,
            ignore_index=self.ignore_index,
            ground_truth=gt)

    def _weighted_ce(self, step) -> Tensor:
        """The earlier manual recipe: CE with the ground truth, per image
        scaled by v = 1 - R(argmax) minus 0.1 x the mean v of the other
        labelled images of the batch."""
        stats = step.stats
        with torch.no_grad():
            scored = confusion(step.greedy, step.keys, self.num_classes)
            greedy_reward = reward_of_counts(self.cfg['reward'],
                                             *class_counts(scored))
            labelled = labelled_pixels(scored) > 0
            miss = (1.0 - greedy_reward) * labelled
            others = (miss.sum() - miss) / (labelled.sum() -
                                            labelled.long()).clamp(min=1)
            weight = ((miss - 0.1 * others) * labelled).float()
            stats['reward_mean'] = _mean_std(greedy_reward, labelled)[0]
            stats['reward_greedy'] = stats['reward_mean']
            stats['adv_std'] = _mean_std(weight, labelled)[1]
        return step.loss_module(
            step.logits,
            step.gt,
            reward=weight,
            weight=step.pixel_weight,
            ignore_index=self.ignore_index)


# The loss of each mode of reward_cfg (MODES in reward_schema.py), as
# BASELINES holds each baseline: a method of RewardEstimator, called with
# the step's _Step.
MODE_LOSSES = dict(
    local=RewardEstimator._local,
    reinforce=RewardEstimator._reinforce,
    weighted_ce=RewardEstimator._weighted_ce)
