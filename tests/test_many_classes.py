"""The estimator's parts that scale with the class count, at 2 to 171 classes.

The local expectation gradient is computed from O(C) terms per scoring unit (a product of
rank 4 per sample plus two entries per pixel), the samples by a two-level inverse CDF and
the argmax by one comparison per class on the CPU. Each is checked here against its plain
definition: the table of every move (`flip_table`, itself checked against recomputed
rewards in test_reward_modules.py), the softmax, and `max(1)`.

The template needs no MMSeg: it is loaded from templates/ as the file apply inserts.
"""

import math

import pytest

from template_modules import REWARD_NAMES, reward_modules, template_module

try:
    import torch
except ModuleNotFoundError as missing:  # collected without the stack: `est` skips or fails
    if missing.name != "torch":
        raise


@pytest.fixture(scope="module")
def est(stack):
    return reward_modules()


@pytest.fixture(scope="module")
def device(stack):
    """reward_device.py, which reads the slice sizes."""
    return template_module("reward_device")


@pytest.fixture(params=["cpu", "gpu"])
def policy(request, est):
    """The test runs under the estimator's CPU policy, then under its GPU policy (forced on
    these CPU tensors)."""
    with est.device_policy(request.param):
        yield request.param


@pytest.mark.parametrize("classes", [1, 2, 19, 150])
def test_the_channel_maximum_is_max_with_the_first_index_among_ties(est, policy, classes):
    generator = torch.Generator().manual_seed(classes)
    logits = torch.randint(0, 4, (3, classes, 500), generator=generator).float()  # many ties
    peak, index = est.channel_max(logits)
    expected = logits.max(1)
    assert torch.equal(peak, expected.values)
    assert torch.equal(index, expected.indices)
    first = (logits == peak[:, None]).float().argmax(1)  # argmax of a 0/1 map: its first 1
    assert torch.equal(index, first)


