"""Resumed runs: scope='dataset''s history is part of the reward head's state.

With scope='dataset' (the default of mode 'local') a step scores its batch's class counts
plus `history`, a decayed sum of the earlier batches' counts. That history is a float64
buffer of the head's RewardEstimator, so it goes with the head's state_dict: saved in
every checkpoint, restored by mmengine's resume, and an mmengine run resumed from
iteration k computes at k + 1 the very loss of the run that was never interrupted.

A checkpoint without it (written before it was saved, or a cross-entropy model's given
as `load_from`) loads with no missing key and leaves zeros, which mean "no history yet";
one of another number of classes is an error that names the key. Casting the model
(`half()`, 0.x's fp16) keeps the history float64.

The Runner runs reuse `rewardpatch verify`'s model and synthetic dataset, at 32 x 32.
"""

import json
import logging

import pytest

from conftest import copy_checkout, run_python
from rewardpatch.planning import ApplyOptions, plan_apply
from rewardpatch.tree import MMSegTree

SIZE = 32
CHECKPOINT_AT = 3  # k: the runs compare iteration k + 1
SEED = 1000
HEAD_ARGS = dict(num_convs=1, concat_input=False)
HISTORY = "decode_head.reward_estimator.history"


class Logged(logging.Handler):
    """Every message of a logger from the moment it is attached."""

    def __init__(self, logger):
        super().__init__(logging.DEBUG)
        self.messages = []
        logger.addHandler(self)

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def dataset(patched_tree, tmp_path_factory):
    from rewardpatch.verify.synthetic import write_dataset

    root = tmp_path_factory.mktemp("resume_data")
    return root, write_dataset(root, num_train=8, num_val=1, size=SIZE, num_classes=4)


def model_config(head_type="RewardFCNHead"):
    from rewardpatch.verify.finetune import CE_LOSS
    from rewardpatch.verify.finetune import model_config as verify_model

    # the default reward_cfg: mode 'local', scope 'dataset'
    return verify_model(head_type, HEAD_ARGS, CE_LOSS, None, image_size=SIZE)


def runner(name, work, dataset, iters=CHECKPOINT_AT + 1, **options):
    """An mmengine Runner of verify's config: constant LR, no validation, a checkpoint at k,
    a hook that seeds torch before each iteration and records its loss and history."""
    import torch
    from mmengine.config import Config
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    from rewardpatch.verify.finetune import runner_config

    root, metainfo = dataset
    config = runner_config(name, work / name, model_config(), str(root), metainfo, iters, lr=0.01,
                           distributed=False, device="cpu", schedule=False, batch_size=2)
    config["default_hooks"]["checkpoint"] = dict(type="CheckpointHook", by_epoch=False, interval=CHECKPOINT_AT)
    config.update(val_dataloader=None, val_cfg=None, val_evaluator=None, **options)
    built = Runner.from_cfg(Config(config))
    built.record = {}

    class SeedAndRecord(Hook):
        # mmengine does not save the torch RNG in checkpoints (nor restore it on resume):
        # the local mode's samples at k + 1 are the same in both runs only when each
        # iteration seeds torch itself. The data order is the sampler's, seeded by the
        # config's seed, and mmengine skips the k batches already trained on resume.
        priority = "VERY_HIGH"

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            torch.manual_seed(SEED + runner.iter)

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            history = runner.model.decode_head.reward_estimator.history
            runner.record[runner.iter + 1] = (float(outputs["loss"].detach()), history.clone())

    built.register_hook(SeedAndRecord())
    built.logged = Logged(built.logger)
    return built


def resume(name, work, dataset, checkpoint):
    built = runner(name, work, dataset, resume=True, load_from=str(checkpoint))
    # mmengine 0.10.7 resumes with torch.load's default, weights_only=True under torch >= 2.6,
    # which refuses its own checkpoints (a HistoryBuffer in message_hub): this test trusts
    # the file it has just written, and a user resuming their own run does the same
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
        built.train()
    return built


@pytest.fixture(scope="module")
def runs(dataset, tmp_path_factory):
    """The uninterrupted run to k + 1 (its checkpoint at k), the run resumed from that
    checkpoint, and one resumed from it with the history deleted (as saved before)."""
    import torch

    work = tmp_path_factory.mktemp("resume_work")
    uninterrupted = runner("uninterrupted", work, dataset)
    uninterrupted.train()
    checkpoint = work / "uninterrupted" / f"iter_{CHECKPOINT_AT}.pth"
    resumed = resume("resumed", work, dataset, checkpoint)

    saved = torch.load(checkpoint, weights_only=False)  # written by this test
    history = saved["state_dict"].pop(HISTORY)
    without = work / "without_history.pth"
    torch.save(saved, without)
    resumed_without = resume("without_history", work, dataset, without)
    return dict(uninterrupted=uninterrupted, resumed=resumed, without=resumed_without, history=history)


