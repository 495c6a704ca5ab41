"""The reward estimator's GPU policy, checked on the CPU (no GPU is lent to CI).

`gpu_policy` chooses by device: every device but the CPU takes the GPU policy, which cuts
the per-pixel passes by memory (never by a CPU cache), reads nothing back to the host and
copies nothing in from it per step. `device_policy('gpu')` forces it on CPU tensors, so
that what a CUDA step would ask of the device is seen here, operation by operation
(tests/dispatch_watch.py): how many operations run (about one kernel launch each), any
that would make the host wait, what memory the step holds; and, on the meta device, that
nothing needs a tensor's values. The numbers are the CPU policy's.

Each case is one training step of a reward head's loss (`reward_losses`: the estimator,
the head's CrossEntropyRewardLoss and, for weighted_ce and mle_weight, MMSeg's own
CrossEntropyLoss, called without class weights or avg_non_ignore, with which it reads
values back itself), after a first step: a step caches what it copies to the device once.
"""

import pytest

try:
    from dispatch_watch import HostWaitGuard, LiveTensorMemory, OperationCount
except ModuleNotFoundError as missing:  # collected without the stack: every test's `tree_modules` skips or fails
    if missing.name != "torch":
        raise

CLASS_WEIGHT = [1.0, 2.0, 0.5, 1.0, 1.5]
# (reward_cfg, CrossEntropyRewardLoss arguments, with pixel weights)
CASES = {
    "default": ({}, {}, False),
    "local-image-K2-T": (dict(scope="image", num_samples=2, temperature=0.7), {}, True),
    "local-batch-class-weights": (dict(scope="batch"), dict(class_weight=CLASS_WEIGHT, avg_non_ignore=True), True),
    "local-dataset-dice-mle": (dict(reward="dice", mle_weight=0.5), dict(loss_weight=0.4), True),
    "reinforce": (dict(mode="reinforce"), {}, False),
    "reinforce-batch-class-weights": (
        dict(mode="reinforce", scope="batch", baseline="greedy", normalize_advantage=True),
        dict(class_weight=CLASS_WEIGHT, avg_non_ignore=True), True),
    "reinforce-dataset-K3": (dict(mode="reinforce", scope="dataset", baseline="batch_mean", num_samples=3,
                                  temperature=0.7), {}, True),
    "weighted-ce": (dict(mode="weighted_ce"), {}, True),
}
CLASSES = 5


def build_head(tree_modules, case, classes=CLASSES, device="cpu"):
    reward_cfg, loss, _ = CASES[case]
    head = tree_modules.MODELS.build(dict(
        type="RewardFCNHead", in_channels=4, channels=4, num_convs=1, num_classes=classes,
        loss_decode=dict(type="CrossEntropyRewardLoss", **loss), reward_cfg=reward_cfg,
    ))
    return head.to(device)


def problem(tree_modules, case, batch, height, width, classes=CLASSES, seed=0, device="cpu", dtype=None):
    """(logits, labels [B, 1, H, W], pixel weights or None): ignored pixels, a labelled value
    out of range (where MMSeg's CrossEntropyLoss, which refuses it, is not called), logits
    that lean towards the truth."""
    torch = tree_modules.torch
    generator = torch.Generator().manual_seed(seed)
    gt = torch.randint(0, classes, (batch, height, width), generator=generator)
    gt[torch.rand(gt.shape, generator=generator) < 0.15] = 255
    reward_cfg = CASES[case][0]
    if not reward_cfg.get("mle_weight") and reward_cfg.get("mode") != "weighted_ce":
        gt[0, 0, :2] = classes + 2
    logits = torch.randn(batch, classes, height, width, generator=generator) * 2
    logits += 2 * torch.nn.functional.one_hot(gt.clamp(max=classes - 1), classes).permute(0, 3, 1, 2)
    weight = torch.rand(gt.shape, generator=generator) if CASES[case][2] else None
    if dtype is not None:
        logits = logits.to(dtype)

    def to(t):
        return None if t is None else t.to(device)

    return to(logits), to(gt[:, None]), to(weight)


def step(tree_modules, head, inputs, seed=100):
    """One forward and backward of the head's reward losses: (loss dict, logits gradient)."""
    logits, gt, weight = inputs
    tree_modules.torch.manual_seed(seed)
    param = logits.detach().clone().requires_grad_(True)
    losses = head.reward_losses(param, gt, weight)
    sum(value for key, value in losses.items() if "loss" in key).backward()
    return {key: value.detach() for key, value in losses.items()}, param.grad


