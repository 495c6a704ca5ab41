"""The reward modules inserted by apply: rewards, the reward loss, the reward head.

Everything is built through the patched 1.2.2 tree (the `patched_tree` fixture), as a
user would build it.
"""

import itertools
import json
import math
import re
from pathlib import Path

import pytest

from template_modules import REWARD_NAMES


@pytest.fixture(params=["cpu", "gpu"])
def policy(request, tree_modules):
    """The test runs under the estimator's CPU policy, then under its GPU policy (forced on
    these CPU tensors): the numbers the tests check hold for both."""
    with tree_modules.estimator.device_policy(request.param):
        yield request.param


def build_head(tree_modules, num_classes=4, loss=None, **reward_cfg):
    return tree_modules.MODELS.build(dict(
        type="RewardFCNHead", in_channels=4, channels=4, num_convs=1, num_classes=num_classes,
        concat_input=False, dropout_ratio=0.0, loss_decode=dict(type="CrossEntropyRewardLoss", **(loss or {})),
        reward_cfg=reward_cfg,
    ))


def random_batch(tree_modules, batch=3, classes=5, size=(17, 23), ignore_fraction=0.2, seed=0):
    torch = tree_modules.torch
    generator = torch.Generator().manual_seed(seed)
    gt = torch.randint(0, classes, (batch, *size), generator=generator)
    gt[torch.rand(gt.shape, generator=generator) < ignore_fraction] = 255
    pred = torch.randint(0, classes, (batch, *size), generator=generator)
    return pred, gt


def mmseg_areas(tree_modules, pred, gt, classes):
    return [tree_modules.IoUMetric.intersect_and_union(p, g, classes, 255) for p, g in zip(pred, gt)]


def test_per_image_miou_equals_mmseg_intersect_and_union(tree_modules):
    torch = tree_modules.torch
    for seed in range(5):
        pred, gt = random_batch(tree_modules, seed=seed)
        gt[0, 0, :3] = 7  # out of range and not ignored: counts as MMSeg's histc counts it
        ours = tree_modules.rewards.per_image_miou(pred, gt, 5, 255)
        expected = []
        for intersect, union, _, _ in mmseg_areas(tree_modules, pred, gt, 5):
            iou = intersect / union
            expected.append(float(iou[union > 0].mean()))
        assert torch.allclose(ours, torch.tensor(expected), atol=1e-6)


def test_counting_a_few_images_at_a_time_gives_the_one_pass_counts(policy, tree_modules, monkeypatch):
    torch = tree_modules.torch
    pred, gt = random_batch(tree_modules, seed=4)
    gt[1, 0, :3] = -3  # out of range below 0, and above: both in P only
    gt[2, 1, :2] = 9
    samples = torch.stack([pred, pred.flip(-1)])
    one_pass = tree_modules.estimator.label_confusion(samples, gt, 5, 255)
    monkeypatch.setattr(tree_modules.reward_counts, "COUNT_SLAB_ELEMENTS", gt[0].numel())  # one image per slab
    assert torch.equal(tree_modules.estimator.label_confusion(samples, gt, 5, 255), one_pass)
    keys = tree_modules.estimator.count_keys(tree_modules.estimator._label_rows(gt, 5, 255), 5)
    assert torch.equal(one_pass, tree_modules.estimator.confusion(samples, keys, 5))


def test_an_empty_batch_scores_nothing(tree_modules):
    torch = tree_modules.torch
    empty = torch.zeros(0, 4, 4, dtype=torch.long)
    assert tree_modules.rewards.per_image_miou(empty, empty, 5, 255).shape == (0,)


def test_dice_and_pixel_accuracy_follow_the_mmseg_areas(tree_modules):
    pred, gt = random_batch(tree_modules, seed=3)
    dice = tree_modules.rewards.per_image_dice(pred, gt, 5, 255)
    accuracy = tree_modules.rewards.per_image_pixel_accuracy(pred, gt, 5, 255)
    for b, (intersect, _, area_pred, area_gt) in enumerate(mmseg_areas(tree_modules, pred, gt, 5)):
        present = (area_pred + area_gt) > 0
        assert math.isclose(
            float(dice[b]), float((2 * intersect / (area_pred + area_gt))[present].mean()), rel_tol=1e-6
        )
        assert math.isclose(float(accuracy[b]), float(intersect.sum() / area_gt.sum()), rel_tol=1e-6)


def test_rewards_of_k_samples_share_one_ground_truth(tree_modules):
    torch = tree_modules.torch
    pred, gt = random_batch(tree_modules)
    stacked = torch.stack([pred, gt.clamp(max=4)])
    both = tree_modules.rewards.per_image_miou(stacked, gt, 5, 255)
    assert both.shape == (2, 3)
    assert torch.equal(both[0], tree_modules.rewards.per_image_miou(pred, gt, 5, 255))
    assert torch.allclose(both[1], torch.ones(3))


def test_frequency_weighted_iou_weights_each_class_iou_by_its_ground_truth_pixels(tree_modules):
    pred, gt = random_batch(tree_modules, seed=5)
    gt[0, 0, :3] = 7  # out of range: in P, in no G
    gt[1][gt[1] == 2] = 0  # a class absent from an image's ground truth weighs nothing there
    score = 1 - tree_modules.rewards.IoUMetricLoss(5, reward="fwiou")(pred, gt)
    for b, (intersect, union, _, area_gt) in enumerate(mmseg_areas(tree_modules, pred, gt, 5)):
        present = area_gt > 0
        frequency = area_gt[present] / area_gt.sum()
        assert math.isclose(float(score[b]), float((frequency * intersect[present] / union[present]).sum()),
                            rel_tol=1e-6)


def test_an_image_without_labelled_pixels_gets_reward_zero(tree_modules):
    pred, gt = random_batch(tree_modules)
    gt[1] = 255
    for reward in REWARD_NAMES:
        assert float(tree_modules.rewards.IoUMetricLoss(5, reward=reward)(pred, gt)[1]) == 1.0


