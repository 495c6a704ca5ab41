"""The exact gradient of the expected mIoU for problems too large to enumerate.

When every class has ground-truth pixels in a scoring unit, every class is present
whatever is predicted, and the unit's mIoU is a sum of per-class terms
I_c / (G_c + F_c), F_c = P_c - I_c. For a factorised policy, I_c (pixels of class c
predicted c) and F_c (other labelled pixels predicted c) are independent
Poisson-binomial counts, so E[mIoU] and its gradient follow from their distributions,
with no sampling and nothing shared with the code under test. Numpy, float64.
"""

from __future__ import annotations

import numpy as np


def poisson_binomial(q: np.ndarray) -> np.ndarray:
    """Distribution of the number of successes of independent Bernoulli(q_i)."""
    dist = np.zeros(len(q) + 1)
    dist[0] = 1.0
    for n, qi in enumerate(q, start=1):
        dist[1 : n + 1] = dist[1 : n + 1] * (1 - qi) + dist[:n] * qi
        dist[0] *= 1 - qi
    return dist


def leave_one_out_expectations(q: np.ndarray, h: np.ndarray) -> np.ndarray:
    """E[h(S_-i)] for each i, S_-i the successes of every Bernoulli but the i-th.

    Pixel i is taken out of the full distribution by deconvolution, forwards where
    q_i <= 1/2 and backwards elsewhere, both stable; all pixels at once.
    """
    n = len(q)
    full = poisson_binomial(q)
    rest = np.zeros((n, n))
    low = q <= 0.5
    forward, backward = q[low], q[~low]
    fwd, bwd = np.zeros((len(forward), n)), np.zeros((len(backward), n))
    if len(forward):
        fwd[:, 0] = full[0] / (1 - forward)
        for x in range(1, n):
            fwd[:, x] = (full[x] - forward * fwd[:, x - 1]) / (1 - forward)
    if len(backward):
        bwd[:, n - 1] = full[n] / backward
        for x in range(n - 1, 0, -1):
            bwd[:, x - 1] = (full[x] - (1 - backward) * bwd[:, x]) / backward
    rest[low], rest[~low] = fwd, bwd
    return rest @ h[:n]


def expected_miou_gradient(probs: np.ndarray, gt: np.ndarray, num_classes: int, ignore_index: int = 255,
                           temperature: float = 1.0) -> np.ndarray:
    """d E[mIoU] / d logits of one scoring unit.

    probs [N, C] = softmax(logits / T) of the unit's pixels, gt [N]. Every class must
    have a ground-truth pixel. Returns [N, C].
    """
    labelled = gt != ignore_index
    grad_q = np.zeros_like(probs)
    for c in range(num_classes):
        own = np.flatnonzero(labelled & (gt == c))
        other = np.flatnonzero(labelled & (gt != c))
        assert len(own) > 0, f"class {c} has no ground-truth pixel"
        own_dist, other_dist = poisson_binomial(probs[own, c]), poisson_binomial(probs[other, c])
        x = np.arange(len(own) + 2)[:, None]
        w = np.arange(len(other) + 2)[None, :]
        term = x / (len(own) + w)
        gain_own = (term[1:, : len(other) + 1] - term[:-1, : len(other) + 1]) @ other_dist
        gain_other = own_dist @ (term[: len(own) + 1, 1:] - term[: len(own) + 1, :-1])
        grad_q[own, c] = leave_one_out_expectations(probs[own, c], gain_own) / num_classes
        grad_q[other, c] = leave_one_out_expectations(probs[other, c], gain_other) / num_classes
    # q_c = softmax(z / T)_c: dq_c / dz_j = q_c (delta_cj - q_j) / T
    mean = (grad_q * probs).sum(1, keepdims=True)
    return probs * (grad_q - mean) / temperature
