"""The reward modules inserted by apply: rewards, the reward loss, the reward head.

Everything is built through the patched 1.2.2 tree (the `patched_tree` fixture), as a
user would build it.
"""

import itertools
import math

import pytest


@pytest.fixture(scope="module")
def mm(patched_tree):
    """The modules under test, imported from the patched tree."""
    import torch as torch_
    from mmengine.structures import PixelData

    import mmseg.models.decode_heads.reward_decode_head as head_module
    import mmseg.models.losses.iou_metric_loss as rewards
    from mmseg.evaluation.metrics import IoUMetric
    from mmseg.models.losses import CrossEntropyLoss, CrossEntropyRewardLoss
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    class Namespace:
        pass

    ns = Namespace()
    ns.torch = torch_
    ns.MODELS = MODELS
    ns.rewards = rewards
    ns.head_module = head_module
    ns.IoUMetric = IoUMetric
    ns.CrossEntropyLoss = CrossEntropyLoss
    ns.CrossEntropyRewardLoss = CrossEntropyRewardLoss

    def samples(gt):
        out = []
        for label in gt:
            sample = SegDataSample()
            sample.gt_sem_seg = PixelData(data=label[None])
            out.append(sample)
        return out

    ns.samples = samples
    return ns


def build_head(mm, num_classes=4, **reward_cfg):
    return mm.MODELS.build(dict(
        type="RewardFCNHead", in_channels=4, channels=4, num_convs=1, num_classes=num_classes,
        concat_input=False, dropout_ratio=0.0, loss_decode=dict(type="CrossEntropyRewardLoss"),
        reward_cfg=reward_cfg,
    ))


def random_batch(mm, batch=3, classes=5, size=(17, 23), ignore_fraction=0.2, seed=0):
    torch = mm.torch
    generator = torch.Generator().manual_seed(seed)
    gt = torch.randint(0, classes, (batch, *size), generator=generator)
    gt[torch.rand(gt.shape, generator=generator) < ignore_fraction] = 255
    pred = torch.randint(0, classes, (batch, *size), generator=generator)
    return pred, gt


def mmseg_areas(mm, pred, gt, classes):
    return [mm.IoUMetric.intersect_and_union(p, g, classes, 255) for p, g in zip(pred, gt)]


def test_per_image_miou_equals_mmseg_intersect_and_union(mm):
    torch = mm.torch
    for seed in range(5):
        pred, gt = random_batch(mm, seed=seed)
        gt[0, 0, :3] = 7  # out of range and not ignored: counts as MMSeg's histc counts it
        ours = mm.rewards.per_image_miou(pred, gt, 5, 255)
        expected = []
        for intersect, union, _, _ in mmseg_areas(mm, pred, gt, 5):
            iou = intersect / union
            expected.append(float(iou[union > 0].mean()))
        assert torch.allclose(ours, torch.tensor(expected), atol=1e-6)


def test_dice_and_pixel_accuracy_follow_the_mmseg_areas(mm):
    pred, gt = random_batch(mm, seed=3)
    dice = mm.rewards.per_image_dice(pred, gt, 5, 255)
    accuracy = mm.rewards.per_image_pixel_accuracy(pred, gt, 5, 255)
    for b, (intersect, _, area_pred, area_gt) in enumerate(mmseg_areas(mm, pred, gt, 5)):
        present = (area_pred + area_gt) > 0
        assert math.isclose(float(dice[b]), float((2 * intersect / (area_pred + area_gt))[present].mean()), rel_tol=1e-6)
        assert math.isclose(float(accuracy[b]), float(intersect.sum() / area_gt.sum()), rel_tol=1e-6)


def test_rewards_of_k_samples_share_one_ground_truth(mm):
    torch = mm.torch
    pred, gt = random_batch(mm)
    stacked = torch.stack([pred, gt.clamp(max=4)])
    both = mm.rewards.per_image_miou(stacked, gt, 5, 255)
    assert both.shape == (2, 3)
    assert torch.equal(both[0], mm.rewards.per_image_miou(pred, gt, 5, 255))
    assert torch.allclose(both[1], torch.ones(3))


def test_an_image_without_labelled_pixels_gets_reward_zero(mm):
    pred, gt = random_batch(mm)
    gt[1] = 255
    for reward in mm.rewards.REWARDS.values():
        assert float(reward(pred, gt, 5, 255)[1]) == 0.0