def test_a_run_resumed_at_k_computes_the_uninterrupted_loss_at_k_plus_1(runs):
    import torch

    k = CHECKPOINT_AT
    uninterrupted, resumed = runs["uninterrupted"].record, runs["resumed"].record
    assert sorted(uninterrupted) == list(range(1, k + 2)) and sorted(resumed) == [k + 1]
    # the checkpoint holds the history of iteration k, float64, not zeros
    assert runs["history"].dtype == torch.float64
    assert torch.equal(runs["history"], uninterrupted[k][1]) and runs["history"].abs().sum() > 0
    loss, history = uninterrupted[k + 1]
    assert resumed[k + 1][0] == pytest.approx(loss, abs=1e-6)
    assert torch.equal(resumed[k + 1][1], history)
    assert any("Advance dataloader 3 steps" in m for m in runs["resumed"].logged.messages)


def test_without_the_saved_history_the_resumed_loss_differs(runs):
    """What resuming did before the history was saved: the test above has teeth."""
    k = CHECKPOINT_AT
    loss, history = runs["uninterrupted"].record[k + 1]
    without_loss, without_history = runs["without"].record[k + 1]
    assert abs(without_loss - loss) > 1e-4
    assert (without_history - history).abs().max() > 1


def test_a_checkpoint_without_the_history_resumes_with_no_missing_key(runs):
    messages = runs["without"].logged.messages
    assert any("Advance dataloader" in m for m in messages)  # the handler saw the resume
    assert not [m for m in messages if "reward_estimator" in m or "missing keys" in m]


def test_a_cross_entropy_checkpoint_loads_through_load_from(dataset, tmp_path):
    import torch
    from mmengine.registry import DefaultScope

    from mmseg.registry import MODELS

    with DefaultScope.overwrite_default_scope("mmseg"):
        ce = MODELS.build(model_config("FCNHead"))
    checkpoint = tmp_path / "ce.pth"
    torch.save({"state_dict": ce.state_dict(), "meta": {}}, checkpoint)  # loads weights_only
    loaded = runner("from_ce", tmp_path, dataset, load_from=str(checkpoint))
    loaded.load_or_resume()
    head = loaded.model.decode_head
    assert type(head).__name__ == "RewardFCNHead"
    assert torch.equal(head.conv_seg.weight, ce.decode_head.conv_seg.weight)
    assert head.reward_estimator.history.dtype == torch.float64
    assert not head.reward_estimator.history.any()
    # the CE model's keys are the reward model's but the history: nothing to report
    assert not [m for m in loaded.logged.messages if "do not match" in m or "reward_estimator" in m]


# The head itself, without a Runner

def build_head(num_classes=4, **reward_cfg):
    from mmseg.registry import MODELS

    return MODELS.build(dict(
        type="RewardFCNHead", in_channels=4, channels=4, num_convs=1, num_classes=num_classes,
        concat_input=False, dropout_ratio=0.0, loss_decode=dict(type="CrossEntropyRewardLoss"),
        reward_cfg=reward_cfg,
    ))


def with_history(head):
    """The head after a step of scope='dataset': a history that is not zeros."""
    import torch

    estimator = head.reward_estimator
    tables = torch.rand(2, 2, estimator.num_classes + 2, estimator.num_classes).double() * 1000
    estimator._score(tables)
    assert estimator.history.any()
    return head


@pytest.mark.parametrize("reward_cfg", [dict(scope="dataset"), dict(scope="image"), dict(mode="weighted_ce")])
def test_every_reward_head_has_the_history_in_its_state_dict(patched_tree, reward_cfg):
    import torch

    head = build_head(**reward_cfg)
    history = head.state_dict()["reward_estimator.history"]
    assert history.dtype == torch.float64 and history.shape == (2, 6, 4) and not history.any()
    assert "reward_estimator.history" in dict(head.named_buffers())


def test_the_history_loads_across_scopes(patched_tree):
    import torch

    saved = with_history(build_head(scope="dataset")).state_dict()
    image = build_head(scope="image")
    image.load_state_dict(saved)
    assert torch.equal(image.reward_estimator.history, saved["reward_estimator.history"])
    build_head(scope="dataset").load_state_dict(image.state_dict())