def test_the_reward_heads_and_iou_metric_loss_read_one_table(tree_modules):
    import mmseg.models.losses.reward_schema as schema

    assert tree_modules.rewards.REWARDS is schema.REWARDS and tree_modules.estimator.reward_row is schema.reward_row
    assert tree_modules.estimator.check_reward_cfg is schema.check_reward_cfg
    assert schema.REWARD_NAMES == tuple(schema.REWARDS) == REWARD_NAMES


def test_every_mode_and_baseline_reward_cfg_allows_has_its_entry_in_the_estimators_tables(tree_modules):
    import mmseg.models.losses.reward_schema as schema

    assert tuple(tree_modules.reward_estimator.MODE_LOSSES) == schema.MODES
    assert tuple(tree_modules.reward_estimator.BASELINES) == schema.BASELINE_NAMES


@pytest.mark.parametrize("name", ["iou", "Dice", "mDice"])
def test_an_unknown_reward_name_fails_naming_the_key(tree_modules, name):
    counts = [tree_modules.torch.ones(2, 3, dtype=tree_modules.torch.float64)] * 3
    with pytest.raises(ValueError, match=re.escape("reward must be one of 'miou', 'dice', ") + ".*" + repr(name)):
        tree_modules.estimator.reward_of_counts(name, *counts)
    with pytest.raises(ValueError, match=re.escape("reward_cfg.reward must be one of 'miou'")):
        tree_modules.estimator.check_reward_cfg(dict(reward=name))
    with pytest.raises(ValueError, match=re.escape("reward must be one of [")):
        tree_modules.rewards.IoUMetricLoss(3, reward=name)


def test_iou_metric_loss_is_one_minus_miou_for_logits_and_labels(tree_modules):
    torch = tree_modules.torch
    pred, gt = random_batch(tree_modules)
    logits = torch.nn.functional.one_hot(pred, 5).permute(0, 3, 1, 2).float()
    loss = tree_modules.MODELS.build(dict(type="IoUMetricLoss", num_classes=5))
    expected = 1 - tree_modules.rewards.per_image_miou(pred, gt, 5, 255)
    assert torch.equal(loss(logits, gt), expected)
    assert torch.equal(loss(pred, gt), expected)
    assert loss(pred, gt).shape == (3,)


@pytest.mark.parametrize("options", [{}, {"avg_non_ignore": True}, {"loss_weight": 0.4}])
def test_cross_entropy_reward_loss_with_reward_one_is_mmseg_cross_entropy(tree_modules, options):
    torch = tree_modules.torch
    _, gt = random_batch(tree_modules)
    logits = torch.randn(3, 5, *gt.shape[1:])
    ours = tree_modules.CrossEntropyRewardLoss(**options)(logits, gt, reward=1.0, ignore_index=255)
    theirs = tree_modules.CrossEntropyLoss(**options)(logits, gt, ignore_index=255)
    assert torch.equal(ours, theirs)


def test_class_weights_load_like_mmseg_and_give_the_same_loss(tree_modules, tmp_path):
    torch = tree_modules.torch
    _, gt = random_batch(tree_modules, ignore_fraction=0.0)  # 1.2.2's CE cannot weight ignored labels
    logits = torch.randn(3, 5, *gt.shape[1:])
    weights = [0.5, 1.0, 2.0, 1.0, 0.7]
    ours = tree_modules.CrossEntropyRewardLoss(class_weight=weights)(logits, gt, ignore_index=255)
    theirs = tree_modules.CrossEntropyLoss(class_weight=weights)(logits, gt, ignore_index=255)
    assert torch.equal(ours, theirs)


def test_a_per_image_reward_scales_each_image_before_reduction(tree_modules):
    torch = tree_modules.torch
    _, gt = random_batch(tree_modules)
    logits = torch.randn(3, 5, *gt.shape[1:])
    loss = tree_modules.CrossEntropyRewardLoss(reduction="none")
    plain = loss(logits, gt, ignore_index=255)
    scaled = loss(logits, gt, reward=torch.tensor([2.0, 0.0, -1.0]), ignore_index=255)
    assert torch.allclose(scaled, plain * torch.tensor([2.0, 0.0, -1.0]).view(3, 1, 1))


def test_k_sampled_label_maps_cost_one_log_softmax_and_average_like_k_calls(tree_modules):
    torch = tree_modules.torch
    _, gt = random_batch(tree_modules)
    logits = torch.randn(3, 5, *gt.shape[1:])
    labels = torch.stack([random_batch(tree_modules, seed=s)[0] for s in (1, 2)])
    reward = torch.tensor([[0.2, -0.1, 0.5], [1.0, 0.3, -0.4]])
    loss = tree_modules.CrossEntropyRewardLoss(avg_non_ignore=True)
    together = loss(logits, labels, reward=reward, ignore_index=255)
    one_by_one = [loss(logits, labels[k], reward=reward[k], ignore_index=255) for k in range(2)]
    assert torch.allclose(together, sum(one_by_one) / 2, atol=1e-6)


def test_no_gradient_flows_into_the_reward(tree_modules):
    torch = tree_modules.torch
    _, gt = random_batch(tree_modules)
    logits = torch.randn(3, 5, *gt.shape[1:], requires_grad=True)
    reward = torch.ones(3, requires_grad=True)
    tree_modules.CrossEntropyRewardLoss()(logits, gt, reward=reward, ignore_index=255).backward()
    assert reward.grad is None and logits.grad is not None


def test_a_sigmoid_reward_loss_is_refused_at_build_time(tree_modules):
    with pytest.raises(ValueError, match="use_sigmoid"):
        tree_modules.MODELS.build(dict(type="CrossEntropyRewardLoss", use_sigmoid=True))


def head_loss(tree_modules, head, logits, gt, seed=0):
    tree_modules.torch.manual_seed(seed)
    return head.loss_by_feat(logits, tree_modules.samples(gt))