def watched(tree_modules, case, policy, size, mode_factory, classes=CLASSES, device="cpu"):
    """The mode that watched the second of two steps of `case` on inputs of `size`."""
    head = build_head(tree_modules, case, classes, device)
    inputs = problem(tree_modules, case, *size, classes=classes, device=device)
    with tree_modules.estimator.device_policy(policy):
        step(tree_modules, head, inputs, seed=1)
        mode = mode_factory()
        with mode:
            step(tree_modules, head, inputs)
    return mode


# (batch, height, width): a size, four times its pixels, twice its batch
SIZES = [(2, 12, 16), (2, 24, 32), (4, 12, 16)]


@pytest.fixture
def small_cpu_slabs(tree_modules, monkeypatch):
    """CPU slabs of a few pixels: a pass that the CPU policy cuts for its caches runs in
    many slabs even on these small inputs."""
    monkeypatch.setattr(tree_modules.reward_device, "SLAB_ELEMENTS", 2 * CLASSES * 16)
    monkeypatch.setattr(tree_modules.reward_counts, "COUNT_SLAB_ELEMENTS", 16)


@pytest.mark.parametrize("case", CASES)
def test_a_gpu_step_runs_as_many_operations_at_every_image_size_and_batch(tree_modules, small_cpu_slabs, case):
    counts = [watched(tree_modules, case, "gpu", size, OperationCount).counts for size in SIZES]
    assert counts[0] == counts[1] == counts[2], [dict(c - counts[0]) or dict(counts[0] - c) for c in counts]


def test_the_cpu_policy_cuts_its_passes_by_image_size(tree_modules, small_cpu_slabs):
    """The counter sees slab loops: the same step on the CPU policy runs more operations
    for more pixels."""
    totals = [watched(tree_modules, "default", "cpu", size, OperationCount).total for size in SIZES]
    assert totals[0] < totals[1] and totals[0] < totals[2]


def test_a_gpu_step_sliced_finely_for_memory_still_runs_as_many_operations(tree_modules, monkeypatch):
    """Slices bounded by memory: more of them for a smaller budget, as many at every size."""
    counts = {}
    for budget in (1.0, 0.1):
        monkeypatch.setattr(tree_modules.reward_device, "GPU_SLICE_LOGITS", budget)
        counts[budget] = [
            watched(tree_modules, "local-image-K2-T", "gpu", size, OperationCount).total for size in SIZES
        ]
    assert len(set(counts[1.0])) == len(set(counts[0.1])) == 1
    assert counts[0.1][0] > counts[1.0][0]


@pytest.mark.parametrize("case", CASES)
def test_a_gpu_step_makes_nothing_wait_for_the_device(tree_modules, case):
    guard = watched(tree_modules, case, "gpu", SIZES[1], HostWaitGuard)
    assert not guard.problems, "\n".join(guard.problems)


@pytest.mark.parametrize("case", CASES)
def test_a_gpu_step_runs_on_tensors_without_values_all_on_their_device(tree_modules, case):
    """On the meta device a read of any value fails, and so does a tensor made on the
    host beside the logits (a copy to the device)."""
    guard = watched(tree_modules, case, "gpu", SIZES[1], lambda: HostWaitGuard("meta"), device="meta")
    assert not guard.problems, "\n".join(guard.problems)


def test_the_watch_catches_what_makes_a_gpu_wait(tree_modules):
    torch = tree_modules.torch
    t = torch.arange(6.0)
    calls = {
        "item": lambda: t.sum().item(),
        "int": lambda: int(t[1]),
        "bool": lambda: bool(t[1] > 0),
        "mask": lambda: t[t > 2],
        "nonzero": lambda: t.nonzero(),
        "bincount": lambda: torch.bincount(t.long()),
        "scalar written": lambda: t.__setitem__(2, 0.0),
        "list": lambda: torch.as_tensor([1.0, 2.0]),
        "new_tensor": lambda: t.new_tensor([1.0, 2.0]),
    }
    for name, call in calls.items():
        guard = HostWaitGuard()
        with guard:
            call()
        assert guard.problems, name
    guard = HostWaitGuard("meta")
    with guard:
        torch.ones(3).to("meta")
    assert guard.problems
    with pytest.raises(Exception):
        torch.ones(3, device="meta").tolist()


def test_the_cpu_policy_is_the_one_that_reads_values_back(tree_modules):
    """So that the guards above are not vacuous: the CPU policy looks labels up in a table
    of the values present, read back."""
    guard = watched(tree_modules, "default", "cpu", SIZES[1], HostWaitGuard)
    assert any("_local_scalar_dense" in problem for problem in guard.problems)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("classes", [19, 150])