def test_iou_metric_loss_is_one_minus_miou_for_logits_and_labels(mm):
    torch = mm.torch
    pred, gt = random_batch(mm)
    logits = torch.nn.functional.one_hot(pred, 5).permute(0, 3, 1, 2).float()
    loss = mm.MODELS.build(dict(type="IoUMetricLoss", num_classes=5))
    expected = 1 - mm.rewards.per_image_miou(pred, gt, 5, 255)
    assert torch.equal(loss(logits, gt), expected)
    assert torch.equal(loss(pred, gt), expected)
    assert loss(pred, gt).shape == (3,)


@pytest.mark.parametrize("options", [{}, {"avg_non_ignore": True}, {"loss_weight": 0.4}])
def test_cross_entropy_reward_loss_with_reward_one_is_mmseg_cross_entropy(mm, options):
    torch = mm.torch
    _, gt = random_batch(mm)
    logits = torch.randn(3, 5, *gt.shape[1:])
    ours = mm.CrossEntropyRewardLoss(**options)(logits, gt, reward=1.0, ignore_index=255)
    theirs = mm.CrossEntropyLoss(**options)(logits, gt, ignore_index=255)
    assert torch.equal(ours, theirs)


def test_class_weights_load_like_mmseg_and_give_the_same_loss(mm, tmp_path):
    torch = mm.torch
    _, gt = random_batch(mm, ignore_fraction=0.0)  # 1.2.2's CE cannot weight ignored labels
    logits = torch.randn(3, 5, *gt.shape[1:])
    weights = [0.5, 1.0, 2.0, 1.0, 0.7]
    ours = mm.CrossEntropyRewardLoss(class_weight=weights)(logits, gt, ignore_index=255)
    theirs = mm.CrossEntropyLoss(class_weight=weights)(logits, gt, ignore_index=255)
    assert torch.equal(ours, theirs)


def test_a_per_image_reward_scales_each_image_before_reduction(mm):
    torch = mm.torch
    _, gt = random_batch(mm)
    logits = torch.randn(3, 5, *gt.shape[1:])
    loss = mm.CrossEntropyRewardLoss(reduction="none")
    plain = loss(logits, gt, ignore_index=255)
    scaled = loss(logits, gt, reward=torch.tensor([2.0, 0.0, -1.0]), ignore_index=255)
    assert torch.allclose(scaled, plain * torch.tensor([2.0, 0.0, -1.0]).view(3, 1, 1))


def test_k_sampled_label_maps_cost_one_log_softmax_and_average_like_k_calls(mm):
    torch = mm.torch
    _, gt = random_batch(mm)
    logits = torch.randn(3, 5, *gt.shape[1:])
    labels = torch.stack([random_batch(mm, seed=s)[0] for s in (1, 2)])
    reward = torch.tensor([[0.2, -0.1, 0.5], [1.0, 0.3, -0.4]])
    loss = mm.CrossEntropyRewardLoss(avg_non_ignore=True)
    together = loss(logits, labels, reward=reward, ignore_index=255)
    one_by_one = [loss(logits, labels[k], reward=reward[k], ignore_index=255) for k in range(2)]
    assert torch.allclose(together, sum(one_by_one) / 2, atol=1e-6)


def test_no_gradient_flows_into_the_reward(mm):
    torch = mm.torch
    _, gt = random_batch(mm)
    logits = torch.randn(3, 5, *gt.shape[1:], requires_grad=True)
    reward = torch.ones(3, requires_grad=True)
    mm.CrossEntropyRewardLoss()(logits, gt, reward=reward, ignore_index=255).backward()
    assert reward.grad is None and logits.grad is not None


def test_a_sigmoid_reward_loss_is_refused_at_build_time(mm):
    with pytest.raises(ValueError, match="use_sigmoid"):
        mm.MODELS.build(dict(type="CrossEntropyRewardLoss", use_sigmoid=True))


def head_loss(mm, head, logits, gt, seed=0):
    mm.torch.manual_seed(seed)
    return head.loss_by_feat(logits, mm.samples(gt))


def test_the_loss_dict_keeps_the_loss_name_and_logs_reward_statistics(mm):
    torch = mm.torch
    head = build_head(mm)
    _, gt = random_batch(mm, classes=4)
    losses = head_loss(mm, head, torch.randn(3, 4, 9, 12), gt)
    assert set(losses) == {"loss_ce_reward", "acc_seg", "reward_mean", "reward_greedy", "adv_std"}
    assert [k for k in losses if "loss" in k] == ["loss_ce_reward"]


