"""Rewards computed from class counts, and estimators of their gradient.

The rewards (the rows of REWARDS in reward_schema.py: mean IoU, mean Dice,
...) see a label map only through three counts per class c, as MMSeg's
IoUMetric does: I_c, labelled pixels predicted c whose ground truth is c;
P_c, labelled pixels predicted c; G_c, pixels whose ground truth is c. The
conventions are IoUMetric's: pixels whose ground truth is `ignore_index`
count nowhere; any other ground truth outside [0, C) counts in P but in no G
or I; a mean over classes runs over those whose union (Dice: P + G) is not
empty; a unit without labelled pixels scores 0. A scoring unit ('scope')
pools the counts of one image, of the whole batch on every rank, or of the
recent batches (a decayed sum, standing in for the dataset that IoUMetric
scores).

Moving one pixel whose ground truth is g from class a to class b changes the
counts of a and b only, so every such move's reward change is a sum of a
term of (a, g) and a term of (g, b) over a denominator that moves by whole
classes (`flip_terms`: O(C) numbers per unit), and R_i(b), the reward with
pixel i set to b, is a product of rank 4 over (pixel, class) plus two
entries per pixel: a matrix product, O(N C), with no table of C^3 entries.
With y ~ p, p_i = softmax(z_i / T) drawn independently per pixel, the local
expectation gradient (Titsias and Lazaro-Gredilla, NeurIPS 2015)

    g_ib = p_i(b) (R_i(b) - V_i) / T,    V_i = sum_b p_i(b) R_i(b)

is an unbiased estimate of dE[R]/dz_ib: R_i(b) does not depend on y_i, so
only the draw of the other pixels is random.

The file reads in sections, in this order: the device policy (the CPU's, or
the GPU's: how the per-pixel passes are cut, and what they may ask of the
device); counting (the confusion table of each scoring unit, one histogram
per batch); the rewards of counts and of one pixel's move; sampling; the
estimators (the local expectation gradient, REINFORCE's baselines, and
`RewardEstimator`, which runs every mode and scope); the head integration
that every MMSeg generation's reward heads share (`RewardHeadMixin`). What
`reward_cfg` may say, and the table of rewards, are reward_schema.py's.

Nothing here imports MMSeg: the heads of each MMSeg generation call it.
"""
import contextlib
import inspect
import math
import warnings
from collections.abc import Mapping

import torch
import torch.distributed as dist
from torch import Tensor

from .reward_schema import check_reward_cfg, reward_row

# The per-pixel passes (sampling, the local expectation gradient, counting)
# run over slices of the pixels (`pixel_slices`). On the CPU they are slabs
# small enough to stay in its caches; on a GPU every slice costs a few dozen
# kernel launches, so there they are as few as memory allows.
# elements of the logits per slab on the CPU
SLAB_ELEMENTS = 1 << 20
# label_confusion on the CPU counts this many ground-truth pixels at a time
COUNT_SLAB_ELEMENTS = 1 << 19
# on a GPU, the temporaries of one slice stay within this many logits-sized
# float tensors
GPU_SLICE_LOGITS = 1.0
# label_rows on the CPU looks labels up in a table when their range is this
# small
LOOKUP_VALUES = 1 << 16

if hasattr(torch, 'aminmax'):
    _value_range = torch.aminmax
else:  # torch < 1.10 has no aminmax: two passes, the same two values

    def _value_range(values: Tensor):
        return values.min(), values.max()


# The device policy, chosen here alone: the CPU's reads small values back to
# the host and cuts the passes for its caches; the GPU policy (every other
# device: CUDA and other accelerators) never makes the host wait. Nothing is
# read back, no host value is copied in per step, no operation has an output
# whose size depends on values (nonzero, boolean masks, bincount), and the
# kernels a step launches do not grow with the image size or the batch.
# Tests run it on CPU tensors: `with device_policy('gpu'): ...`.