@pytest.mark.parametrize(("reward_cfg", "keys"), [
    ({}, {"reward_mean", "reward_greedy"}),
    ({"mode": "reinforce"}, {"reward_mean", "reward_greedy", "adv_std"}),
    ({"mode": "weighted_ce"}, {"reward_mean", "reward_greedy", "adv_std"}),
], ids=["local", "reinforce", "weighted-ce"])
def test_the_loss_dict_keeps_the_loss_name_and_logs_reward_statistics(tree_modules, reward_cfg, keys):
    torch = tree_modules.torch
    head = build_head(tree_modules, **reward_cfg)
    _, gt = random_batch(tree_modules, classes=4)
    losses = head_loss(tree_modules, head, torch.randn(3, 4, 9, 12), gt)
    assert set(losses) == {"loss_ce_reward", "acc_seg"} | keys
    assert [k for k in losses if "loss" in k] == ["loss_ce_reward"]


def test_acc_seg_is_mmsegs_accuracy_of_the_argmax(tree_modules):
    torch = tree_modules.torch
    from mmseg.models.losses import accuracy

    _, gt = random_batch(tree_modules, classes=4)
    gt[0, 0, :2] = 6  # out of range: labelled, never right
    logits = torch.randn(3, 4, *gt.shape[1:])
    losses = head_loss(tree_modules, build_head(tree_modules), logits, gt)
    assert torch.allclose(losses["acc_seg"], accuracy(logits, gt, ignore_index=255))


def test_the_default_is_what_the_learning_benchmark_selected(tree_modules):
    # local per-pixel credit on the decayed counts of recent batches, sampled at T = 0.5:
    # the committed benchmarks/results/learning.json, "selection" (best mean gain over CE
    # continued on four of its five tasks, two of them domain adaptation)
    head = build_head(tree_modules)
    assert head.reward_cfg == dict(mode="local", scope="dataset", reward="miou", num_samples=1, temperature=0.5,
                                   mle_weight=0.0, decay=0.99)
    result = json.loads((Path(__file__).parents[1] / "benchmarks" / "results" / "learning.json").read_text())
    selected = result["selection"]["reward_cfg"]
    assert {key: head.reward_cfg[key] for key in selected} == selected


def test_weighted_ce_reproduces_the_manual_recipe_formula(policy, tree_modules):
    torch = tree_modules.torch
    head = build_head(tree_modules, num_classes=3, mode="weighted_ce")
    gt = torch.tensor([[[0, 1], [2, 2]], [[1, 1], [1, 255]], [[0, 0], [2, 1]]])
    greedy = torch.tensor([[[0, 1], [2, 1]], [[1, 1], [0, 0]], [[2, 2], [2, 1]]])
    # logits whose argmax is `greedy`, with a spread that makes the CE non-trivial
    logits = (
        torch.nn.functional.one_hot(greedy, 3).permute(0, 3, 1, 2).float() * 2.0
        + 0.3 * torch.arange(3.0).view(1, 3, 1, 1)
    )
    losses = head_loss(tree_modules, head, logits, gt)
    miou = tree_modules.rewards.per_image_miou(greedy, gt, 3, 255)
    v = 1 - miou
    w = torch.stack([v[b] - 0.1 * (v.sum() - v[b]) / 2 for b in range(3)])
    ce = torch.nn.functional.cross_entropy(logits, gt, ignore_index=255, reduction="none")
    expected = (ce * w.view(3, 1, 1)).sum() / gt.numel()
    assert torch.allclose(losses["loss_ce_reward"], expected, atol=1e-6)
    assert torch.allclose(losses["reward_greedy"], miou.mean(), atol=1e-6)