def test_weighted_ce_reproduces_the_manual_recipe_formula(mm):
    torch = mm.torch
    head = build_head(mm, num_classes=3, mode="weighted_ce")
    gt = torch.tensor([[[0, 1], [2, 2]], [[1, 1], [1, 255]], [[0, 0], [2, 1]]])
    greedy = torch.tensor([[[0, 1], [2, 1]], [[1, 1], [0, 0]], [[2, 2], [2, 1]]])
    # logits whose argmax is `greedy`, with a spread that makes the CE non-trivial
    logits = torch.nn.functional.one_hot(greedy, 3).permute(0, 3, 1, 2).float() * 2.0 + 0.3 * torch.arange(3.0).view(1, 3, 1, 1)
    losses = head_loss(mm, head, logits, gt)
    miou = mm.rewards.per_image_miou(greedy, gt, 3, 255)
    v = 1 - miou
    w = torch.stack([v[b] - 0.1 * (v.sum() - v[b]) / 2 for b in range(3)])
    ce = torch.nn.functional.cross_entropy(logits, gt, ignore_index=255, reduction="none")
    expected = (ce * w.view(3, 1, 1)).sum() / gt.numel()
    assert torch.allclose(losses["loss_ce_reward"], expected, atol=1e-6)
    assert torch.allclose(losses["reward_greedy"], miou.mean(), atol=1e-6)


def test_ignored_pixels_change_neither_reward_nor_gradient(mm):
    torch = mm.torch
    head = build_head(mm, num_classes=5, num_samples=3)
    _, gt = random_batch(mm, classes=5, ignore_fraction=0.3)
    ignored = (gt == 255).unsqueeze(1)
    base = torch.randn(3, 5, *gt.shape[1:])
    changed = torch.where(ignored, torch.randn_like(base) * 10, base)
    results = []
    for values in (base, changed):
        logits = values.clone().requires_grad_(True)
        losses = head_loss(mm, head, logits, gt, seed=7)
        losses["loss_ce_reward"].backward()
        results.append((losses, logits.grad))
    (first, grad_first), (second, grad_second) = results
    assert torch.equal(first["reward_mean"], second["reward_mean"])
    assert torch.equal(first["loss_ce_reward"], second["loss_ce_reward"])
    assert torch.equal(grad_first, grad_second)
    assert torch.count_nonzero(grad_first * ignored) == 0


