"""The per-pixel passes over the logits: the argmax, label maps drawn from
softmax(logits / T), and the local expectation gradient of those samples.

With y ~ p, p_i = softmax(z_i / T) drawn independently per pixel, the local
expectation gradient (Titsias and Lazaro-Gredilla, NeurIPS 2015)

    g_ib = p_i(b) (R_i(b) - V_i) / T,    V_i = sum_b p_i(b) R_i(b)

is an unbiased estimate of dE[R]/dz_ib: R_i(b) does not depend on y_i, so
only the draw of the other pixels is random. R_i(b), the reward with pixel i
set to b, is that of y plus the change of one pixel's move (`flip_terms`,
reward_counts.py): a product of rank 4 over (pixel, class) plus two entries
per pixel, so `local_expectation` is a matrix product, O(N C), with no table
of C^3 entries.

Each pass runs over the slices of the pixels that the device policy cuts
(`pixel_slices`, reward_device.py).
"""
import math

import torch
from torch import Tensor

from .reward_device import fused, fusing, gpu_policy, pixel_slices

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


# The local expectation gradient ('local'): every pixel's reward change for
# every class, from the flip terms of its sample's scoring unit.


def local_expectation(probs: Tensor, samples: Tensor, rows: Tensor,
                      terms: tuple, scale: Tensor,
                      pixel_scale: Tensor) -> Tensor:
    """The local expectation gradient, written over `probs`.

    Args:
        probs (Tensor): p = softmax(z / T), [B, C, N]; overwritten.
        samples (Tensor): long [K, B, N], y ~ p.
        rows (Tensor): [B, N], `label_rows` of the ground truth g.
        terms (tuple[Tensor]): `flip_terms` of the samples' scoring units,
            (alpha, lost, beta, inverse), each [K, U, 2, C] float32, U = B
            (a unit per image) or 1.
        scale (Tensor): [K, U], each unit's scale of its changes.
        pixel_scale (Tensor): [B, N], each pixel's (0 where ignored).

    Returns:
        Tensor: `probs`, now sum_k s_ik p_i(b) (A_ik(b) - sum_c p_i(c)
        A_ik(c)), A_ik(b) the reward change of pixel i moving from y_ik to b
        in sample k, s_ik its scale (its unit's times its own).

    A_ik(b) is (alpha_ik + beta_k(b)) * inverse_k(lost_ik, b) for every b but
    y_ik (0) and the ground truth g_i (its own beta): alpha_ik and lost_ik
    are the entries [own, y_ik] of alpha_k and lost_k (own: y_ik == g_i),
    beta_k(b) the entry [0, b] of beta_k. As lost_ik is 0 or 1, s_ik A_ik(b)
    is per sample a matrix of rank 4 over (pixel, class): the sum over j of
    pixel_side[j] class_side[j], with

        pixel_side = s_ik (1 - lost_ik) alpha_ik, s_ik (1 - lost_ik),
                     s_ik lost_ik alpha_ik, s_ik lost_ik
        class_side = inverse_k(0, b), beta_k(b) inverse_k(0, b),
                     inverse_k(1, b), beta_k(b) inverse_k(1, b)

    plus two entries per pixel, where the product is wrong: b = g_i
    (`entry_truth`) and b = y_ik (`entry_y`). So one matrix product gives
    sum_b p(b) A(b) and one writes the product's part, with no table of C^3
    entries or gather per class; the two entries are scattered in after.
    """
    batch, classes, pixels = probs.shape
    count, units = scale.shape
    # inverse_k(0, b), inverse_k(1, b) and beta_k(b), each [K, U, C]
    inverse_kept, inverse_lost = terms[3].unbind(2)
    beta_b = terms[2][:, :, 0]
    # [K, U, C, 4]: per sample, the class side of the rank-4 product
    class_side = torch.stack([
        inverse_kept, beta_b * inverse_kept, inverse_lost,
        beta_b * inverse_lost
    ], -1)
    class_side = class_side.permute(1, 2, 0, 3).flatten(2)  # [U, C, 4K]
    # and a column of ones, [U, C, 4K + 1]
    class_side = torch.cat(
        [class_side, class_side.new_ones(units, classes, 1)], -1)
    # [K, B, 2C]: the tables of each sample's unit, entry own * C + a
    alpha, lost, beta, inverse = (
        t.flatten(-2).expand(count, batch, 2 * classes) for t in terms)
    unit_scale = scale.expand(count, batch)
    # per pixel and image, in floats: the dense product (C), and per sample
    # the pixel side, its product and a score of entries (long ones count
    # twice)
    temporaries = classes + count * 24
    pass_slice = fused(_local_slice) if fusing() else _local_slice
    for part in pixel_slices(probs, temporaries):
        pass_slice(probs[:, :, part], samples[:, :, part], rows[:, part],
                   pixel_scale[None, :, part], alpha, lost, beta, inverse,
                   unit_scale, class_side)
    return probs


def _local_slice(probs: Tensor, y: Tensor, truth: Tensor, pixel_scale: Tensor,
                 alpha: Tensor, lost: Tensor, beta: Tensor, inverse: Tensor,
                 unit_scale: Tensor, class_side: Tensor) -> None:
    """One slice of `local_expectation`, written over `probs` (p_i of its
    pixels): y [K, B, n] holds y_ik, truth [B, n] the rows of g_i."""
    classes = probs.shape[1]
    truth = truth.long()
    truth_is_class = truth < classes
    own = y == truth
    # entry [own, y_ik] of each table, flattened: alpha_ik and lost_ik
    y_entry = y + own * classes
    alpha_ik = alpha.gather(2, y_entry)
    lost_ik = lost.gather(2, y_entry)
    s_ik = unit_scale[..., None] * pixel_scale
    # the pixel side of the product, [B, 4K, n]
    s_kept = s_ik * (1 - lost_ik)
    s_lost = s_ik * lost_ik
    pixel_side = torch.stack(
        [s_kept * alpha_ik, s_kept, s_lost * alpha_ik, s_lost], 2)
    pixel_side = pixel_side.transpose(0, 1).flatten(1, 2)
    # the two entries per pixel and sample that the product gets wrong: at
    # b = g_i it has beta_k(g_i), not g_i's own beta; at b = y_ik, not 0
    g = truth.clamp(max=classes - 1).expand_as(y)
    lost_row = lost_ik.long() * classes
    inverse_g = inverse.gather(2, lost_row + g)
    entry_truth = s_ik * truth_is_class * inverse_g * (
        beta.gather(2, g + classes) - beta.gather(2, g))
    entry_y = s_ik * (alpha_ik + beta.gather(2, y_entry)) * inverse.gather(
        2, lost_row + y)
    entry_truth *= probs.gather(1, g[0][:, None]).squeeze(1)
    entry_y *= probs.gather(1, y.transpose(0, 1)).transpose(0, 1)
    # sum_k s_ik sum_c p_i(c) A_ik(c), [B, n]: the product's, corrected
    mean = torch.matmul(class_side[..., :-1].transpose(1, 2), probs)
    mean = (mean * pixel_side).sum(1)
    mean += (entry_truth - entry_y).sum(0)
    # [B, 4K + 1, n]: the last row meets the column of ones
    pixel_side = torch.cat([pixel_side, mean.neg_()[:, None]], 1)
    torch.mul(torch.matmul(class_side, pixel_side), probs, out=probs)
    probs.scatter_add_(1, g.transpose(0, 1), entry_truth.transpose(0, 1))
    probs.scatter_add_(1, y.transpose(0, 1), entry_y.neg_().transpose(0, 1))