def test_a_gpu_step_holds_at_most_one_logits_sized_tensor_more_than_cross_entropy(tree_modules, case, classes):
    """The issue's target, counted tensor by tensor, whatever the number of samples: the
    local modes hold less than CE (with no CE term of their own, mle_weight). A few percent go to
    the count tables, O(C^2) per image, and to the samples, 8 K bytes per pixel."""
    torch = tree_modules.torch
    if CASES[case][1].get("class_weight"):
        pytest.skip("class weights for 5 classes")
    size = (2, 48, 64)
    logits, gt, _ = problem(tree_modules, case, *size, classes=classes)
    target = gt[:, 0].masked_fill(gt[:, 0] >= classes, 255)
    memory = LiveTensorMemory()
    with memory:
        param = logits.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(param, target, ignore_index=255).backward()
        del param
    cross_entropy = memory.peak
    reward = watched(tree_modules, case, "gpu", size, LiveTensorMemory, classes=classes).peak
    logits_size = logits.numel() * 4
    assert reward <= cross_entropy + logits_size * 1.05, (reward / logits_size, cross_entropy / logits_size)
    if CASES[case][0].get("mode", "local") == "local" and not CASES[case][0].get("mle_weight"):
        assert reward < cross_entropy


def same_numbers(first, second, exact=True):
    (losses_a, grad_a), (losses_b, grad_b) = first, second
    assert losses_a.keys() == losses_b.keys()
    for key in losses_a:
        assert mm_equal(losses_a[key], losses_b[key], exact), key
    assert mm_equal(grad_a, grad_b, exact)