@pytest.mark.parametrize(
    ("reward_cfg", "message"),
    [
        ({"temprature": 1.0}, "unknown key 'temprature'"),
        ({"mode": "ppo"}, "reward_cfg.mode must be one of"),
        ({"num_samples": 0}, "reward_cfg.num_samples must be an integer >= 1"),
        ({"num_samples": 2.5}, "reward_cfg.num_samples must be an integer >= 1"),
        ({"num_samples": 1}, "reward_cfg.num_samples must be >= 2 with baseline='loo'"),
        ({"baseline": "mean"}, "reward_cfg.baseline must be one of"),
        ({"reward": "iou"}, "reward_cfg.reward must be one of"),
        ({"temperature": 0}, "reward_cfg.temperature must be a number > 0"),
        ({"temperature": "hot"}, "reward_cfg.temperature must be a number > 0"),
        ({"normalize_advantage": "yes"}, "reward_cfg.normalize_advantage must be True or False"),
        ({"mle_weight": -0.5}, "reward_cfg.mle_weight must be a number >= 0"),
    ],
)
def test_a_bad_reward_cfg_fails_at_build_time_naming_the_key(mm, reward_cfg, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_head(mm, **reward_cfg)


def test_a_head_without_a_reward_loss_fails_at_build_time(mm):
    with pytest.raises(ValueError, match="loss_decode: RewardFCNHead needs a CrossEntropyRewardLoss"):
        mm.MODELS.build(dict(type="RewardFCNHead", in_channels=4, channels=4, num_classes=3))


def test_a_config_that_only_swaps_type_and_loss_works_with_defaults(mm):
    head = mm.MODELS.build(dict(
        type="RewardASPPHead", in_channels=8, channels=4, dilations=(1, 2), num_classes=3,
        loss_decode=dict(type="CrossEntropyRewardLoss", use_sigmoid=False, loss_weight=1.0),
    ))
    assert head.reward_cfg == mm.head_module.REWARD_CFG_DEFAULTS


def test_a_binary_sigmoid_head_is_refused(mm):
    with pytest.raises(ValueError, match="out_channels=1"):
        mm.MODELS.build(dict(
            type="RewardFCNHead", in_channels=4, channels=4, num_classes=2, out_channels=1,
            loss_decode=dict(type="CrossEntropyRewardLoss"),
        ))


def exact_gradient_of_expected_miou(mm, logits, gt, classes):
    """d/dlogits of sum over all label maps y of p(y) * mIoU(y, gt), by enumeration."""
    torch = mm.torch
    logits = logits.clone().requires_grad_(True)
    log_probs = torch.log_softmax(logits, dim=0).flatten(1)  # [C, pixels]
    pixels = log_probs.shape[1]
    maps = torch.tensor(list(itertools.product(range(classes), repeat=pixels)))  # [C^P, P]
    rewards = mm.rewards.per_image_miou(maps.view(-1, *gt.shape), gt.expand(len(maps), *gt.shape), classes, 255)
    log_p = log_probs[maps, torch.arange(pixels)].sum(1)
    (log_p.exp() * rewards).sum().backward()
    return logits.grad


@pytest.mark.parametrize("baseline", ["loo", "greedy"])
def test_reinforce_gradient_is_an_unbiased_estimate_of_the_expected_miou_gradient(mm, baseline):
    """One image of 2x2 pixels and 3 classes: 81 label maps, enumerable exactly."""
    torch = mm.torch
    torch.manual_seed(0)
    classes = 3
    gt = torch.tensor([[0, 1], [2, 1]])
    logits = torch.tensor([[[1.0, -0.5], [0.2, 0.0]], [[0.3, 0.8], [-1.0, 0.4]], [[-0.2, 0.1], [0.9, -0.3]]])
    exact = exact_gradient_of_expected_miou(mm, logits, gt, classes)

    head = build_head(mm, num_classes=classes, baseline=baseline, num_samples=2)
    copies = 4096  # independent draws per call: the same image repeated in one batch
    estimate = torch.zeros_like(logits)
    rounds = 12
    for round_ in range(rounds):
        param = logits.clone().requires_grad_(True)
        losses = head_loss(mm, head, param.expand(copies, -1, -1, -1), gt.expand(copies, -1, -1), seed=round_)
        losses["loss_ce_reward"].backward()
        estimate -= param.grad
    cosine = torch.nn.functional.cosine_similarity(estimate.flatten(), exact.flatten(), dim=0)
    # the loss averages over 4 pixels: E[-grad] = grad E[mIoU] / 4, scale included
    ratio = estimate.norm() / rounds / (exact.norm() / 4)
    assert cosine > 0.99, f"cosine {float(cosine):.4f}"
    assert 0.9 < ratio < 1.1, f"norm ratio {float(ratio):.3f}"


@pytest.mark.parametrize(
    "reward_cfg",
    [
        {},
        {"baseline": "greedy", "num_samples": 1},
        {"baseline": "batch_mean", "normalize_advantage": True, "temperature": 1.5},
        {"mode": "weighted_ce"},
        {"reward": "dice", "mle_weight": 0.5},
    ],
    ids=["reinforce-loo", "reinforce-greedy", "reinforce-batch-mean", "weighted-ce", "dice-with-mle"],
)
def test_a_patched_head_trains_a_few_steps_on_cpu(mm, reward_cfg):
    torch = mm.torch
    torch.manual_seed(0)
    head = mm.MODELS.build(dict(
        type="RewardPSPHead", in_channels=16, channels=8, pool_scales=(1, 2), num_classes=4,
        loss_decode=dict(type="CrossEntropyRewardLoss"), reward_cfg=reward_cfg,
    ))
    head.init_weights()
    optimizer = torch.optim.SGD(head.parameters(), lr=0.05)
    features = [torch.randn(2, 16, 8, 8)]
    gt = torch.randint(0, 4, (2, 32, 32))
    gt[:, :4] = 255
    before = head.conv_seg.weight.detach().clone()
    for _ in range(3):
        optimizer.zero_grad()
        losses = head.loss(features, mm.samples(gt), None)
        loss = sum(v for k, v in losses.items() if "loss" in k)
        assert torch.isfinite(loss)
        loss.backward()
        grad = head.conv_seg.weight.grad
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
        optimizer.step()
    assert not torch.equal(before, head.conv_seg.weight)
    assert 0.0 <= float(losses["reward_greedy"]) <= 1.0


def test_sampled_labels_with_class_weights_and_ignored_pixels_work(mm):
    # MMSeg 1.2.x's own CE indexes class weights with the ignore label; this path must not
    torch = mm.torch
    _, gt = random_batch(mm, ignore_fraction=0.3)
    logits = torch.randn(3, 5, *gt.shape[1:], requires_grad=True)
    labels = torch.stack([random_batch(mm, seed=s)[0] for s in (1, 2)]).masked_fill(gt == 255, 255)
    loss = mm.CrossEntropyRewardLoss(class_weight=[0.5, 1.0, 2.0, 1.0, 0.7], avg_non_ignore=True)
    value = loss(logits, labels, reward=torch.ones(2, 3), ignore_index=255)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
