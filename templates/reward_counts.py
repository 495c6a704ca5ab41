"""IoUMetric's counts of label maps, and the rewards of counts.

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
entries per pixel: a matrix product, O(N C), with no table of C^3 entries
(`local_expectation`, reward_sampling.py).

The file reads in sections: counting (the confusion table of each scoring
unit, one histogram per batch); the rewards of counts and of one pixel's
move. What `reward_cfg` may say, and the table of rewards, are
reward_schema.py's.
"""
import torch
from torch import Tensor

from .reward_device import gpu_policy
from .reward_schema import reward_row

# label_confusion on the CPU counts this many ground-truth pixels at a time
COUNT_SLAB_ELEMENTS = 1 << 19
# label_rows on the CPU looks labels up in a table when their range is this
# small
LOOKUP_VALUES = 1 << 16

if hasattr(torch, 'aminmax'):
    _value_range = torch.aminmax
else:  # torch < 1.10 has no aminmax: two passes, the same two values

    def _value_range(values: Tensor):
        return values.min(), values.max()


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