@pytest.mark.parametrize("reward_cfg", [
    {}, {"scope": "image", "num_samples": 3}, {"scope": "dataset"}, {"mode": "reinforce", "num_samples": 3},
], ids=["local-batch", "local-image", "local-dataset", "reinforce"])
def test_ignored_pixels_change_neither_reward_nor_gradient(policy, tree_modules, reward_cfg):
    torch = tree_modules.torch
    _, gt = random_batch(tree_modules, classes=5, ignore_fraction=0.3)
    ignored = (gt == 255).unsqueeze(1)
    base = torch.randn(3, 5, *gt.shape[1:])
    changed = torch.where(ignored, torch.randn_like(base) * 10, base)
    results = []
    for values in (base, changed):
        head = build_head(tree_modules, num_classes=5, **reward_cfg)
        logits = values.clone().requires_grad_(True)
        losses = head_loss(tree_modules, head, logits, gt, seed=7)
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
        ({"scope": "epoch"}, "reward_cfg.scope must be one of"),
        ({"num_samples": 0}, "reward_cfg.num_samples must be an integer >= 1"),
        ({"num_samples": 2.5}, "reward_cfg.num_samples must be an integer >= 1"),
        ({"mode": "reinforce", "num_samples": 1}, "reward_cfg.num_samples must be >= 2 with baseline='loo'"),
        ({"mode": "reinforce", "baseline": "mean"}, "reward_cfg.baseline must be one of"),
        ({"baseline": "loo"}, "reward_cfg.baseline does not apply to mode='local'"),
        ({"normalize_advantage": True}, "reward_cfg.normalize_advantage does not apply to mode='local'"),
        ({"mode": "weighted_ce", "num_samples": 2}, "reward_cfg.num_samples does not apply to mode='weighted_ce'"),
        ({"mode": "weighted_ce", "scope": "batch"}, "reward_cfg.scope must be 'image' with mode='weighted_ce'"),
        ({"scope": "batch", "decay": 0.9}, "reward_cfg.decay applies to scope='dataset' only"),
        ({"scope": "dataset", "decay": 1.0}, "reward_cfg.decay must be a number in [0, 1)"),
        ({"reward": "iou"}, "reward_cfg.reward must be one of"),
        ({"temperature": 0}, "reward_cfg.temperature must be a number > 0"),
        ({"temperature": "hot"}, "reward_cfg.temperature must be a number > 0"),
        ({"mode": "reinforce", "normalize_advantage": "yes"}, "reward_cfg.normalize_advantage must be True or False"),
        ({"mle_weight": -0.5}, "reward_cfg.mle_weight must be a number >= 0"),
    ],
)
def test_a_bad_reward_cfg_fails_at_build_time_naming_the_key(tree_modules, reward_cfg, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_head(tree_modules, **reward_cfg)


def test_a_reward_head_built_with_the_originals_defaults_uses_its_cross_entropy_as_the_reward_loss(tree_modules):
    head = tree_modules.MODELS.build(dict(type="RewardFCNHead", in_channels=4, channels=4, num_classes=3))
    original = tree_modules.MODELS.build(dict(type="FCNHead", in_channels=4, channels=4, num_classes=3))
    assert type(head.loss_decode) is tree_modules.CrossEntropyRewardLoss
    assert (head.loss_decode.loss_weight, head.loss_decode.use_sigmoid) == (
        original.loss_decode.loss_weight, original.loss_decode.use_sigmoid)
    torch = tree_modules.torch
    gt = torch.randint(0, 3, (2, 8, 8))
    losses = head.loss_by_feat(torch.randn(2, 3, 8, 8, requires_grad=True), tree_modules.samples(gt))
    assert torch.isfinite(losses["loss_ce_reward"])


def test_a_converted_cross_entropy_keeps_its_arguments_and_other_losses_stay(tree_modules):
    ce = dict(type="CrossEntropyLoss", class_weight=[1.0, 2.0, 0.5], loss_weight=0.4, avg_non_ignore=True,
              loss_name="loss_ce")
    head = tree_modules.MODELS.build(dict(
        type="RewardFCNHead", in_channels=4, channels=4, num_classes=3,
        loss_decode=[ce, dict(type="DiceLoss", loss_weight=0.5)],
    ))
    converted, dice = head.loss_decode
    assert type(converted) is tree_modules.CrossEntropyRewardLoss and type(dice).__name__ == "DiceLoss"
    reference = tree_modules.MODELS.build(ce)
    for attribute in ("class_weight", "loss_weight", "avg_non_ignore", "loss_name", "reduction"):
        assert getattr(converted, attribute) == getattr(reference, attribute)
    torch = tree_modules.torch
    # no ignored pixel: MMSeg's own CrossEntropyLoss indexes class_weight with them when avg_non_ignore
    logits, gt = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    assert torch.equal(converted(logits, gt), reference(logits, gt))


def test_a_scoped_or_class_typed_cross_entropy_is_converted_too(tree_modules):
    for loss_type in ("mmseg.CrossEntropyLoss", tree_modules.CrossEntropyLoss):
        head = tree_modules.MODELS.build(dict(type="RewardFCNHead", in_channels=4, channels=4, num_classes=3,
                                    loss_decode=dict(type=loss_type, loss_weight=0.7)))
        assert type(head.loss_decode) is tree_modules.CrossEntropyRewardLoss and head.loss_decode.loss_weight == 0.7


def test_a_reward_loss_in_the_config_is_used_as_given_and_nothing_is_converted(tree_modules):
    head = tree_modules.MODELS.build(dict(
        type="RewardFCNHead", in_channels=4, channels=4, num_classes=3,
        loss_decode=[dict(type="CrossEntropyLoss", loss_name="loss_aux_ce"),
                     dict(type="CrossEntropyRewardLoss", loss_weight=0.3)],
    ))
    assert [type(m) for m in head.loss_decode] == [tree_modules.CrossEntropyLoss, tree_modules.CrossEntropyRewardLoss]


def test_the_conversion_is_logged_once_per_head_class(tree_modules, monkeypatch):
    said = []
    monkeypatch.setattr(tree_modules.head_module, "print_log", lambda message, **_: said.append(message))
    monkeypatch.setattr(tree_modules.head_module.RewardDecodeHead, "announced", set())
    for _ in range(3):
        tree_modules.MODELS.build(dict(type="RewardFCNHead", in_channels=4, channels=4, num_classes=3))
    assert said == [
        "RewardFCNHead: loss_decode CrossEntropyLoss is used as CrossEntropyRewardLoss with the same arguments"
    ]


def test_a_head_whose_losses_hold_no_cross_entropy_fails_at_build_time(tree_modules):
    with pytest.raises(
        ValueError, match="loss_decode: RewardFCNHead needs one CrossEntropyLoss or CrossEntropyRewardLoss"
    ):
        tree_modules.MODELS.build(dict(type="RewardFCNHead", in_channels=4, channels=4, num_classes=3,
                             loss_decode=dict(type="DiceLoss")))


def test_use_mask_is_refused_by_name(tree_modules):
    with pytest.raises(ValueError, match="use_mask: CrossEntropyRewardLoss"):
        tree_modules.MODELS.build(dict(type="CrossEntropyRewardLoss", use_mask=True))


def test_a_config_that_only_swaps_type_and_loss_works_with_defaults(tree_modules):
    head = tree_modules.MODELS.build(dict(
        type="RewardASPPHead", in_channels=8, channels=4, dilations=(1, 2), num_classes=3,
        loss_decode=dict(type="CrossEntropyRewardLoss", use_sigmoid=False, loss_weight=1.0),
    ))
    assert head.reward_cfg == tree_modules.estimator.check_reward_cfg(None)


def test_a_binary_sigmoid_head_is_refused(tree_modules):
    with pytest.raises(ValueError, match="out_channels=1"):
        tree_modules.MODELS.build(dict(
            type="RewardFCNHead", in_channels=4, channels=4, num_classes=2, out_channels=1,
            loss_decode=dict(type="CrossEntropyRewardLoss"),
        ))


# The table of count changes against brute force

def reference_counts(tree_modules, pred, gt, classes):
    """(I, P, G) per image by MMSeg's own IoUMetric.intersect_and_union."""
    rows = [tree_modules.IoUMetric.intersect_and_union(p, g, classes, 255) for p, g in zip(pred, gt)]
    return [(i.double(), ap.double(), ag.double()) for i, _, ap, ag in rows]


def mean_over_present(score, union):
    present = union > 0
    return float((score[present] / union[present]).mean()) if present.any() else 0.0


def labelled_share(part, whole):
    return float(part.sum() / whole.sum()) if whole.sum() > 0 else 0.0


def frequency_weighted(score, union, truth):
    """sum_c freq_c score_c / union_c, freq_c = G_c / sum G, over the classes in the ground truth."""
    present = truth > 0
    return labelled_share(truth[present] * score[present] / union[present], truth)


# Each reward of the table written out as its formula reads (IoUMetric's, for those it reports)
REFERENCE_REWARDS = {
    "miou": lambda i, p, g: mean_over_present(i, p + g - i),
    "dice": lambda i, p, g: mean_over_present(2 * i, p + g),
    "pixel_acc": lambda i, p, g: labelled_share(i, g),
    "fwiou": lambda i, p, g: frequency_weighted(i, p + g - i, g),
}


def reference_reward(reward, intersect, predicted, truth):
    """The reward of summed counts."""
    return REFERENCE_REWARDS[reward](intersect, predicted, truth)


def test_every_reward_of_the_table_has_a_reference_formula_here():
    assert set(REFERENCE_REWARDS) == set(REWARD_NAMES)


def random_problem(tree_modules, seed, classes=4, size=(3, 4), batch=3):
    """Ignored pixels, out-of-range ground truth, a class absent from an image."""
    torch = tree_modules.torch
    generator = torch.Generator().manual_seed(seed)
    gt = torch.randint(0, classes, (batch, *size), generator=generator)
    gt[torch.rand(gt.shape, generator=generator) < 0.2] = 255
    gt[0][torch.rand(size, generator=generator) < 0.2] = classes + 3
    gt[1][gt[1] == 2] = 0
    pred = torch.randint(0, classes, (batch, *size), generator=generator)
    pred[2][pred[2] == 3] = 1
    return pred, gt


@pytest.mark.parametrize("reward", REWARD_NAMES)
@pytest.mark.parametrize("scope", ["image", "batch", "dataset"])
def test_every_table_entry_is_the_reward_recomputed_with_one_pixel_changed(policy, tree_modules, reward, scope):
    torch = tree_modules.torch
    est = tree_modules.estimator
    classes = 4
    for seed in range(3):
        pred, gt = random_problem(tree_modules, seed, classes)
        estimator = est.RewardEstimator(dict(scope=scope, reward=reward), classes, 255)
        keys = est.count_keys(est.label_rows(gt, classes, 255), classes)
        history = None
        if scope == "dataset":  # a first batch leaves its decayed counts behind
            first, first_gt = random_problem(tree_modules, seed + 100, classes)
            first_keys = est.count_keys(est.label_rows(first_gt, classes, 255), classes)
            estimator._score(est.confusion(torch.stack([first, first]), first_keys, classes))
            history = [
                estimator.cfg["decay"] * sum(c[k] for c in reference_counts(tree_modules, first, first_gt, classes))
                for k in range(3)
            ]
        scored, _, _ = estimator._score(est.confusion(torch.stack([pred, pred]), keys, classes))
        delta = est.flip_table(reward, *est.class_counts(scored[0]))
        units = [[b] for b in range(len(gt))] if scope == "image" else [list(range(len(gt)))]

        def unit_reward(labels, images):
            counts = reference_counts(tree_modules, labels[images], gt[images], classes)
            summed = [sum(c[k] for c in counts) + (history[k] if history else 0) for k in range(3)]
            return reference_reward(reward, *summed)

        for u, images in enumerate(units):
            before = unit_reward(pred, images)
            assert math.isclose(before, float(est.reward_of_counts(reward, *est.class_counts(scored[0]))[u]),
                                abs_tol=1e-12)
            for b, y, x in itertools.product(images, range(gt.shape[1]), range(gt.shape[2])):
                if gt[b, y, x] == 255:
                    continue
                row = int(gt[b, y, x]) if gt[b, y, x] < classes else classes
                for new in range(classes):
                    changed = pred.clone()
                    changed[b, y, x] = new
                    expected = unit_reward(changed, images) - before
                    entry = float(delta[u, pred[b, y, x], row, new])
                    assert math.isclose(entry, expected, abs_tol=1e-12), (b, y, x, new)


def test_the_dataset_scope_scores_the_decayed_sum_of_the_batches(tree_modules):
    torch = tree_modules.torch
    est = tree_modules.estimator
    estimator = est.RewardEstimator(dict(scope="dataset", decay=0.5), 4, 255)
    tables = [torch.rand(3, 2, 6, 4).double() for _ in range(3)]  # 2 samples + argmax, 2 images
    for table in tables:
        scored, _, current = estimator._score(table)
    pooled = [t.sum(1) for t in tables]
    expected_samples = 0.25 * pooled[0][:2].mean(0) + 0.5 * pooled[1][:2].mean(0) + pooled[2][0]
    assert torch.allclose(scored[0, 0], expected_samples)
    assert torch.allclose(scored[2, 0], 0.25 * pooled[0][2] + 0.5 * pooled[1][2] + pooled[2][2])
    assert torch.equal(current[:, 0], pooled[2])


# Unbiasedness by exact enumeration: every label map, weighted by its probability

def fix_samples(monkeypatch, tree_modules, samples):
    """The reward head draws `samples` [K, B, H, W] instead of random ones."""

    def fixed(flat, num_samples, temperature, peak, probs=None):
        if probs is not None:
            probs.copy_(tree_modules.torch.softmax(flat.float() / temperature, 1))
        return samples.reshape(samples.shape[0], flat.shape[0], -1)

    monkeypatch.setattr(tree_modules.reward_estimator, "sample_labels", fixed)


def enumerate_maps(tree_modules, gt, classes):
    """Every label map over the labelled pixels (ignored ones stay 0)."""
    torch = tree_modules.torch
    labelled = (gt != 255).nonzero(as_tuple=True)
    for values in itertools.product(range(classes), repeat=len(labelled[0])):
        labels = torch.zeros_like(gt)
        labels[labelled] = torch.tensor(values)
        yield labels


def map_probability(tree_modules, logits, labels, gt, temperature):
    probs = tree_modules.torch.softmax(logits.double() / temperature, 1)
    chosen = probs.gather(1, labels[:, None]).squeeze(1)
    return float(chosen[gt != 255].prod())


def exact_expected_gradient(tree_modules, logits, gt, classes, scope, reward, temperature, pixel_weights):
    """d/dlogits of sum_u (M_u / Z) E[R_u], each pixel's gradient times its weight."""
    torch = tree_modules.torch
    est = tree_modules.estimator
    maps = torch.stack(list(enumerate_maps(tree_modules, gt, classes)))
    param = logits.double().clone().requires_grad_(True)
    probs = torch.softmax(param / temperature, 1)
    chosen = probs[None].expand(len(maps), -1, -1, -1, -1).gather(2, maps[:, :, None]).squeeze(2)
    log_p = torch.where(gt != 255, chosen.log(), torch.zeros_like(chosen)).flatten(1).sum(1)
    tables = est.confusion(maps, est.count_keys(est.label_rows(gt, classes, 255), classes), classes)
    if scope != "image":
        tables = tables.sum(1, keepdim=True)
    rewards = est.reward_of_counts(reward, *est.class_counts(tables))
    scale = est.labelled_pixels(tables) / (gt != 255).sum()
    ((log_p.exp() * (rewards * scale).sum(1)).sum()).backward()
    return param.grad * pixel_weights[:, None]


@pytest.mark.parametrize(("scope", "reward", "temperature", "class_weight"), [
    ("image", "miou", 1.0, None),
    ("batch", "miou", 1.0, None),
    ("image", "dice", 1.5, [0.5, 2.0, 1.5]),
    *[("batch", reward, 0.7, [0.5, 2.0, 1.5]) for reward in REWARD_NAMES],
], ids=["image", "batch", "image-dice-T-weights", *[f"batch-{reward}-T-weights" for reward in REWARD_NAMES]])
def test_the_local_estimate_is_unbiased_by_exact_enumeration(policy, tree_modules, monkeypatch, scope, reward,
                                                              temperature, class_weight):
    """Two images, three classes, five labelled pixels (one out of range): 243 label maps."""
    torch = tree_modules.torch
    classes = 3
    gt = torch.tensor([[[0, 1, 255]], [[2, 7, 1]]])
    logits = torch.tensor([[[[1.0, -0.5, 0.0]], [[0.3, 0.8, 0.0]], [[-0.2, 0.1, 0.0]]],
                           [[[0.2, 0.0, -1.0]], [[0.9, -0.3, 0.5]], [[0.0, 0.4, 0.3]]]])
    loss = dict(avg_non_ignore=True, class_weight=class_weight)
    head = build_head(tree_modules, num_classes=classes, loss=loss, scope=scope, reward=reward, temperature=temperature)
    expected = torch.zeros(logits.shape, dtype=torch.float64)
    for labels in enumerate_maps(tree_modules, gt, classes):
        fix_samples(monkeypatch, tree_modules, labels[None])
        param = logits.clone().requires_grad_(True)
        head.loss_by_feat(param, tree_modules.samples(gt))["loss_ce_reward"].backward()
        expected -= map_probability(tree_modules, logits, labels, gt, temperature) * param.grad.double()
    weights = torch.ones(classes + 2, dtype=torch.float64)
    if class_weight:
        weights[:classes] = torch.tensor(class_weight)
    weights[classes + 1] = 0
    pixel_weights = weights[tree_modules.estimator.label_rows(gt, classes, 255)]
    exact = exact_expected_gradient(tree_modules, logits, gt, classes, scope, reward, temperature, pixel_weights)
    assert torch.allclose(expected, exact, atol=1e-7), (expected - exact).abs().max()


@pytest.mark.parametrize("scope", ["image", "batch"])
def test_reinforce_weights_classes_by_the_ground_truth_and_stays_unbiased(policy, tree_modules, monkeypatch, scope):
    """One sample, no baseline: E[estimate] = the class-weighted gradient, by exact enumeration."""
    torch = tree_modules.torch
    classes = 3
    class_weight = [0.5, 2.0, 1.5]
    gt = torch.tensor([[[0, 1, 255]], [[2, 7, 1]]])
    logits = torch.tensor([[[[1.0, -0.5, 0.0]], [[0.3, 0.8, 0.0]], [[-0.2, 0.1, 0.0]]],
                           [[[0.2, 0.0, -1.0]], [[0.9, -0.3, 0.5]], [[0.0, 0.4, 0.3]]]])
    head = build_head(tree_modules, num_classes=classes, loss=dict(avg_non_ignore=True, class_weight=class_weight),
                      mode="reinforce", scope=scope, num_samples=1, baseline="none")
    expected = torch.zeros(logits.shape, dtype=torch.float64)
    for labels in enumerate_maps(tree_modules, gt, classes):
        fix_samples(monkeypatch, tree_modules, labels[None])
        param = logits.clone().requires_grad_(True)
        head.loss_by_feat(param, tree_modules.samples(gt))["loss_ce_reward"].backward()
        expected -= map_probability(tree_modules, logits, labels, gt, 1.0) * param.grad.double()
    weights = torch.tensor(class_weight + [1.0, 0.0], dtype=torch.float64)
    pixel_weights = weights[tree_modules.estimator.label_rows(gt, classes, 255)]
    # REINFORCE's mean runs over the weighted labelled pixels; the local scale over units
    exact = exact_expected_gradient(tree_modules, logits, gt, classes, scope, "miou", 1.0, pixel_weights)
    tables = tree_modules.estimator.confusion(gt.clamp(max=classes - 1)[None], tree_modules.estimator.count_keys(
        tree_modules.estimator.label_rows(gt, classes, 255), classes), classes)
    if scope == "image":  # undo the local scale M_u / Z per image
        per_image = tree_modules.estimator.labelled_pixels(tables[0]) / (gt != 255).sum()
        exact = exact / per_image.view(-1, 1, 1, 1)
    exact = exact / pixel_weights.sum()
    assert torch.allclose(expected, exact, atol=1e-7), (expected - exact).abs().max()


# Two images, three classes, five labelled pixels (one out of range), and a domain-adaptation
# fork's pseudo-label confidence per pixel (the ignored one's is unused)
GT = [[[0, 1, 255]], [[2, 7, 1]]]
LOGITS = [[[[1.0, -0.5, 0.0]], [[0.3, 0.8, 0.0]], [[-0.2, 0.1, 0.0]]],
          [[[0.2, 0.0, -1.0]], [[0.9, -0.3, 0.5]], [[0.0, 0.4, 0.3]]]]
SEG_WEIGHT = [[[0.9, 0.2, 0.7]], [[0.5, 1.0, 0.0]]]


def seg_weighted_estimate(tree_modules, monkeypatch, head, logits, gt, seg_weight):
    """E[the head's gradient on the logits], seg_weight passed as the fork's base passes it."""
    expected = tree_modules.torch.zeros(logits.shape, dtype=tree_modules.torch.float64)
    for labels in enumerate_maps(tree_modules, gt, head.num_classes):
        fix_samples(monkeypatch, tree_modules, labels[None])
        param = logits.clone().requires_grad_(True)
        head.reward_losses(param, gt[:, None], seg_weight)["loss_ce_reward"].backward()
        expected -= map_probability(tree_modules, logits, labels, gt, 1.0) * param.grad.double()
    return expected


@pytest.mark.parametrize("scope", ["image", "batch"])
def test_seg_weight_keeps_the_local_estimate_unbiased_for_the_pixel_weighted_gradient(
    policy, tree_modules, monkeypatch, scope
):
    """E[estimate] = the exact gradient with each pixel's row times its seg_weight: 243 label maps."""
    torch = tree_modules.torch
    classes = 3
    gt, logits, seg_weight = (torch.tensor(t) for t in (GT, LOGITS, SEG_WEIGHT))
    head = build_head(tree_modules, num_classes=classes, loss=dict(avg_non_ignore=True), scope=scope, temperature=1.0)
    expected = seg_weighted_estimate(tree_modules, monkeypatch, head, logits, gt, seg_weight)
    exact = exact_expected_gradient(tree_modules, logits, gt, classes, scope, "miou", 1.0, seg_weight.double())
    assert torch.allclose(expected, exact, atol=1e-7), (expected - exact).abs().max()


@pytest.mark.parametrize("scope", ["image", "batch"])
def test_seg_weight_keeps_reinforce_unbiased_for_the_pixel_weighted_gradient(policy, tree_modules, monkeypatch, scope):
    """One sample, no baseline: E[estimate] = the seg_weight-weighted gradient, by exact enumeration."""
    torch = tree_modules.torch
    classes = 3
    gt, logits, seg_weight = (torch.tensor(t) for t in (GT, LOGITS, SEG_WEIGHT))
    head = build_head(tree_modules, num_classes=classes, loss=dict(avg_non_ignore=True),
                      mode="reinforce", scope=scope, num_samples=1, baseline="none")
    expected = seg_weighted_estimate(tree_modules, monkeypatch, head, logits, gt, seg_weight)
    exact = exact_expected_gradient(tree_modules, logits, gt, classes, scope, "miou", 1.0, seg_weight.double())
    # REINFORCE's mean runs over the labelled pixels; the local scale over units
    tables = tree_modules.estimator.confusion(gt.clamp(max=classes - 1)[None], tree_modules.estimator.count_keys(
        tree_modules.estimator.label_rows(gt, classes, 255), classes), classes)
    if scope == "image":  # undo the local scale M_u / Z per image
        per_image = tree_modules.estimator.labelled_pixels(tables[0]) / (gt != 255).sum()
        exact = exact / per_image.view(-1, 1, 1, 1)
    exact = exact / (gt != 255).sum()
    assert torch.allclose(expected, exact, atol=1e-7), (expected - exact).abs().max()


def exact_gradient_of_expected_miou(tree_modules, logits, gt, classes):
    """d/dlogits of sum over all label maps y of p(y) * mIoU(y, gt), by enumeration."""
    torch = tree_modules.torch
    logits = logits.clone().requires_grad_(True)
    log_probs = torch.log_softmax(logits, dim=0).flatten(1)  # [C, pixels]
    pixels = log_probs.shape[1]
    maps = torch.tensor(list(itertools.product(range(classes), repeat=pixels)))  # [C^P, P]
    rewards = tree_modules.rewards.per_image_miou(
        maps.view(-1, *gt.shape), gt.expand(len(maps), *gt.shape), classes, 255
    )
    log_p = log_probs[maps, torch.arange(pixels)].sum(1)
    (log_p.exp() * rewards).sum().backward()
    return logits.grad


@pytest.mark.parametrize("baseline", ["loo", "greedy"])
def test_reinforce_gradient_is_an_unbiased_estimate_of_the_expected_miou_gradient(policy, tree_modules, baseline):
    """One image of 2x2 pixels and 3 classes: 81 label maps, enumerable exactly."""
    torch = tree_modules.torch
    torch.manual_seed(0)
    classes = 3
    gt = torch.tensor([[0, 1], [2, 1]])
    logits = torch.tensor([[[1.0, -0.5], [0.2, 0.0]], [[0.3, 0.8], [-1.0, 0.4]], [[-0.2, 0.1], [0.9, -0.3]]])
    exact = exact_gradient_of_expected_miou(tree_modules, logits, gt, classes)

    head = build_head(tree_modules, num_classes=classes, mode="reinforce", baseline=baseline, num_samples=2)
    copies = 4096  # independent draws per call: the same image repeated in one batch
    estimate = torch.zeros_like(logits)
    rounds = 12
    for round_ in range(rounds):
        param = logits.clone().requires_grad_(True)
        losses = head_loss(tree_modules, head, param.expand(copies, -1, -1, -1), gt.expand(copies, -1, -1), seed=round_)
        losses["loss_ce_reward"].backward()
        estimate -= param.grad
    cosine = torch.nn.functional.cosine_similarity(estimate.flatten(), exact.flatten(), dim=0)
    # the loss averages over 4 pixels: E[-grad] = grad E[mIoU] / 4, scale included
    ratio = estimate.norm() / rounds / (exact.norm() / 4)
    assert cosine > 0.99, f"cosine {float(cosine):.4f}"
    assert 0.9 < ratio < 1.1, f"norm ratio {float(ratio):.3f}"


# Direction on a problem too large to enumerate: the exact gradient from tests/exact_gradient.py

def moderate_problem(tree_modules, seed=1, batch=4, classes=5, size=24):
    """Every class in every image's ground truth, a tenth of the pixels ignored, logits
    that lean towards the truth with noise."""
    torch = tree_modules.torch
    generator = torch.Generator().manual_seed(seed)
    gt = torch.randint(0, classes, (batch, size, size), generator=generator)
    gt[torch.rand(gt.shape, generator=generator) < 0.1] = 255
    onehot = torch.nn.functional.one_hot(gt.clamp(max=classes - 1), classes).permute(0, 3, 1, 2).float()
    logits = 1.5 * torch.randn(batch, classes, size, size, generator=generator) + 2.0 * onehot
    return logits, gt


def exact_direction(tree_modules, logits, gt, classes, scope):
    import numpy as np

    from exact_gradient import expected_miou_gradient

    torch = tree_modules.torch
    probs = torch.softmax(logits.double(), 1).permute(0, 2, 3, 1).numpy()
    labels = gt.numpy()
    units = [[b] for b in range(len(gt))] if scope == "image" else [list(range(len(gt)))]
    total = np.zeros_like(probs)
    labelled = (labels != 255).sum()
    for images in units:
        flat = probs[images].reshape(-1, classes)
        grad = expected_miou_gradient(flat, labels[images].ravel(), classes)
        scale = (labels[images] != 255).sum() / labelled
        total[images] = (grad * scale).reshape(probs[images].shape)
    return torch.from_numpy(total).permute(0, 3, 1, 2)


@pytest.mark.parametrize("scope", ["image", "batch"])
def test_one_local_estimate_points_along_the_exact_gradient(policy, tree_modules, scope):
    torch = tree_modules.torch
    classes = 5
    logits, gt = moderate_problem(tree_modules, classes=classes)
    exact = exact_direction(tree_modules, logits, gt, classes, scope)

    def cosine(reward_cfg, seed):
        head = build_head(tree_modules, num_classes=classes, loss=dict(avg_non_ignore=True), **reward_cfg)
        param = logits.clone().requires_grad_(True)
        head_loss(tree_modules, head, param, gt, seed=seed)["loss_ce_reward"].backward()
        return float(torch.nn.functional.cosine_similarity(-param.grad.double().flatten(), exact.flatten(), dim=0))

    local = [cosine(dict(scope=scope, temperature=1.0), seed) for seed in range(3)]
    reinforce = [cosine(dict(mode="reinforce", scope=scope, num_samples=2), seed) for seed in range(3)]
    print(f"\ncosine with the exact gradient, 4x24x24, 5 classes, scope={scope}: "
          f"local (1 sample) {min(local):.4f}..{max(local):.4f}, "
          f"reinforce (loo, 2 samples) {min(reinforce):.4f}..{max(reinforce):.4f}")
    assert min(local) >= 0.95


def test_the_local_gradient_scales_with_loss_weight_and_matches_cross_entropy_in_size(tree_modules):
    torch = tree_modules.torch
    classes = 5
    logits, gt = moderate_problem(tree_modules, classes=classes)
    grads = {}
    for name, loss in (("one", {}), ("two", {"loss_weight": 2.0})):
        param = logits.clone().requires_grad_(True)
        head_loss(tree_modules, build_head(tree_modules, num_classes=classes, loss=loss), param, gt, seed=3)[
            "loss_ce_reward"
        ].backward()
        grads[name] = param.grad
    assert torch.allclose(grads["two"], 2 * grads["one"])
    param = logits.clone().requires_grad_(True)
    tree_modules.CrossEntropyLoss()(param, gt, ignore_index=255).backward()
    ratio = float(grads["one"].norm() / param.grad.norm())
    assert 0.2 < ratio < 5, ratio


@pytest.mark.parametrize(
    "reward_cfg",
    [
        {},
        {"scope": "image", "num_samples": 2, "temperature": 1.5},
        {"scope": "dataset", "reward": "dice"},
        {"mode": "reinforce"},
        {"mode": "reinforce", "baseline": "greedy", "num_samples": 1, "scope": "batch"},
        {"mode": "reinforce", "baseline": "batch_mean", "normalize_advantage": True, "temperature": 1.5},
        {"mode": "weighted_ce"},
        {"mode": "reinforce", "reward": "dice", "mle_weight": 0.5},
    ],
    ids=["local-batch", "local-image-K2-T", "local-dataset-dice", "reinforce-loo", "reinforce-greedy-batch",
         "reinforce-batch-mean", "weighted-ce", "dice-with-mle"],
)
def test_a_patched_head_trains_a_few_steps_on_cpu(policy, tree_modules, reward_cfg):
    torch = tree_modules.torch
    torch.manual_seed(0)
    head = tree_modules.MODELS.build(dict(
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
        losses = head.loss(features, tree_modules.samples(gt), None)
        loss = sum(v for k, v in losses.items() if "loss" in k)
        assert torch.isfinite(loss)
        loss.backward()
        grad = head.conv_seg.weight.grad
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
        optimizer.step()
    assert not torch.equal(before, head.conv_seg.weight)
    assert 0.0 <= float(losses["reward_greedy"]) <= 1.0


def test_sampled_labels_with_class_weights_and_ignored_pixels_work(tree_modules):
    # MMSeg 1.2.x's own CE indexes class weights with the ignore label; this path must not
    torch = tree_modules.torch
    _, gt = random_batch(tree_modules, ignore_fraction=0.3)
    logits = torch.randn(3, 5, *gt.shape[1:], requires_grad=True)
    labels = torch.stack([random_batch(tree_modules, seed=s)[0] for s in (1, 2)]).masked_fill(gt == 255, 255)
    loss = tree_modules.CrossEntropyRewardLoss(class_weight=[0.5, 1.0, 2.0, 1.0, 0.7], avg_non_ignore=True)
    value = loss(logits, labels, reward=torch.ones(2, 3), ignore_index=255, ground_truth=gt)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()


def test_sampled_labels_with_class_weights_need_the_ground_truth(tree_modules):
    torch = tree_modules.torch
    _, gt = random_batch(tree_modules)
    labels = torch.stack([random_batch(tree_modules, seed=s)[0] for s in (1, 2)])
    loss = tree_modules.CrossEntropyRewardLoss(class_weight=[0.5, 1.0, 2.0, 1.0, 0.7])
    with pytest.raises(ValueError, match="class_weight: sampled labels need the ground truth"):
        loss(torch.randn(3, 5, *gt.shape[1:]), labels, reward=torch.ones(2, 3), ignore_index=255)