@pytest.mark.parametrize("classes", [2, 3, 5, 19, 150, 171])
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_samples_follow_the_softmax_at_every_class_count(est, policy, classes, temperature):
    generator = torch.Generator().manual_seed(classes)
    torch.manual_seed(classes)
    rows = 2
    logits = torch.randn(rows, classes, 1, generator=generator) * 3
    logits[1, : classes // 3] = -1e4  # classes of probability 0 (their weight underflows)
    draws = 60_000
    flat = logits.expand(rows, classes, draws).contiguous()
    peak = flat.amax(1)
    probs = torch.empty(flat.shape)
    samples = est.sample_labels(flat, 2, temperature, peak, probs)
    expected = torch.softmax(logits[:, :, 0].double() / temperature, 1)
    assert torch.allclose(probs[:, :, 0].double(), expected, atol=1e-6)
    assert samples.shape == (2, rows, draws)
    assert samples.min() >= 0 and samples.max() < classes
    for row in range(rows):
        counts = torch.bincount(samples[:, row].flatten(), minlength=classes).double()
        frequency = counts / counts.sum()
        p = expected[row]
        bound = 5 * (p * (1 - p) / counts.sum()).sqrt() + 1e-4
        assert ((frequency - p).abs() <= bound).all(), (frequency - p).abs().max()
        assert counts[p == 0].sum() == 0


def counts_of(est, samples, gt, classes, units, history):
    """I, P, G [K, U, C] of K sampled maps (units: one per image, or one for the batch),
    plus a fractional history as scope='dataset' adds."""
    keys = est.count_keys(est.label_rows(gt, classes, 255), classes)
    tables = est.confusion(samples, keys, classes)
    if units == 1:
        tables = tables.sum(1, keepdim=True)
    return est.class_counts(tables + history)


def reference_gradient(est, reward, counts, probs, samples, rows, scale, pixel_scale):
    """sum_k s p_i(b) (A_ik(b) - sum_c p_i(c) A_ik(c)), A read from the table of every move."""
    table = est.flip_table(reward, *counts)  # [K, U, a, g, b]
    count, units = scale.shape
    batch, classes, pixels = probs.shape
    gradient = torch.zeros(batch, classes, pixels, dtype=torch.float64)
    p = probs.double()
    for k in range(count):
        for b in range(batch):
            u = b if units > 1 else 0
            for i in range(pixels):
                row = int(rows[b, i])
                if row == classes + 1:
                    continue
                change = table[k, u, samples[k, b, i], row]
                expected = (p[b, :, i] * change).sum()
                gradient[b, :, i] += scale[k, u] * pixel_scale[b, i] * p[b, :, i] * (change - expected)
    return gradient


def sparse_problem(classes, batch=3, size=(4, 6), seed=0):
    """Few pixels for many classes: absent classes, classes of a one-pixel union (which drop
    out when that pixel moves), ignored and out-of-range labels."""
    generator = torch.Generator().manual_seed(seed)
    gt = torch.randint(0, max(2, classes // 2), (batch, *size), generator=generator)  # half never labelled
    gt[torch.rand(gt.shape, generator=generator) < 0.2] = 255
    gt[0, 0, :2] = classes + 2
    return gt


@pytest.mark.parametrize("reward", REWARD_NAMES)
@pytest.mark.parametrize("units", ["image", "batch"])
@pytest.mark.parametrize("classes, count", [(3, 1), (7, 3), (23, 2)])
@pytest.mark.parametrize("with_history", [False, True])
def test_the_local_gradient_is_the_one_read_from_the_table_of_every_move(est, device, policy, monkeypatch, reward,
                                                                         units, classes, count, with_history):
    generator = torch.Generator().manual_seed(classes * 10 + count)
    gt = sparse_problem(classes, seed=classes)
    batch = gt.shape[0]
    logits = torch.randn(batch, classes, gt[0].numel(), generator=generator) * 2
    probs = torch.softmax(logits, 1)
    samples = torch.multinomial(probs.transpose(1, 2).reshape(-1, classes), count, replacement=True,
                                generator=generator)
    samples = samples.t().reshape(count, batch, -1)
    unit_count = batch if units == "image" else 1
    history = torch.rand(1, unit_count, classes + 2, classes, generator=generator, dtype=torch.float64)
    history *= with_history  # a decayed history of fractional counts (scope='dataset'), or none
    counts = counts_of(est, samples.view(count, *gt.shape), gt, classes, unit_count, history)
    alpha, lost, beta, inverse = est.flip_terms(reward, *counts)
    if classes == 23 and not with_history and reward in ("miou", "dice"):  # means over the classes present
        assert (lost == 1).any(), "no class whose union is one pixel"
        assert (inverse[..., 0, :] != inverse[..., 0, :1]).any(), "no absent class"
    rows = est.label_rows(gt, classes, 255).flatten(1)
    scale = torch.rand(count, unit_count, generator=generator) - 0.5
    pixel_scale = torch.rand(rows.shape, generator=generator)
    pixel_scale[rows == classes + 1] = 0
    expected = reference_gradient(est, reward, counts, probs, samples, rows, scale.double(), pixel_scale.double())
    terms = [t.float() for t in est.flip_terms(reward, *counts)]
    # one slice, and several: CPU slabs of 5 pixels, GPU slices for a smaller memory budget
    for slab, budget in ((est.SLAB_ELEMENTS, 1e9), (batch * classes * 5, 0.3)):
        monkeypatch.setattr(device, "SLAB_ELEMENTS", slab)
        monkeypatch.setattr(device, "GPU_SLICE_LOGITS", budget)
        gradient = est.local_expectation(probs.clone(), samples, rows, terms, scale, pixel_scale)
        assert torch.allclose(gradient.double(), expected, rtol=1e-4, atol=1e-6 * expected.abs().max())


def test_the_gradient_is_multiplied_in_place_and_a_second_backward_fails_clearly(est):
    logits = torch.randn(2, 5, 4, 4, requires_grad=True)
    gradient = torch.randn(2, 5, 4, 4)
    loss = est._LossWithGradient.apply(logits, gradient, torch.tensor(0.5))
    assert loss.dtype == torch.float32
    (loss * 8).backward(retain_graph=True)
    assert torch.allclose(logits.grad, gradient)  # the saved tensor now holds the result
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_no_table_grows_with_the_cube_of_the_class_count(est):
    classes = 171
    counts = [torch.rand(2, 1, classes, dtype=torch.float64) * 100 for _ in range(3)]
    terms = est.flip_terms("miou", counts[0], counts[1] + counts[0], counts[2] + counts[0])
    assert all(t.shape == (2, 1, 2, classes) for t in terms)
    assert math.prod(terms[0].shape) < classes**2