def mm_equal(a, b, exact):
    import torch

    if exact:
        return torch.equal(a, b)
    return a.dtype == b.dtype and torch.allclose(a.double(), b.double(), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_the_gpu_policy_gives_the_cpu_policys_numbers(tree_modules, monkeypatch, case, dtype):
    """Bit for bit where both run their passes in one slice; sliced for memory, the
    samples are the same and a sum over a slice may round in its last bits."""
    torch = tree_modules.torch
    inputs = problem(tree_modules, case, 2, 24, 32, dtype=getattr(torch, dtype))
    results = {}
    for policy, budget in (("cpu", 1.0), ("gpu", 1e9), ("gpu", 1.0)):
        monkeypatch.setattr(tree_modules.reward_device, "GPU_SLICE_LOGITS", budget)
        head = build_head(tree_modules, case)
        with tree_modules.estimator.device_policy(policy):
            results[policy, budget] = [step(tree_modules, head, inputs, seed=100 + s) for s in range(2)]
    for one, sliced, cpu in zip(results["gpu", 1e9], results["gpu", 1.0], results["cpu", 1.0]):
        same_numbers(one, cpu)
        same_numbers(sliced, cpu, exact=False)


@pytest.mark.parametrize("classes", [5, 19, 150])
def test_samples_do_not_depend_on_how_the_pixels_are_sliced(tree_modules, monkeypatch, classes):
    torch = tree_modules.torch
    est = tree_modules.estimator
    generator = torch.Generator().manual_seed(classes)
    logits = torch.randn(3, classes, 700, generator=generator) * 3
    peak = logits.amax(1)
    drawn = []
    for policy, slab, budget in (("cpu", est.SLAB_ELEMENTS, 1.0), ("cpu", 3 * classes * 50, 1.0),
                                 ("gpu", est.SLAB_ELEMENTS, 1.0), ("gpu", est.SLAB_ELEMENTS, 0.05)):
        monkeypatch.setattr(tree_modules.reward_device, "SLAB_ELEMENTS", slab)
        monkeypatch.setattr(tree_modules.reward_device, "GPU_SLICE_LOGITS", budget)
        probs = torch.empty(logits.shape)
        torch.manual_seed(0)
        with est.device_policy(policy):
            samples = est.sample_labels(logits, 2, 0.7, peak, probs)
        drawn.append((samples, probs))
    for samples, probs in drawn[1:]:
        assert torch.equal(samples, drawn[0][0])
        assert torch.allclose(probs, drawn[0][1], rtol=1e-6, atol=0)


def test_the_policy_follows_the_device_unless_forced(tree_modules):
    torch = tree_modules.torch
    est = tree_modules.estimator
    cpu, meta = torch.zeros(1), torch.zeros(1, device="meta")
    assert not est.gpu_policy(cpu) and est.gpu_policy(meta)
    with est.device_policy("gpu"):
        assert est.gpu_policy(cpu)
        with est.device_policy("cpu"):
            assert not est.gpu_policy(meta)
        assert est.gpu_policy(cpu)
    assert not est.gpu_policy(cpu)
    with pytest.raises(ValueError, match="policy must be 'cpu' or 'gpu'"):
        with est.device_policy("cuda"):
            pass


def test_gpu_slices_keep_to_the_memory_budget_and_their_number_to_c_and_k(tree_modules, monkeypatch):
    torch = tree_modules.torch
    est = tree_modules.estimator
    with est.device_policy("gpu"):
        for pixels in (100, 1000, 12345):
            like = torch.empty(2, 19, pixels, device="meta")
            slices = est.pixel_slices(like, 19 * 3 + 1)
            assert len(slices) == 4
            assert [s.start for s in slices[1:]] == [s.stop for s in slices[:-1]]
            assert (slices[0].start, slices[-1].stop) == (0, pixels)
        assert est.pixel_slices(torch.empty(2, 19, 3, device="meta"), 19 * 10) == [slice(0, 1), slice(1, 2),
                                                                                  slice(2, 3)]
        assert est.pixel_slices(torch.empty(2, 19, 0, device="meta"), 19) == []
    with est.device_policy("cpu"):
        assert len(est.pixel_slices(torch.empty(2, 19, 100000, device="meta"), 1)) > 1  # the CPU's slabs


def fused_head(tree_modules, case, fuse):
    reward_cfg, loss, _ = CASES[case]
    return tree_modules.MODELS.build(dict(
        type="RewardFCNHead", in_channels=4, channels=4, num_convs=1, num_classes=CLASSES,
        loss_decode=dict(type="CrossEntropyRewardLoss", **loss), reward_cfg=dict(reward_cfg, fuse=fuse),
    ))


@pytest.mark.parametrize("case", ["local-image-K2-T", "reinforce-batch-class-weights"])
def test_fused_passes_draw_the_same_samples_and_give_the_eager_gradient(tree_modules, case):
    """reward_cfg fuse=True compiles the per-pixel passes (torch.compile; inductor's C++ on
    the CPU, Triton on a GPU): the same samples, so the same rewards and loss, and the
    gradient up to the compiler's rounding."""
    torch = tree_modules.torch
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile is torch >= 2.0")
    inputs = problem(tree_modules, case, 2, 24, 32)
    with tree_modules.estimator.device_policy("gpu"):
        (eager, eager_grad), (fused, fused_grad) = (step(tree_modules, fused_head(tree_modules, case, fuse), inputs)
                                                    for fuse in (False, True))
    assert eager.keys() == fused.keys()
    for key in eager:
        assert torch.equal(eager[key], fused[key]), key
    assert torch.allclose(fused_grad, eager_grad, rtol=1e-5, atol=1e-6 * eager_grad.abs().max().item())


def test_fused_passes_run_eagerly_where_torch_compile_is_missing_or_fails(tree_modules, monkeypatch):
    torch = tree_modules.torch
    est = tree_modules.estimator
    calls = []

    def slice_function(x):
        calls.append(x)
        return x + 1

    monkeypatch.delattr(torch, "compile", raising=False)
    assert est._Fused(slice_function)(torch.zeros(1)).tolist() == [1.0]

    def failing_compile(function):
        def compiled(*args):
            raise RuntimeError("no C compiler")
        return compiled

    monkeypatch.setattr(torch, "compile", failing_compile, raising=False)
    fused = est._Fused(slice_function)
    with pytest.warns(UserWarning, match=r"fuse=True: torch.compile failed on slice_function \(RuntimeError: no C "
                                         r"compiler\); the reward runs eagerly"):
        assert fused(torch.zeros(1)).tolist() == [1.0]
    assert fused(torch.ones(1)).tolist() == [2.0]  # eager for good, warned once
    assert len(calls) == 3


def test_fuse_is_a_switch_of_the_sampling_modes(tree_modules):
    check = tree_modules.estimator.check_reward_cfg
    assert check(dict(fuse=True))["fuse"] is True
    assert check(dict(mode="reinforce", fuse=False))["fuse"] is False
    assert "fuse" not in check(None)
    with pytest.raises(ValueError, match="reward_cfg.fuse must be True or False, got 1"):
        check(dict(fuse=1))
    with pytest.raises(ValueError, match="reward_cfg.fuse does not apply to mode='weighted_ce'"):
        check(dict(mode="weighted_ce", fuse=True))