def test_casting_the_model_keeps_the_history_float64(patched_tree):
    import torch

    head = with_history(build_head())
    history = head.reward_estimator.history.clone()
    for cast in (lambda m: m.half(), lambda m: m.to(torch.bfloat16), lambda m: m.float()):
        cast(head)
        assert head.conv_seg.weight.dtype != torch.float64
        assert head.reward_estimator.history.dtype == torch.float64
        assert torch.equal(head.reward_estimator.history, history)
    head.to("meta", torch.float16)  # the device follows
    assert head.reward_estimator.history.device.type == "meta"
    assert head.reward_estimator.history.dtype == torch.float64
    assert head.conv_seg.weight.dtype == torch.float16


def test_a_state_dict_without_the_history_loads_strictly_and_leaves_zeros(patched_tree):
    saved = build_head().state_dict()
    del saved["reward_estimator.history"]
    head = with_history(build_head())
    result = head.load_state_dict(saved, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert not head.reward_estimator.history.any()


def test_a_history_of_another_number_of_classes_is_refused_by_name(patched_tree):
    import torch
    from mmengine.runner.checkpoint import load_state_dict

    saved = with_history(build_head(num_classes=5)).state_dict()
    saved = {k: v for k, v in saved.items() if k == "reward_estimator.history"}
    head = with_history(build_head())
    with pytest.raises(RuntimeError, match=r"reward_estimator\.history: .* \(5 classes\), this head has "
                                           r"\(2, 6, 4\) \(4 classes\)"):
        head.load_state_dict(saved, strict=False)
    assert not head.reward_estimator.history.any()
    # mmengine's non-strict load (load_from) warns with the same words, as for conv_seg
    logger = logging.getLogger("rewardpatch-test-resume")
    logged = Logged(logger)
    load_state_dict(with_history(head), saved, strict=False, logger=logger)
    assert any("(5 classes), this head has" in m for m in logged.messages)
    assert torch.equal(head.reward_estimator.history, torch.zeros(2, 6, 4, dtype=torch.float64))


# MMSeg 0.x: mmcv.runner's save_checkpoint / load_checkpoint of a reward head

CODE_0X = r"""
import json
import torch
from mmcv.runner import load_checkpoint, load_state_dict, save_checkpoint
from mmseg.models import build_head

def head():
    torch.manual_seed(0)
    return build_head(dict(type='RewardFCNHead', in_channels=8, channels=8, num_convs=1, num_classes=4,
                           concat_input=False, dropout_ratio=0.0, loss_decode=dict(type='CrossEntropyLoss')))

def step(model, index):
    generator = torch.Generator().manual_seed(index)
    features = torch.randn(2, 8, 8, 8, generator=generator)
    labels = torch.randint(0, 4, (2, 1, 16, 16), generator=generator)
    torch.manual_seed(100 + index)  # the samples of the step
    return float(model.losses(model([features]), labels)['loss_ce_reward'])

first = head()
for index in range(3):
    step(first, index)
save_checkpoint(first, CHECKPOINT)
second = head()
load_checkpoint(second, CHECKPOINT, map_location='cpu', strict=True)
result = {'history_restored': torch.equal(second.reward_estimator.history, first.reward_estimator.history),
          'nonzero': bool(first.reward_estimator.history.any())}
result['same_next_loss'] = step(first, 3) == step(second, 3)
old = {k: v for k, v in first.state_dict().items() if not k.endswith('history')}
third = head()
load_state_dict(third, old, strict=True)
result['old_loads_with_zeros'] = not third.reward_estimator.history.any()
first.half()
result['half_keeps_float64'] = first.reward_estimator.history.dtype == torch.float64
print(json.dumps(result))
"""


def test_mmcv_runner_checkpoints_of_a_0x_reward_head_hold_the_history(python_0x, tmp_path):
    tree = copy_checkout("0.30.0", tmp_path / "mmsegmentation")
    plan_apply(MMSegTree.open(tree), ApplyOptions(heads=("FCNHead",))).execute()
    code = f"CHECKPOINT = {str(tmp_path / 'head.pth')!r}\n" + CODE_0X
    result = run_python(code, tree, timeout=300, python=python_0x)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "history_restored": True, "nonzero": True, "same_next_loss": True, "old_loads_with_zeros": True,
        "half_keeps_float64": True,
    }