# the policies `device_policy` forces, innermost last
_FORCED_POLICY = []


@contextlib.contextmanager
def device_policy(name: str):
    """Within it, every tensor follows policy `name` ('cpu' or 'gpu'),
    whatever its device."""
    if name not in ('cpu', 'gpu'):
        raise ValueError(f"policy must be 'cpu' or 'gpu', got {name!r}")
    _FORCED_POLICY.append(name == 'gpu')
    try:
        yield
    finally:
        _FORCED_POLICY.pop()


def gpu_policy(tensor: Tensor) -> bool:
    """Whether the passes over `tensor` follow the GPU policy."""
    if _FORCED_POLICY:
        return _FORCED_POLICY[-1]
    return tensor.device.type != 'cpu'


def pixel_slices(like: Tensor, temporaries: int):
    """Slices of the last dimension of `like` [B, C, N] (logits, or their
    probabilities) for a pass that holds `temporaries` floats per pixel and
    image besides.

    CPU: slabs of SLAB_ELEMENTS elements of `like`. GPU: as few slices as
    keep the temporaries within GPU_SLICE_LOGITS logits-sized tensors; their
    number depends on C and the pass (K), not on B or N.
    """
    batch, classes, pixels = like.shape
    if gpu_policy(like) and pixels:
        budget = max(1.0, GPU_SLICE_LOGITS * classes)
        parts = min(pixels, math.ceil(temporaries / budget))
        bounds = [part * pixels // parts for part in range(parts + 1)]
        return [slice(*pair) for pair in zip(bounds, bounds[1:])]
    step = max(1, SLAB_ELEMENTS // max(1, batch * classes))
    return [slice(start, start + step) for start in range(0, pixels, step)]


class _Fused:
    """A pass's slice function compiled by torch.compile (reward_cfg
    fuse=True): on a GPU its few dozen small kernels become a few. The eager
    function runs where torch has no torch.compile (< 2.0) and, with one
    warning, for good once compiling it has failed."""

    def __init__(self, function):
        self.eager = function
        self.compiled = None
        if hasattr(torch, 'compile'):
            self.compiled = torch.compile(function)

    def __call__(self, *args):
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as error:  # the compiler's: Triton, a C compiler
                warnings.warn(
                    f'reward_cfg fuse=True: torch.compile failed on '
                    f'{self.eager.__name__} ({type(error).__name__}: '
                    f'{error}); the reward runs eagerly')
                self.compiled = None
        return self.eager(*args)


# slice function -> its _Fused, made on first use
_FUSED = {}
# what `fusion` asks, innermost last
_FUSING = []


def fused(function):
    """`function` fused by torch.compile, compiled once per process."""
    if function not in _FUSED:
        _FUSED[function] = _Fused(function)
    return _FUSED[function]


@contextlib.contextmanager
def fusion(on: bool):
    """Within it, the per-pixel passes run `fused` where `on` is True (the
    estimator's step, with reward_cfg fuse=True)."""
    _FUSING.append(bool(on))
    try:
        yield
    finally:
        _FUSING.pop()


def fusing() -> bool:
    """Whether the per-pixel passes run fused here."""
    return bool(_FUSING) and _FUSING[-1]


# Counting: IoUMetric's counts, from one histogram of (ground truth, predicted
# class) pairs per batch.


def label_rows(gt: Tensor, num_classes: int, ignore_index: int) -> Tensor:
    """The row of each pixel in a count table: its class when the ground
    truth is in [0, C), C for any other labelled value, C + 1 when ignored.

    int32: these passes over every pixel are bound by memory traffic. On
    the CPU one lookup through a table of the values present replaces them
    (reading the range back costs nothing there; the GPU policy does not).
    """
    if not gpu_policy(gt) and not gt.is_floating_point() and gt.numel() > 0:
        low, high = (int(v) for v in _value_range(gt))
        if high - low < LOOKUP_VALUES:
            values = torch.arange(low, high + 1, device=gt.device)
            table = _label_rows(values, num_classes, ignore_index)
            index = gt.long()
            return table.take(index - low if low else index)
    return _label_rows(gt, num_classes, ignore_index)


def _label_rows(gt: Tensor, num_classes: int, ignore_index: int) -> Tensor:
    gt = gt.int()
    in_range = (gt >= 0) & (gt < num_classes)
    # C as a 0-dim int32 tensor: torch < 1.12 refuses a Python number beside
    # an int32 tensor in torch.where
    rows = torch.where(in_range, gt, gt.new_full((), num_classes))
    return rows.masked_fill_(gt == ignore_index, num_classes + 1)


def count_keys(rows: Tensor, num_classes: int) -> Tensor:
    """Histogram keys of the ground-truth side, shared by every prediction:
    rows [B, H, W] -> rows * C + b * (C + 2) * C."""
    cells = (num_classes + 2) * num_classes
    image = torch.arange(
        rows.shape[0], dtype=rows.dtype, device=rows.device) * cells
    return torch.add(
        image.view(-1, *[1] * (rows.dim() - 1)), rows, alpha=num_classes)


def histogram(keys: Tensor, bins: int) -> Tensor:
    """Counts of each value of the flat integer tensor `keys` in [0, bins)."""
    if gpu_policy(keys):
        # bincount reads the largest key back to the host; this does not
        keys = keys.long()
        counts = torch.zeros(bins, dtype=torch.long, device=keys.device)
        return counts.scatter_add_(0, keys, counts.new_ones(1).expand_as(keys))
    return torch.bincount(keys, minlength=bins)


def confusion(pred: Tensor, keys: Tensor, num_classes: int) -> Tensor:
    """Per-image counts of (ground-truth row, predicted class) pairs.

    Args:
        pred (Tensor): Predicted classes, long [..., B, H, W]; leading
            dimensions (e.g. K samples) share the ground truth.
        keys (Tensor): `count_keys` of the ground truth, [B, H, W].

    Returns:
        Tensor: float64 [..., B, C + 2, C]; row C counts labelled pixels
        whose ground truth is out of range, row C + 1 ignored ones.
    """
    cells = (num_classes + 2) * num_classes
    lead = pred.shape[:-3]
    copies = lead.numel()  # math.prod is Python >= 3.8
    per_copy = cells * keys.shape[0]
    flat = pred.to(keys.dtype)
    flat = flat.add_(keys) if flat is not pred else flat + keys
    if copies > 1:
        offset = torch.arange(copies, device=pred.device) * per_copy
        flat = flat + offset.view(*lead, 1, 1, 1)
    counts = histogram(flat.reshape(-1), copies * per_copy)
    shape = (*lead, keys.shape[0], num_classes + 2, num_classes)
    return counts.view(shape).double()


def label_confusion(pred: Tensor, gt: Tensor, num_classes: int,
                    ignore_index: int) -> Tensor:
    """`confusion` of `pred` [..., B, H, W] against the labels `gt` [B, H, W].

    On the CPU, counted a few images at a time: temporaries of
    COUNT_SLAB_ELEMENTS pixels stay in its caches, which makes this about
    twice as fast there as one pass over the batch. The GPU policy counts in
    one pass (its temporaries are a few integers per label).
    """
    pixels = gt[0].numel() if len(gt) else 1
    step = max(1, COUNT_SLAB_ELEMENTS // max(1, pixels))
    if gpu_policy(gt):
        step = max(1, len(gt))
    tables = []
    # at least one slab: an empty batch gets its empty table
    for start in range(0, max(1, len(gt)), step):
        rows = label_rows(gt[start:start + step], num_classes, ignore_index)
        tables.append(
            confusion(pred[..., start:start + step, :, :],
                      count_keys(rows, num_classes), num_classes))
    return torch.cat(tables, dim=-3)


def class_counts(table: Tensor):
    """(I, P, G), each [..., C], from confusion tables [..., C + 2, C]."""
    num_classes = table.shape[-1]
    inside = table[..., :num_classes, :]
    intersect = torch.diagonal(inside, dim1=-2, dim2=-1)
    predicted = table[..., :num_classes + 1, :].sum(-2)
    return intersect, predicted, inside.sum(-1)


def labelled_pixels(table: Tensor) -> Tensor:
    """Pixels counted by confusion tables [..., C + 2, C], ignored ones not."""
    return table[..., :table.shape[-1] + 1, :].sum((-2, -1))


# Rewards: of counts, and what moving one pixel does to them.


def _terms(reward: str, intersect: Tensor, predicted: Tensor, truth: Tensor):
    """Per class (numerator, denominator) whose sums' ratio is the reward:
    its row of REWARDS (reward_schema.py)."""
    return reward_row(reward)(intersect, predicted, truth)


def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    positive = denominator > 0
    safe = torch.where(positive, denominator, torch.ones_like(denominator))
    return torch.where(positive, numerator / safe, torch.zeros_like(numerator))


def reward_of_counts(reward: str, intersect: Tensor, predicted: Tensor,
                     truth: Tensor) -> Tensor:
    """The reward of counts [..., C] -> [...]."""
    numerator, denominator = _terms(reward, intersect, predicted, truth)
    return _ratio(numerator.sum(-1), denominator.sum(-1))


def flip_terms(reward: str, intersect: Tensor, predicted: Tensor,
               truth: Tensor):
    """What one labelled pixel's move between classes does to the reward.

    A pixel whose ground-truth row is g (C: out of range) moving from class a
    to class b changes the terms of a and b only: a loses a pixel (and its
    intersection when g == a), b gains one (and the intersection when
    g == b). With S and D the sums of the numerators and denominators of
    `_terms` and r = S / D the reward, the change is

        (alpha[own_a, a] + beta[own_b, b]) * inverse[lost[own_a, a], b]

    own_a = (g == a), own_b = (g == b): (S + x) / (D + y) - r with x, y the
    changes of S and D, written (x - y r) / (D + y), so that it stays exact
    in float32 however large r is beside the change. D only moves by whole
    classes: a class whose union (Dice: P + G) was one pixel drops out
    (lost = 1), an absent class that gains a pixel comes in; the class of g
    is present. So nothing here grows with C^3: every table is [..., 2, C].

    Args:
        intersect, predicted, truth (Tensor): I, P, G of the units, [..., C],
            counting the pixel at its current class.

    Returns:
        tuple[Tensor]: (alpha, lost, beta, inverse), each [..., 2, C] in the
        counts' dtype: alpha and lost indexed [own_a, a], beta [own_b, b],
        inverse [lost, b] = 1 / (D - lost + [b absent]) (0 where that is 0:
        then nothing is labelled and every change is 0).
    """
    numerator, denominator = _terms(reward, intersect, predicted, truth)
    total = denominator.sum(-1)[..., None, None]
    before = _ratio(numerator.sum(-1), denominator.sum(-1))[..., None, None]
    fewer = (predicted - 1).clamp(min=0)
    # [..., 0, a]: a loses another class's pixel; [..., 1, a]: its own
    kept = (intersect, (intersect - 1).clamp(min=0))
    lose = [_terms(reward, i, fewer, truth) for i in kept]
    # [..., 0, b]: b gains another class's pixel; [..., 1, b]: its own
    more = predicted + 1
    gain = [_terms(reward, i, more, truth) for i in (intersect, intersect + 1)]
    changes = []
    for other, own in (lose, gain):
        num = torch.stack([other[0], own[0]], -2) - numerator[..., None, :]
        den = torch.stack([other[1], own[1]], -2) - denominator[..., None, :]
        changes.append((num - den * before, den))
    (alpha, lost), (beta, gained) = changes
    steps = torch.arange(2, dtype=total.dtype, device=total.device)
    after = total - steps[:, None] + gained[..., :1, :]
    inverse = _ratio(torch.ones_like(after), after)
    return alpha, -lost, beta, inverse


def flip_table(reward: str, intersect: Tensor, predicted: Tensor,
               truth: Tensor) -> Tensor:
    """Every move's change of the reward, from `flip_terms`; O(C^3), for
    reading and testing: the estimator never builds it.

    Returns:
        Tensor: [..., C, C + 1, C]; entry [a, g, b] is R(after) - R(before)
        when a pixel whose ground-truth row is g (C: out of range) moves from
        class a to class b. Zero where a == b.
    """
    classes = intersect.shape[-1]
    alpha, lost, beta, inverse = flip_terms(reward, intersect, predicted,
                                            truth)
    device = intersect.device
    own = torch.eye(classes, classes + 1, device=device).long()  # [a, g]
    lead = alpha.shape[:-2]
    a = torch.arange(classes, device=device)[:, None].expand_as(own)
    # [..., a, g] by own_a = (g == a), then [..., a, g, b]
    lose = alpha.flatten(-2)[..., own * classes + a]
    which = lost.flatten(-2)[..., own * classes + a].long()
    gain = torch.where(own.t().bool(), beta[..., None, 1, :],
                       beta[..., None, 0, :])  # [..., g, b]
    scale = inverse[..., None, :, :].expand(*lead, classes, 2, classes)
    which = which[..., None].expand(*lead, classes, classes + 1, classes)
    scale = scale.gather(-2, which)
    delta = (lose[..., None] + gain[..., None, :, :]) * scale
    same = torch.eye(classes, device=device).bool()
    return delta.masked_fill(same[:, None, :], 0)


# Sampling: the argmax, and label maps drawn from softmax(logits / T).


def channel_max(logits: Tensor):
    """(values, indices) of the maximum over dim 1 of [B, C, N], the first
    index where several are equal, as `logits.max(1)` gives them.

    On the CPU, max(1) over the channels of NCHW logits is several times
    slower than amax(1): the index is found by one comparison per class
    (the GPU policy launches one kernel instead).
    """
    if gpu_policy(logits):
        return logits.max(1)
    peak = logits.amax(1)
    index = torch.full_like(peak, logits.shape[1] - 1, dtype=torch.long)
    for c in range(logits.shape[1] - 2, -1, -1):
        index.masked_fill_(logits[:, c] == peak, c)
    return peak, index


def sample_labels(logits: Tensor,
                  num_samples: int,
                  temperature: float,
                  peak: Tensor,
                  probs: Tensor = None) -> Tensor:
    """K label maps drawn per pixel from softmax(logits / T).

    Args:
        logits (Tensor): [B, C, N], detached.
        peak (Tensor): logits.max(1).values, [B, N]: the softmax's shift.
        probs (Tensor, optional): [B, C, N] float32, filled with the
            probabilities when given (the sampler's weights are computed
            there, in place).

    Returns:
        Tensor: long [K, B, N], by inverse CDF with one uniform per pixel and
        sample, in two levels: the classes in blocks of about sqrt(C), the
        block first, then the class inside it. The cumulative sums are small
        matrix products per slice of pixels (a cumsum across the channels of
        NCHW logits is far slower), O(C^1.5) per pixel instead of O(C^2).
        The uniforms are drawn for the whole batch at once, so that the
        samples do not depend on how the pixels are sliced.
    """
    batch, classes, pixels = logits.shape
    # math.isqrt is Python >= 3.8; int(sqrt) is the same below 2 ** 52
    width = max(2, int(math.sqrt(classes)))
    blocks = -(-classes // width)
    device = logits.device
    block_of = torch.arange(classes, device=device) // width
    members = (block_of == torch.arange(blocks, device=device)[:, None])
    # inclusive cumulative sums of the blocks' masses, and inside a block
    block_sums = torch.ones(blocks, blocks, device=device).tril_()
    block_sums = block_sums.matmul(members.float())
    inner = torch.ones(width - 1, width, device=device).tril_()
    offsets = torch.arange(width, device=device)[:, None]
    uniforms = torch.rand(num_samples, batch, 1, pixels, device=device)
    samples = torch.empty(
        num_samples, batch, pixels, dtype=torch.long, device=device)
    # per pixel and image: the block sums, and per sample the classes of
    # the block drawn, their weights and cumulative sums (long indices count
    # twice)
    temporaries = blocks + num_samples * (5 * width + 4)
    # the GPU policy computes the weights in `probs` itself (no second
    # logits-sized temporary); the CPU's slabs are contiguous temporaries
    # that stay in its caches, copied into `probs` at the end
    in_place = probs is not None and gpu_policy(logits)
    if not in_place:
        temporaries += classes
    draw = fused(_draw_slice) if fusing() else _draw_slice
    for part in pixel_slices(logits, temporaries):
        chunk = logits[:, :, part]
        if in_place:
            weights = out = probs[:, :, part]
        else:
            weights = torch.empty(
                chunk.shape, dtype=torch.float32, device=device)
            out = None if probs is None else probs[:, :, part]
        drawn = draw(chunk, peak[:, None, part], uniforms[..., part], weights,
                     out, block_sums, inner, offsets, 1.0 / temperature)
        samples[:, :, part] = drawn
    return samples


def _draw_slice(chunk: Tensor, peak: Tensor, draws: Tensor, weights: Tensor,
                out: Tensor, block_sums: Tensor, inner: Tensor,
                offsets: Tensor, inverse_temperature: float) -> Tensor:
    """One slice of `sample_labels`: the classes drawn, long [K, B, n].

    `weights` receives exp((z - peak) / T) and `out`, when given, the
    probabilities; where `out` is `weights`, `draws` (the uniforms) is
    overwritten too.
    """
    classes = chunk.shape[1]
    width = offsets.shape[0]
    # the differences in float32 whatever the logits' dtype
    if chunk.dtype == torch.float32:
        torch.sub(chunk, peak, out=weights)
    else:
        weights.copy_(chunk).sub_(peak)
    if inverse_temperature != 1.0:
        weights.mul_(inverse_temperature)
    weights.exp_()
    below = torch.matmul(block_sums, weights)  # [B, blocks, n]
    total = below[:, -1:]
    # in place where the weights are `out`'s (the GPU policy); a
    # contiguous temporary on the CPU
    draws = draws.mul_(total) if out is weights else draws.mul(total)
    # the block: the number of blocks whose cumulative mass is <= u
    block = (below[:, :-1] <= draws).sum(2, keepdim=True)
    cumulative = below.expand(draws.shape[0], -1, -1, -1)
    start = cumulative.gather(2, (block - 1).clamp_(min=0))
    rest = draws.sub_(start.masked_fill_(block == 0, 0))
    rows = block * width + offsets
    beyond = rows >= classes
    rows = rows.clamp_(max=classes - 1)
    inside = weights.expand(draws.shape[0], -1, -1, -1).gather(2, rows)
    inside.masked_fill_(beyond, 0)
    chosen = (torch.matmul(inner, inside) <= rest).sum(2, keepdim=True)
    chosen = rows.gather(2, chosen.clamp_(max=width - 1))
    if out is weights:
        weights.div_(total)
    elif out is not None:
        torch.div(weights, total, out=out)
    return chosen[:, :, 0]


# Estimators: the local expectation gradient ('local'), REINFORCE's baselines
# ('reinforce'), and RewardEstimator, which runs every mode and scope.


def local_expectation(probs: Tensor, samples: Tensor, rows: Tensor,
                      terms: tuple, scale: Tensor,
                      pixel_scale: Tensor) -> Tensor:
    """The local expectation gradient, written over `probs`.

    Args:
        probs (Tensor): p = softmax(z / T), [B, C, N]; overwritten.
        samples (Tensor): long [K, B, N], y ~ p.
        rows (Tensor): [B, N], `label_rows` of the ground truth.
        terms (tuple[Tensor]): `flip_terms` of the samples' scoring units,
            each [K, U, 2, C] float32, U = B (a unit per image) or 1.
        scale (Tensor): [K, U], each unit's scale of its changes.
        pixel_scale (Tensor): [B, N], each pixel's (0 where ignored).

    Returns:
        Tensor: `probs`, now sum_k s_ik p_i(b) (A_ik(b) - sum_c p_i(c)
        A_ik(c)), A_ik(b) the reward change of pixel i moving from y_ik to b
        in sample k, s_ik its scale.

    A_ik(b) is (alpha_ik + beta_k(b)) * inverse_k(lost_ik, b) for every b but
    y_ik (0) and the ground truth (its own beta): per sample a matrix of rank
    4 over (pixel, class) plus two entries per pixel. So one matrix product
    gives sum_b p(b) A(b) and one writes the dense part, with no table of C^3
    entries or gather per class; the two entries are scattered in after.
    """
    batch, classes, pixels = probs.shape
    count, units = scale.shape
    # [K, U, C, 4]: per sample, the class side of the rank-4 product
    unlost, relost = terms[3].unbind(2)
    other = terms[2][:, :, 0]
    dense = torch.stack([unlost, other * unlost, relost, other * relost], -1)
    dense = dense.permute(1, 2, 0, 3).flatten(2)  # [U, C, 4K]
    dense = torch.cat([dense, dense.new_ones(units, classes, 1)], -1)
    alpha, lost, beta, inverse = (
        t.flatten(-2).expand(count, batch, 2 * classes) for t in terms)
    unit = scale.expand(count, batch)
    # per pixel and image, in floats: the dense product (C), and per sample
    # the pixel side, its product and a score of entries (long ones count
    # twice)
    temporaries = classes + count * 24
    pass_slice = fused(_local_slice) if fusing() else _local_slice
    for part in pixel_slices(probs, temporaries):
        scales = pixel_scale[None, :, part]
        pass_slice(probs[:, :, part], samples[:, :, part], rows[:, part],
                   scales, alpha, lost, beta, inverse, unit, dense)
    return probs


def _local_slice(chosen: Tensor, sample: Tensor, truth: Tensor,
                 pixel_scale: Tensor, alpha: Tensor, lost: Tensor,
                 beta: Tensor, inverse: Tensor, unit: Tensor,
                 dense: Tensor) -> None:
    """One slice of `local_expectation`, written over `chosen` (its
    probabilities)."""
    classes = chosen.shape[1]
    truth = truth.long()
    inside = truth < classes
    own = sample == truth
    at = sample + own * classes
    a_loss = alpha.gather(2, at)
    a_lost = lost.gather(2, at)
    weight = unit[..., None] * pixel_scale
    # the pixel side of the product, [B, 4K + 1, n]
    kept = weight * (1 - a_lost)
    drop = weight * a_lost
    side = torch.stack([kept * a_loss, kept, drop * a_loss, drop], 2)
    side = side.transpose(0, 1).flatten(1, 2)
    # the two entries per pixel and sample that the product gets wrong
    to_truth = truth.clamp(max=classes - 1).expand_as(sample)
    which = a_lost.long() * classes
    step = inverse.gather(2, which + to_truth)
    fix_truth = weight * inside * step * (
        beta.gather(2, to_truth + classes) - beta.gather(2, to_truth))
    fix_sample = weight * (a_loss + beta.gather(2, at)) * inverse.gather(
        2, which + sample)
    fix_truth *= chosen.gather(1, to_truth[0][:, None]).squeeze(1)
    fix_sample *= chosen.gather(1, sample.transpose(0, 1)).transpose(0, 1)
    mean = torch.matmul(dense[..., :-1].transpose(1, 2), chosen)
    mean = (mean * side).sum(1)
    mean += (fix_truth - fix_sample).sum(0)
    side = torch.cat([side, mean.neg_()[:, None]], 1)
    torch.mul(torch.matmul(dense, side), chosen, out=chosen)
    chosen.scatter_add_(1, to_truth.transpose(0, 1), fix_truth.transpose(0, 1))
    chosen.scatter_add_(1, sample.transpose(0, 1),
                        fix_sample.neg_().transpose(0, 1))


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
        if cfg['mode'] == 'weighted_ce':
            loss = self._weighted_ce(logits, gt, keys, greedy, loss_module,
                                     pixel_weight, stats)
        else:
            with torch.no_grad():
                probs = None
                if cfg['mode'] == 'local':
                    probs = torch.empty(
                        flat.shape, dtype=torch.float32, device=flat.device)
                samples = sample_labels(flat, cfg['num_samples'],
                                        cfg['temperature'], peak, probs)
                samples = samples.view(-1, *gt.shape)
                tables = confusion(
                    torch.cat([samples, greedy[None]]), keys, classes)
                scored, world, current = self._score(tables)
                rewards = reward_of_counts(cfg['reward'],
                                           *class_counts(scored))
                labelled = labelled_pixels(scored) > 0
                stats['reward_mean'] = _mean_std(rewards[:-1],
                                                 labelled[:-1])[0]
                stats['reward_greedy'] = _mean_std(rewards[-1],
                                                   labelled[-1])[0]
            if cfg['mode'] == 'reinforce':
                loss = self._reinforce(logits, gt, samples, rewards, labelled,
                                       loss_module, pixel_weight, stats)
            else:
                loss = self._local(logits, probs, samples, rows, scored[:-1],
                                   world, current, loss_module, pixel_weight,
                                   stats)
        if cfg['mle_weight']:
            loss = loss + cfg['mle_weight'] * loss_module(
                logits,
                gt,
                weight=pixel_weight,
                ignore_index=self.ignore_index)
        return loss, stats

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

    def _local(self, logits, probs, samples, rows, scored, world, current,
               loss_module, pixel_weight, stats) -> Tensor:
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
            rows = rows.flatten(1)
            pixel_scale = weight[rows.long()]
            if pixel_weight is not None:
                pixel_scale.mul_(pixel_weight.flatten(1))
            gradient = local_expectation(probs, samples.flatten(2), rows,
                                         [t.float() for t in terms],
                                         scale.float(), pixel_scale)
        value = loss_module.loss_weight * (1 - stats['reward_mean'])
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

    def _reinforce(self, logits, gt, samples, rewards, labelled, loss_module,
                   pixel_weight, stats) -> Tensor:
        cfg = self.cfg
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
        return loss_module(
            logits * scale if scale != 1.0 else logits,
            targets,
            reward=advantage,
            weight=pixel_weight,
            ignore_index=self.ignore_index,
            ground_truth=gt)

    def _weighted_ce(self, logits, gt, keys, greedy, loss_module, pixel_weight,
                     stats) -> Tensor:
        """The earlier manual recipe: CE with the ground truth, per image
        scaled by v = 1 - R(argmax) minus 0.1 x the mean v of the other
        labelled images of the batch."""
        with torch.no_grad():
            scored = confusion(greedy, keys, self.num_classes)
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
        return loss_module(
            logits,
            gt,
            reward=weight,
            weight=pixel_weight,
            ignore_index=self.ignore_index)


# Head integration: what every generation's reward heads share (`Reward<X>`
# takes X's arguments). These read configs and modules only; the adapters call
# them.


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
