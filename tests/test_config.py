"""`rewardpatch config` and the checkpoint module: reward fine-tune configs from MMSeg configs.

The written configs are loaded back with mmengine and their models built in the patched
1.2.2 tree (the `patched_tree` fixture), as a user would train them.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import one_line_error, run_cli, run_python
from rewardpatch.planning import ApplyOptions, plan_apply
from rewardpatch.tree import MMSegTree

DEEPLABV3 = "configs/deeplabv3/deeplabv3_r50-d8_4xb2-40k_cityscapes-512x1024.py"
PSPNET = "configs/pspnet/pspnet_r50-d8_4xb2-40k_cityscapes-512x1024.py"
SEGFORMER = "configs/segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py"
UPERNET = "configs/upernet/upernet_r50_4xb2-40k_cityscapes-512x1024.py"
OCRNET = "configs/ocrnet/ocrnet_hr18s_4xb2-40k_cityscapes-512x1024.py"

# A whole model small enough to save and load in a test: ResNet-18 with 8 base channels.
TINY = """
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', size=(32, 32)),
    backbone=dict(type='ResNetV1c', depth=18, stem_channels=8, base_channels=8, out_indices=(3,),
                  norm_cfg=norm_cfg),
    decode_head=dict(type='FCNHead', in_channels=64, channels=8, num_convs=1, num_classes=3, in_index=0,
                     norm_cfg=norm_cfg,
                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=100, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=100, val_interval=50)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=50))
load_from = None
resume = False
"""


def load(path):
    from mmengine.config import Config

    return Config.fromfile(str(path))


def build(cfg):
    """The model of a loaded config, built from the patched tree's registry (no init_weights)."""
    from mmengine.registry import init_default_scope

    from mmseg.registry import MODELS

    init_default_scope("mmseg")
    return MODELS.build(cfg.model)


def heads_of(module) -> list:
    return list(module) if hasattr(module, "__iter__") else [module]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def tiny(tmp_path) -> Path:
    return write(tmp_path / "tiny.py", TINY)


@pytest.fixture
def config(patched_tree, tmp_path, capsys):
    """config(SRC, *options) -> (exit code, OUT, stdout, stderr), OUT beside the tests' files."""

    def call(src, *options, out=None):
        out = out or tmp_path / "reward.py"
        src = patched_tree / src if not Path(src).is_absolute() else src
        code, stdout, stderr = run_cli(capsys, "config", src, "--tree", patched_tree, "-o", out, *options)
        return code, out, stdout, stderr

    return call


def mmengine_checkpoint(model, path: Path) -> Path:
    """What mmengine's Runner.save_checkpoint writes: meta, state_dict, message_hub, optimizer."""
    import numpy as np
    import torch
    from mmengine.logging import MessageHub

    hub = MessageHub(name="rewardpatch-test")  # not get_instance: no global current hub
    hub.update_scalar("train/loss", 0.5)
    torch.save({
        "meta": {"iter": 100, "seed": np.int64(7), "mmengine_version": "0.10.7",
                 "dataset_meta": {"classes": ("a", "b", "c"), "palette": [[1, 2, 3]] * 3}},
        "state_dict": model.state_dict(),
        "message_hub": hub.state_dict(),
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
        "param_schedulers": [{"last_step": 99}],
    }, path)
    return path


@pytest.mark.parametrize(
    "src, options, decode, aux",
    [
        (DEEPLABV3, [], ["RewardASPPHead"], "FCNHead"),
        (PSPNET, [], ["RewardPSPHead"], "FCNHead"),
        (SEGFORMER, ["--lr", "6e-6"], ["RewardSegformerHead"], None),
        (UPERNET, [], ["RewardUPerHead"], "FCNHead"),
        (UPERNET, ["--aux"], ["RewardUPerHead"], "RewardFCNHead"),
        (OCRNET, [], ["RewardFCNHead", "RewardOCRHead"], None),
    ],
    ids=["deeplabv3", "pspnet", "segformer", "upernet", "upernet-aux", "ocrnet-cascade"],
)
def test_the_written_config_builds_reward_heads_in_the_patched_tree(config, src, options, decode, aux):
    code, out, _, _ = config(src, *options)
    assert code == 0
    model = build(load(out))
    heads = heads_of(model.decode_head)
    assert [type(h).__name__ for h in heads] == decode
    assert all(type(h.loss_decode).__name__ == "CrossEntropyRewardLoss" for h in heads)
    if aux is None:
        assert not model.with_auxiliary_head
    else:
        assert type(model.auxiliary_head).__name__ == aux
        loss = "CrossEntropyRewardLoss" if aux.startswith("Reward") else "CrossEntropyLoss"
        assert type(model.auxiliary_head.loss_decode).__name__ == loss


def test_aux_keeps_the_auxiliary_loss_weight(config):
    _, out, _, _ = config(UPERNET, "--aux")
    assert dict(load(out).model.auxiliary_head.loss_decode) == {"type": "CrossEntropyRewardLoss", "loss_weight": 0.4}


def test_out_inherits_src_relatively_and_lists_each_change_in_its_header(config, patched_tree, tmp_path):
    out = patched_tree / "configs" / "reward_deeplabv3.py"
    try:
        code, _, stdout, _ = config(DEEPLABV3, out=out)
        assert code == 0
        text = out.read_text()
    finally:
        out.unlink(missing_ok=True)
    assert "_base_ = './deeplabv3/deeplabv3_r50-d8_4xb2-40k_cityscapes-512x1024.py'" in text
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert "#   model.decode_head.type: ASPPHead -> RewardASPPHead" in header
    assert any(line.startswith("#   train_cfg.max_iters: 40000 -> 2000") for line in header)
    assert "model.decode_head.type: ASPPHead -> RewardASPPHead" in stdout


@pytest.mark.parametrize("src, out, expected", [
    ("/work/mmseg/configs/a/x.py", "/work/mmseg/configs/reward/y.py", "../a/x.py"),
    ("/work/mmseg/configs/x.py", "/work/mmseg/configs/y.py", "./x.py"),
    ("/srv/mmseg/configs/x.py", "/home/me/y.py", "/srv/mmseg/configs/x.py"),
])
def test_base_is_relative_to_out_when_they_share_a_directory_else_absolute(src, out, expected):
    from rewardpatch.configs.render import base_reference

    assert base_reference(Path(src), Path(out)) == expected


def test_out_overrides_only_what_changes(config):
    code, out, _, _ = config(DEEPLABV3)
    assert code == 0
    assigned = [line.split(" = ")[0] for line in out.read_text().splitlines() if line and line[0].isalpha()]
    assert assigned == ["model", "optim_wrapper", "param_scheduler", "train_cfg", "default_hooks"]
    cfg = load(out)
    assert cfg.model.backbone.type == "ResNetV1c" and cfg.model.auxiliary_head.type == "FCNHead"
    assert dict(cfg.model.decode_head.loss_decode) == {"type": "CrossEntropyRewardLoss", "loss_weight": 1.0}


def test_a_cross_entropy_loss_keeps_its_weights_and_drops_use_sigmoid(config, tmp_path, patched_tree):
    src = write(tmp_path / "weighted.py", f"""
_base_ = '{patched_tree / DEEPLABV3}'
model = dict(decode_head=dict(loss_decode=[
    dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.7, class_weight=[1.0] * 19,
         avg_non_ignore=True),
    dict(type='DiceLoss', loss_weight=0.3)]))
""")
    code, out, _, _ = config(src)
    assert code == 0
    losses = [dict(loss) for loss in load(out).model.decode_head.loss_decode]
    assert losses == [
        {"type": "CrossEntropyRewardLoss", "loss_weight": 0.7, "class_weight": [1.0] * 19, "avg_non_ignore": True},
        {"type": "DiceLoss", "loss_weight": 0.3},
    ]


def test_a_sigmoid_cross_entropy_is_an_input_error(config, tmp_path, patched_tree):
    src = write(tmp_path / "sigmoid.py", f"""
_base_ = '{patched_tree / DEEPLABV3}'
model = dict(decode_head=dict(loss_decode=dict(use_sigmoid=True)))
""")
    code, out, _, err = config(src)
    assert code == 2
    assert "use_sigmoid=True" in one_line_error(err)
    assert not out.exists()


def test_a_head_without_a_cross_entropy_loss_is_an_input_error(config, tmp_path, patched_tree):
    src = write(tmp_path / "dice.py", f"""
_base_ = '{patched_tree / DEEPLABV3}'
model = dict(decode_head=dict(loss_decode=dict(_delete_=True, type='DiceLoss')))
""")
    code, _, _, err = config(src)
    assert code == 2
    assert "no CrossEntropyLoss" in one_line_error(err)


def test_a_config_with_custom_imports_and_other_keys_keeps_them(config, tmp_path, patched_tree):
    src = write(tmp_path / "custom.py", f"""
_base_ = '{patched_tree / DEEPLABV3}'
custom_imports = dict(imports=['json'], allow_failed_imports=False)
other_tool = dict(enabled=True, threshold=0.5)
""")
    code, out, _, _ = config(src)
    assert code == 0
    cfg = load(out)
    assert cfg.custom_imports == dict(imports=["json"], allow_failed_imports=False)
    assert cfg.other_tool == dict(enabled=True, threshold=0.5)
    assert "other_tool" not in out.read_text() and "custom_imports" not in out.read_text()


# Mixed precision: the source's AMP settings are inherited as they are, never rewritten.
DEEPLABV3_AMP = "configs/deeplabv3/deeplabv3_r101-d8_4xb2-amp-80k_cityscapes-512x1024.py"  # loss_scale=512.
CONVNEXT_AMP = "configs/convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py"  # 'dynamic', AdamW


@pytest.mark.parametrize("src, options, loss_scale, lr", [
    (DEEPLABV3_AMP, [], 512.0, 1e-4),
    (CONVNEXT_AMP, ["--lr", "6e-6"], "dynamic", 6e-6),  # its PolyLR ends at 0
], ids=["deeplabv3-amp", "convnext-amp"])
def test_mmsegs_amp_configs_keep_their_amp_optim_wrapper(config, src, options, loss_scale, lr):
    from mmengine.config import Config

    code, out, stdout, _ = config(src, *options)
    assert code == 0
    wrapper = Config.fromfile(str(out), import_custom_modules=False).optim_wrapper  # ConvNeXt's is mmpretrain's
    assert wrapper.type == "AmpOptimWrapper" and wrapper.loss_scale == loss_scale
    assert wrapper.optimizer.lr == lr
    assert "AmpOptimWrapper" not in out.read_text() and "loss_scale" not in stdout  # inherited


@pytest.mark.parametrize("amp", [
    "loss_scale='dynamic'",
    "loss_scale=512.0, dtype='float16'",
    "loss_scale=dict(init_scale=512.0, growth_interval=100), dtype='bfloat16'",
], ids=["dynamic", "static-fp16", "dict-bf16"])
def test_an_amp_optim_wrapper_keeps_its_loss_scale_and_dtype(config, tmp_path, patched_tree, amp):
    src = write(tmp_path / "amp.py", f"""
_base_ = '{patched_tree / DEEPLABV3}'
optim_wrapper = dict(type='AmpOptimWrapper', {amp})
""")
    code, out, stdout, _ = config(src)
    assert code == 0
    source, written_ = load(src).optim_wrapper, load(out).optim_wrapper
    assert written_.type == "AmpOptimWrapper"
    assert written_.loss_scale == source.loss_scale and written_.get("dtype") == source.get("dtype")
    assert written_.optimizer.lr == 1e-4 and "optim_wrapper.optimizer.lr: 0.01 -> 0.0001" in stdout
    assert [line for line in stdout.splitlines() if line.startswith("  optim_wrapper")] == [
        "  optim_wrapper.optimizer.lr: 0.01 -> 0.0001  (where the source schedule ends)"]
    build(load(out))  # the model builds; the wrapper itself needs CUDA (mmengine asserts it)


def test_the_lr_defaults_to_where_the_source_schedule_ends(config):
    _, out, _, _ = config(DEEPLABV3)
    assert load(out).optim_wrapper.optimizer.lr == 1e-4  # PolyLR's eta_min


@pytest.mark.parametrize(
    "schedule, expected",
    [
        ("[dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=10),"
         " dict(type='MultiStepLR', milestones=[60, 80], gamma=0.1, by_epoch=False, begin=0, end=100)]", 1e-4),
        ("[dict(type='CosineAnnealingLR', T_max=100, eta_min=1e-3, by_epoch=False, begin=0, end=100)]",
         1e-3 + (0.01 - 1e-3) * (1 + math.cos(math.pi * 99 / 100)) / 2),
        ("[dict(type='ConstantLR', factor=0.5, by_epoch=False, begin=0, end=1000)]", 0.005),
    ],
    ids=["warmup-then-multistep", "cosine", "constant"],
)
def test_the_default_lr_follows_mmengines_schedulers(config, tiny, schedule, expected):
    src = write(tiny.with_name("scheduled.py"), f"_base_ = './tiny.py'\nparam_scheduler = {schedule}\n")
    code, out, _, _ = config(src)
    assert code == 0
    assert load(out).optim_wrapper.optimizer.lr == pytest.approx(expected, rel=1e-5)


def test_a_schedule_ending_at_zero_asks_for_lr(config):
    code, _, _, err = config(SEGFORMER)
    assert code == 2
    assert "pass --lr" in one_line_error(err)


@pytest.mark.parametrize(
    "schedule",
    ["dict(type='PolyLR', eta_min=1e-4, end=100)",  # by_epoch defaults to True
     "dict(type='NoSuchLR', by_epoch=False)"],
    ids=["by-epoch", "unknown"],
)
def test_a_schedule_it_cannot_evaluate_asks_for_lr(config, tiny, schedule):
    src = write(tiny.with_name("odd.py"), f"_base_ = './tiny.py'\nparam_scheduler = [{schedule}]\n")
    code, _, _, err = config(src)
    assert code == 2
    assert "pass --lr" in one_line_error(err)
    assert config(src, "--lr", "1e-3")[0] == 0


def test_lr_wins_over_the_source_schedule(config):
    _, out, _, _ = config(DEEPLABV3, "--lr", "3e-4")
    assert load(out).optim_wrapper.optimizer.lr == 3e-4


@pytest.mark.parametrize(
    "schedule, expected",
    [
        ("poly", dict(type="PolyLR", eta_min=0.0, power=0.9, begin=0, end=500, by_epoch=False)),
        ("cosine", dict(type="CosineAnnealingLR", T_max=500, eta_min=0.0, begin=0, end=500, by_epoch=False)),
    ],
)
def test_iters_sets_max_iters_and_the_end_of_the_schedule(config, schedule, expected):
    _, out, _, _ = config(DEEPLABV3, "--iters", "500", "--schedule", schedule)
    cfg = load(out)
    assert cfg.train_cfg.max_iters == 500
    assert [dict(s) for s in cfg.param_scheduler] == [expected]
    assert cfg.train_cfg.val_interval == 500 and cfg.default_hooks.checkpoint.interval == 500


def test_intervals_shorter_than_the_fine_tune_stay(config):
    _, out, _, _ = config(DEEPLABV3, "--iters", "10000")
    cfg = load(out)
    assert cfg.train_cfg.val_interval == 4000 and cfg.default_hooks.checkpoint.interval == 4000


@pytest.mark.parametrize("option, value", [("--lr", "0"), ("--lr", "fast"), ("--iters", "0")])
def test_a_bad_lr_or_iters_is_a_usage_error(config, option, value):
    code, out, _, err = config(DEEPLABV3, option, value)
    assert code == 2
    assert option in one_line_error(err)
    assert not out.exists()


def test_an_epoch_based_source_is_an_input_error(config, tiny):
    src = write(tiny.with_name("epochs.py"), "_base_ = './tiny.py'\n"
                "train_cfg = dict(_delete_=True, type='EpochBasedTrainLoop', max_epochs=12)\n")
    code, _, _, err = config(src)
    assert code == 2
    assert "EpochBasedTrainLoop" in one_line_error(err)


@pytest.mark.parametrize("options", [
    ["--reward", "mode=reinforce", "--reward", "num_samples=4"],
    ["--reward", "mode=reinforce,num_samples=4"],
], ids=["repeated", "comma-separated"])
def test_reward_options_become_the_heads_reward_cfg(config, options):
    code, out, _, _ = config(DEEPLABV3, *options)
    assert code == 0
    cfg = load(out)
    assert cfg.model.decode_head.reward_cfg == dict(mode="reinforce", num_samples=4)
    assert build(cfg).decode_head.reward_cfg["mode"] == "reinforce"


def test_reward_values_are_python_literals(config):
    _, out, _, _ = config(
        DEEPLABV3, "--reward", "mode='reinforce',temperature=0.5,normalize_advantage=True,baseline='greedy'"
    )
    assert load(out).model.decode_head.reward_cfg == dict(
        mode="reinforce", temperature=0.5, normalize_advantage=True, baseline="greedy")


@pytest.mark.parametrize("item, key", [("foo=1", "foo"), ("num_samples=0", "num_samples"),
                                       ("mode=greedy", "mode"), ("temperature=-1", "temperature"),
                                       ("baseline=greedy", "baseline"), ("scope=dataset,mode=weighted_ce", "scope"),
                                       ("scope=batch,decay=0.9", "decay")])
def test_a_bad_reward_option_is_an_input_error_naming_the_key(config, item, key):
    code, out, _, err = config(DEEPLABV3, "--reward", item)
    assert code == 2
    assert key in one_line_error(err)
    assert not out.exists()


def test_reward_options_are_checked_by_the_trees_reward_schema_imported_without_torch(patched_tree):
    """config imports the tree's reward_schema.py by path (plugin mode: rewardpatch's own template)."""
    code = (
        "import sys; from rewardpatch.configs.reward_cfg import reward_cfg_checker; "
        f"from rewardpatch.tree import MMSegTree; tree = MMSegTree.open({str(patched_tree)!r}); "
        "checks = [reward_cfg_checker(tree), reward_cfg_checker(tree, plugin=True)]; "
        "assert [c(dict(reward='fwiou'))['reward'] for c in checks] == ['fwiou'] * 2; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr


def test_a_tree_without_its_reward_schema_is_refused_naming_it(make_tree, tmp_path, capsys, stack):
    tree = make_tree("1.2.2")
    plan_apply(MMSegTree.open(tree), ApplyOptions(heads=("ASPPHead",))).execute()
    (tree / "mmseg/models/losses/reward_schema.py").unlink()
    code, _, err = run_cli(capsys, "config", tree / DEEPLABV3, "--tree", tree, "-o", tmp_path / "out.py")
    assert code == 1
    assert "reward_schema.py is missing" in one_line_error(err)


def test_a_head_without_a_reward_version_is_refused_with_the_apply_hint(make_tree, tmp_path, capsys, stack):
    tree = make_tree("1.2.2")
    plan_apply(MMSegTree.open(tree), ApplyOptions(heads=("FCNHead",))).execute()
    code, _, err = run_cli(capsys, "config", tree / DEEPLABV3, "--tree", tree, "-o", tmp_path / "out.py")
    assert code == 1
    assert f"rewardpatch apply {tree} --heads ASPPHead" in one_line_error(err)
    assert not (tmp_path / "out.py").exists()


def test_an_unpatched_tree_is_refused(tree, tmp_path, capsys, stack):
    code, _, err = run_cli(capsys, "config", tree / DEEPLABV3, "--tree", tree, "-o", tmp_path / "out.py")
    assert code == 1
    assert "not patched" in one_line_error(err)


def test_a_missing_src_is_an_input_error(config, tmp_path):
    code, _, _, err = config(tmp_path / "nope.py")
    assert code == 2
    assert "no such config file" in one_line_error(err)


def test_a_src_that_does_not_load_is_an_input_error(config, tmp_path):
    code, _, _, err = config(write(tmp_path / "broken.py", "model = dict(\n"))
    assert code == 2
    assert "cannot load the config" in one_line_error(err)


def test_a_weights_only_checkpoint_becomes_load_from(config, tiny, tmp_path):
    import torch

    checkpoint = tmp_path / "ce.pth"
    torch.save({"state_dict": build(load(tiny)).state_dict(), "meta": {"iter": 100}}, checkpoint)
    code, out, _, _ = config(tiny, "--checkpoint", checkpoint)
    assert code == 0
    assert load(out).load_from == str(checkpoint)


def test_an_mmengine_checkpoint_is_refused_with_the_convert_hint(config, tiny, tmp_path):
    checkpoint = mmengine_checkpoint(build(load(tiny)), tmp_path / "ce.pth")
    code, out, _, err = config(tiny, "--checkpoint", checkpoint)
    assert code == 1
    message = one_line_error(err)
    assert "weights_only=True" in message and "--convert-checkpoint" in message
    assert "HistoryBuffer" in message
    assert not out.exists()


def test_convert_checkpoint_writes_a_weights_only_copy_that_mmengine_loads(config, tiny, tmp_path):
    import torch
    from mmengine.runner import load_checkpoint

    source_model = build(load(tiny))
    checkpoint = mmengine_checkpoint(source_model, tmp_path / "ce.pth")
    code, out, stdout, _ = config(tiny, "--checkpoint", checkpoint, "--convert-checkpoint")
    assert code == 0
    copy = tmp_path / "reward_weights.pth"
    cfg = load(out)
    assert cfg.load_from == str(copy)
    assert "message_hub" in stdout
    loaded = torch.load(copy, weights_only=True)
    assert loaded["meta"]["dataset_meta"]["classes"] == ("a", "b", "c")
    model = build(cfg)
    assert type(model.decode_head).__name__ == "RewardFCNHead"
    load_checkpoint(model, str(copy), map_location="cpu", strict=True)
    expected = source_model.state_dict()
    loaded = model.state_dict()
    # the reward head's one key of its own: scope='dataset''s history, no history yet
    assert set(loaded) - set(expected) == {"decode_head.reward_estimator.history"}
    assert not loaded.pop("decode_head.reward_estimator.history").any()
    assert all(torch.equal(value, expected[key]) for key, value in loaded.items())


def test_the_runner_loads_the_converted_copy_through_load_from_and_refuses_the_original(
    config, tiny, tmp_path, patched_tree
):
    checkpoint = mmengine_checkpoint(build(load(tiny)), tmp_path / "ce.pth")
    _, out, _, _ = config(tiny, "--checkpoint", checkpoint, "--convert-checkpoint")
    code = f"""
import pickle, torch
from mmengine.config import Config
from mmengine.runner import Runner
cfg = Config.fromfile({str(out)!r})
def runner(load_from, name):
    return Runner(model=cfg.model, work_dir={str(tmp_path)!r} + '/' + name, load_from=load_from,
                  default_scope='mmseg')
loaded = runner(cfg.load_from, 'copy')
loaded.load_or_resume()
weights = torch.load(cfg.load_from, weights_only=True)['state_dict']
state = loaded.model.state_dict()
assert not state.pop('decode_head.reward_estimator.history').any()  # no history yet
assert all(torch.equal(v, weights[k]) for k, v in state.items())
print('copy loaded into', type(loaded.model.decode_head).__name__)
try:
    runner({str(checkpoint)!r}, 'original').load_or_resume()
except pickle.UnpicklingError:
    print('original refused')
"""
    result = run_python(code, patched_tree)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "copy loaded into RewardFCNHead" in result.stdout
    assert "original refused" in result.stdout


def test_convert_checkpoint_leaves_a_weights_only_checkpoint_as_it_is(config, tiny, tmp_path):
    import torch

    checkpoint = tmp_path / "ce.pth"
    torch.save({"state_dict": build(load(tiny)).state_dict()}, checkpoint)
    code, out, _, err = config(tiny, "--checkpoint", checkpoint, "--convert-checkpoint")
    assert code == 0 and "not converted" in err
    assert load(out).load_from == str(checkpoint)
    assert not (tmp_path / "reward_weights.pth").exists()


@pytest.mark.parametrize("options, code, message", [
    (["--checkpoint", "nope.pth"], 2, "no such checkpoint file"),
    (["--convert-checkpoint"], 2, "--convert-checkpoint needs --checkpoint"),
])
def test_checkpoint_usage_errors(config, tiny, options, code, message):
    got, _, _, err = config(tiny, *options)
    assert got == code
    assert message in one_line_error(err)


def test_a_file_that_is_no_checkpoint_is_an_input_error(config, tiny):
    code, _, _, err = config(tiny, "--checkpoint", tiny)
    assert code == 2
    assert "not a PyTorch checkpoint" in one_line_error(err)


def test_check_weights_only_never_runs_pickled_code(patched_tree, tmp_path):
    import torch

    from rewardpatch.checkpoints import check_weights_only

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"state_dict": {}, "meta": Payload()}, tmp_path / "evil.pth")
    check = check_weights_only(tmp_path / "evil.pth")
    assert not check.ok and "pathlib" in check.reason.lower()
    assert not marker.exists()


def test_the_converted_meta_keeps_only_plain_values(patched_tree, tiny, tmp_path):
    from rewardpatch.checkpoints import convert_to_weights_only

    checkpoint = mmengine_checkpoint(build(load(tiny)), tmp_path / "ce.pth")
    converted = convert_to_weights_only(checkpoint, tmp_path / "copy.pth")
    assert set(converted.dropped) == {"message_hub", "optimizer", "param_schedulers", "meta.seed"}
    import torch

    meta = torch.load(converted.path, weights_only=True)["meta"]
    json.dumps(meta)
    assert meta["iter"] == 100 and "seed" not in meta


def test_the_help_does_not_import_torch_or_mmengine():
    code = ("import sys; from rewardpatch.cli import main; main(['config', '--help']); "
            "assert 'torch' not in sys.modules and 'mmengine' not in sys.modules, 'heavy import'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--convert-checkpoint" in result.stdout and "trust" in result.stdout


# MMSeg 0.x configs (mmcv 1.x's runner): optimizer, lr_config and runner.

MMSEG0 = ("0.30.0", "0.24.1")
DEEPLABV3_0 = "configs/deeplabv3/deeplabv3_r50-d8_512x1024_40k_cityscapes.py"
PSPNET_0 = "configs/pspnet/pspnet_r50-d8_512x1024_40k_cityscapes.py"
OCRNET_0 = "configs/ocrnet/ocrnet_hr18s_512x1024_40k_cityscapes.py"
STEP_0 = "configs/pspnet/pspnet_r50-d8_rsb-pretrain_512x1024_adamw_80k_cityscapes.py"  # step, warmup
CGNET_0 = "configs/cgnet/cgnet_512x1024_60k_cityscapes.py"  # legacy total_iters, no runner
SEGFORMER_0 = "configs/segformer/segformer_mit-b0_512x512_160k_ade20k.py"  # poly to min_lr=0.0
REWARD_HEADS_0X = {"RewardASPPHead", "RewardPSPHead", "RewardFCNHead", "RewardOCRHead", "RewardSegformerHead"}


def poly_end(base, min_lr, power, max_iters):
    """mmcv's PolyLrUpdaterHook at the last iteration (runner.iter = max_iters - 1)."""
    return (base - min_lr) * (1 - (max_iters - 1) / max_iters) ** power + min_lr


def plan_0x(source, runner="mmcv", **options):
    from rewardpatch.configs.command import plan_finetune
    from rewardpatch.configs.finetune_plan import FinetuneOptions

    return plan_finetune(source, FinetuneOptions(
        reward_classes=REWARD_HEADS_0X, tree="TREE", runner=runner, **options))


def load_0x(pristine, version, src) -> dict:
    """The source config, read with mmengine (a test that calls this or `written` requests `stack`)."""
    from rewardpatch.configs.render import load_config

    return load_config(pristine(version) / src, src)


def written(plan, src: Path, out: Path):
    """OUT as `config` writes it (checked by write_verified), loaded back by mmengine."""
    from rewardpatch.configs.render import base_reference, render, write_verified

    write_verified(out, render(plan, base_reference(src, out), src.name, "the patched tree TREE"), plan.target)
    return load(out)


def tiny_0x(**keys) -> dict:
    """A 0.x config reduced to what the schedule reads, `keys` replacing its parts."""
    source = dict(
        model=dict(type="EncoderDecoder", decode_head=dict(
            type="FCNHead", loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0))),
        optimizer=dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=0.0005),
        optimizer_config=dict(),
        lr_config=dict(policy="poly", power=0.9, min_lr=1e-4, by_epoch=False),
        runner=dict(type="IterBasedRunner", max_iters=1000),
        checkpoint_config=dict(by_epoch=False, interval=100),
        evaluation=dict(interval=100, metric="mIoU"),
        load_from=None,
        resume_from=None,
    )
    source.update(keys)
    return {k: v for k, v in source.items() if v is not REMOVE}


REMOVE = object()


@pytest.mark.parametrize("lr_config, expected", [
    (dict(policy="poly", power=0.9, min_lr=1e-4, by_epoch=False), poly_end(0.01, 1e-4, 0.9, 1000)),
    (dict(policy="poly", by_epoch=False), poly_end(0.01, 0.0, 1.0, 1000)),  # power 1, min_lr 0
    (dict(policy="step", step=[600, 900], by_epoch=False), 0.01 * 0.1**2),
    (dict(policy="step", step=[600, 999], gamma=0.5, by_epoch=False), 0.01 * 0.5**2),  # 999 is the last iter
    (dict(policy="step", step=[600, 1000], gamma=0.5, by_epoch=False), 0.01 * 0.5),
    (dict(policy="step", step=300, gamma=0.5, min_lr=2e-3, by_epoch=False), 2e-3),  # 0.01 * 0.5**3 clipped
    (dict(policy="step", step=300, gamma=0.5, by_epoch=False), 0.01 * 0.5**3),
    (dict(policy="CosineAnnealing", min_lr=1e-4, by_epoch=False),
     1e-4 + 0.5 * (0.01 - 1e-4) * (1 + math.cos(math.pi * 999 / 1000))),
    (dict(policy="CosineAnnealing", min_lr_ratio=0.1, by_epoch=False),
     1e-3 + 0.5 * (0.01 - 1e-3) * (1 + math.cos(math.pi * 999 / 1000))),
    (dict(policy="fixed", by_epoch=False), 0.01),
    (dict(policy="fixed"), 0.01),  # without warmup, by_epoch changes nothing
    (None, 0.01),  # no LrUpdaterHook at all
    (dict(policy="exp", gamma=0.999, by_epoch=False), 0.01 * 0.999**999),
    (dict(policy="inv", gamma=0.01, power=0.5, by_epoch=False), 0.01 * (1 + 0.01 * 999) ** -0.5),
    (dict(policy="poly", power=1.0, min_lr=0.0, by_epoch=False, warmup="linear", warmup_iters=100,
          warmup_ratio=0.1), poly_end(0.01, 0.0, 1.0, 1000)),  # warmup long over
    (dict(policy="fixed", by_epoch=False, warmup="linear", warmup_iters=2000, warmup_ratio=0.1),
     0.01 * (1 - (1 - 999 / 2000) * 0.9)),
    (dict(policy="fixed", by_epoch=False, warmup="constant", warmup_iters=1000, warmup_ratio=0.1), 0.001),
    (dict(policy="fixed", by_epoch=False, warmup="exp", warmup_iters=1000, warmup_ratio=0.1),
     0.01 * 0.1 ** (1 - 999 / 1000)),
], ids=["poly", "poly-defaults", "step-list", "step-at-last-iter", "step-after-last-iter", "step-min-lr",
        "step-int", "cosine", "cosine-ratio", "fixed", "fixed-by-epoch", "no-lr-config", "exp", "inv",
        "warmup-over", "warmup-linear-at-end", "warmup-constant-at-end", "warmup-exp-at-end"])
def test_the_0x_end_lr_follows_mmcvs_lr_updater_hooks(lr_config, expected):
    from rewardpatch.configs.lr_config import lr_config_end_lr

    assert lr_config_end_lr(lr_config, 0.01, 1000) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("lr_config, message", [
    (dict(policy="CosineRestart", periods=[500, 500], min_lr=0.0, by_epoch=False), "computes the end LR of the"),
    (dict(policy="cosineannealing", min_lr=0.0, by_epoch=False), "'cosineannealing'"),  # mmcv: Cosineannealing
    (dict(policy="poly", power=0.9), "steps by epoch"),  # by_epoch defaults to True
    (dict(policy="fixed", warmup="linear", warmup_iters=10), "steps by epoch"),
    (dict(policy="step", by_epoch=False), "step"),  # step is required
    (dict(policy="step", step=(600, 900), by_epoch=False), "list or an integer"),
    (dict(policy="poly", power=0.9, by_epoch=False, gamma=0.1), "gamma"),
    (dict(policy="CosineAnnealing", min_lr=0.0, min_lr_ratio=0.1, by_epoch=False), "exactly one"),
    (dict(policy="poly", by_epoch=False, warmup="cosine", warmup_iters=10), "warmup='cosine'"),
    (dict(policy="poly", by_epoch=False, warmup="linear", warmup_iters=1, warmup_by_epoch=True), "warmup_by_epoch"),
    (dict(power=0.9, by_epoch=False), "no policy"),
    (dict(policy="inv", gamma=-0.01, power=0.5, by_epoch=False), "not a learning rate"),  # a complex LR
], ids=["cosine-restart", "lowercase-cosine", "by-epoch", "fixed-warmup-by-epoch", "missing-step", "step-tuple",
        "unknown-argument", "min-lr-and-ratio", "unknown-warmup", "warmup-by-epoch", "no-policy", "complex"])
def test_a_0x_lr_config_it_cannot_evaluate_asks_for_lr(lr_config, message):
    from rewardpatch.errors import InputError

    with pytest.raises(InputError, match="pass --lr") as error:
        plan_0x(tiny_0x(lr_config=lr_config))
    assert message in str(error.value)
    assert plan_0x(tiny_0x(lr_config=lr_config), lr=1e-3).target["optimizer"]["lr"] == 1e-3


def test_a_0x_schedule_ending_near_zero_asks_for_lr():
    from rewardpatch.errors import InputError

    long = dict(runner=dict(type="IterBasedRunner", max_iters=10000))
    assert plan_0x(tiny_0x(**long)).target["optimizer"]["lr"] == float(f"{poly_end(0.01, 1e-4, 0.9, 10000):.6g}")
    with pytest.raises(InputError, match="too small to continue from; pass --lr"):
        plan_0x(tiny_0x(lr_config=dict(policy="poly", power=0.9, min_lr=0.0, by_epoch=False), **long))


@pytest.mark.parametrize("keys, message", [
    (dict(runner=dict(type="EpochBasedRunner", max_epochs=12)), "trains with EpochBasedRunner"),
    (dict(runner=dict(type="IterBasedRunner", max_iters=0)), "runner.max_iters is 0"),
    (dict(runner=REMOVE), "no runner"),
    (dict(runner=REMOVE, total_iters="60k"), "total_iters is '60k'"),
    (dict(optimizer=dict(type="SGD")), "no optimizer.lr"),
], ids=["epoch-runner", "zero-iters", "no-runner", "bad-total-iters", "no-lr"])
def test_a_0x_source_that_is_not_an_iteration_schedule_is_an_input_error(keys, message):
    from rewardpatch.errors import InputError

    with pytest.raises(InputError, match=message):
        plan_0x(tiny_0x(**keys))


@pytest.mark.parametrize("version", MMSEG0)
def test_a_0x_poly_config_continues_at_its_end_lr_and_decays_over_iters(pristine, version, tmp_path, stack):
    plan = plan_0x(load_0x(pristine, version, DEEPLABV3_0))
    cfg = written(plan, pristine(version) / DEEPLABV3_0, tmp_path / "reward.py")
    assert cfg.optimizer.lr == float(f"{poly_end(0.01, 1e-4, 0.9, 40000):.6g}")
    assert cfg.optimizer.type == "SGD" and cfg.optimizer.weight_decay == 0.0005
    assert dict(cfg.lr_config) == dict(policy="poly", power=0.9, min_lr=0.0, by_epoch=False)
    assert dict(cfg.runner) == dict(type="IterBasedRunner", max_iters=2000)
    assert cfg.checkpoint_config.interval == 2000 and cfg.evaluation.interval == 2000
    assert cfg.model.decode_head.type == "RewardASPPHead"
    assert dict(cfg.model.decode_head.loss_decode) == {"type": "CrossEntropyRewardLoss", "loss_weight": 1.0}
    assert cfg.model.auxiliary_head.type == "FCNHead"
    assert cfg.model.auxiliary_head.loss_decode.type == "CrossEntropyLoss"
    assert cfg.load_from is None and cfg.resume_from is None
    assert cfg.data == plan.source["data"] and cfg.optimizer_config == plan.source["optimizer_config"]
    lines = [change.line() for change in plan.changes]
    assert "lr_config.min_lr: 0.0001 -> 0.0  (poly decay to 0 over 2000 iterations, no warmup)" in lines
    assert "runner.max_iters: 40000 -> 2000  (--iters)" in lines
    assert "checkpoint_config.interval: 4000 -> 2000  (not beyond max_iters)" in lines
    assert "evaluation.interval: 4000 -> 2000  (not beyond max_iters)" in lines
    assert "optimizer.lr: 0.01 -> 0.000100714  (where the source schedule ends)" in lines
    assert lines[:2] == [
        "model.decode_head.type: ASPPHead -> RewardASPPHead",
        "model.decode_head.loss_decode: CrossEntropyLoss(use_sigmoid=False, loss_weight=1.0) -> "
        "CrossEntropyRewardLoss(loss_weight=1.0)",
    ]
    assert len(lines) == 7


DEEPLABV3_FP16_0 = "configs/deeplabv3/deeplabv3_r101-d8_fp16_512x1024_80k_cityscapes.py"


@pytest.mark.parametrize("version", MMSEG0)
@pytest.mark.parametrize("fp16", [None, "dict(loss_scale=512.0)"], ids=["mmseg-config", "fp16-loss-scale"])
def test_a_0x_fp16_config_keeps_its_fp16_optimizer_hook(pristine, version, fp16, tmp_path, stack):
    """MMSeg 0.x's fp16 configs: optimizer_config=dict(type='Fp16OptimizerHook', loss_scale=512.)
    and an `fp16 = dict()` placeholder (mmcv-era configs elsewhere put loss_scale there)."""
    src = pristine(version) / DEEPLABV3_FP16_0
    if fp16 is not None:
        src = write(tmp_path / "fp16.py", f"_base_ = '{src}'\nfp16 = {fp16}\n")
    plan = plan_0x(load_0x(pristine, version, src))
    cfg = written(plan, src, tmp_path / "reward.py")
    assert dict(cfg.optimizer_config) == dict(type="Fp16OptimizerHook", loss_scale=512.0)
    assert dict(cfg.fp16) == ({} if fp16 is None else dict(loss_scale=512.0))
    assert cfg.model.decode_head.type == "RewardASPPHead"
    assert not [c for c in plan.changes if c.path.startswith(("optimizer_config", "fp16"))]


def test_0x_changes_are_all_the_override_holds(pristine, tmp_path, stack):
    plan = plan_0x(load_0x(pristine, "0.30.0", PSPNET_0), schedule="cosine", iters=10000, aux=True)
    written(plan, pristine("0.30.0") / PSPNET_0, tmp_path / "reward.py")
    text = (tmp_path / "reward.py").read_text()
    assigned = [line.split(" = ")[0] for line in text.splitlines() if line and line[0].isalpha()]
    assert assigned == ["model", "optimizer", "lr_config", "runner"]  # intervals of 4000 stay
    cfg = load(tmp_path / "reward.py")
    assert dict(cfg.lr_config) == dict(policy="CosineAnnealing", min_lr=0.0, by_epoch=False)
    assert cfg.runner.max_iters == 10000 and cfg.checkpoint_config.interval == 4000
    assert [cfg.model.decode_head.type, cfg.model.auxiliary_head.type] == ["RewardPSPHead", "RewardFCNHead"]
    assert dict(cfg.model.auxiliary_head.loss_decode) == {"type": "CrossEntropyRewardLoss", "loss_weight": 0.4}


@pytest.mark.parametrize("version", MMSEG0)
def test_a_0x_step_schedule_with_warmup_continues_after_its_last_step(pristine, version, tmp_path, stack):
    plan = plan_0x(load_0x(pristine, version, STEP_0), iters=500)
    cfg = written(plan, pristine(version) / STEP_0, tmp_path / "reward.py")
    assert cfg.optimizer.lr == pytest.approx(0.0005 * 0.1**2) and cfg.optimizer.type == "AdamW"
    assert dict(cfg.lr_config) == dict(policy="poly", power=0.9, min_lr=0.0, by_epoch=False)  # no warmup left
    assert cfg.runner.max_iters == 500
    assert "_delete_=True" in (tmp_path / "reward.py").read_text()


@pytest.mark.parametrize("version", MMSEG0)
def test_a_0x_cascade_config_gets_both_reward_heads(pristine, version, tmp_path, stack):
    plan = plan_0x(load_0x(pristine, version, OCRNET_0))
    cfg = written(plan, pristine(version) / OCRNET_0, tmp_path / "reward.py")
    assert [head.type for head in cfg.model.decode_head] == ["RewardFCNHead", "RewardOCRHead"]
    assert [dict(head.loss_decode) for head in cfg.model.decode_head] == [
        {"type": "CrossEntropyRewardLoss", "loss_weight": 0.4},
        {"type": "CrossEntropyRewardLoss", "loss_weight": 1.0},
    ]


def test_a_0x_config_with_the_legacy_total_iters_gets_a_runner(pristine, tmp_path, stack):
    source = load_0x(pristine, "0.30.0", CGNET_0)
    assert "runner" not in source and source["total_iters"] == 60000
    plan = plan_0x(source, iters=3000)
    cfg = written(plan, pristine("0.30.0") / CGNET_0, tmp_path / "reward.py")
    assert dict(cfg.runner) == dict(type="IterBasedRunner", max_iters=3000)
    assert cfg.total_iters == 3000
    assert cfg.optimizer.lr == float(f"{poly_end(0.001, 1e-4, 0.9, 60000):.6g}")
    assert {change.path: change.note for change in plan.changes}["runner"].startswith("--iters")


def test_a_0x_schedule_decayed_to_zero_asks_for_lr(pristine, stack):
    from rewardpatch.errors import InputError

    with pytest.raises(InputError, match="too small to continue from; pass --lr"):
        plan_0x(load_0x(pristine, "0.30.0", SEGFORMER_0))


def test_a_0x_resume_from_is_cleared(pristine, tmp_path):
    plan = plan_0x(tiny_0x(resume_from="work_dirs/ce/latest.pth"))
    assert plan.target["resume_from"] is None
    notes = {change.path: change.note for change in plan.changes}
    assert "does not resume" in notes["resume_from"]


@pytest.mark.parametrize("source, runner, message", [
    (tiny_0x(), "mmengine", "an MMSeg 0.x config (it sets lr_config, runner) but the tree is MMSeg 1.x"),
    (tiny_0x(runner=REMOVE, total_iters=100), "mmengine", "(it sets lr_config, total_iters)"),
    (dict(tiny_0x(lr_config=REMOVE, runner=REMOVE), optim_wrapper=dict(optimizer=dict(lr=0.01)),
          train_cfg=dict(type="IterBasedTrainLoop", max_iters=100)), "mmcv",
     "an MMSeg 1.x config (it sets optim_wrapper, train_cfg) but the tree is MMSeg 0.x"),
], ids=["0x-in-1x", "0x-total-iters-in-1x", "1x-in-0x"])
def test_a_config_of_the_other_generation_is_an_input_error(source, runner, message):
    from rewardpatch.errors import InputError

    with pytest.raises(InputError) as error:
        plan_0x(source, runner=runner)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_both_generations_offer_the_same_schedules():
    from rewardpatch.configs.schedule import LR_CONFIGS, SCHEDULES

    assert LR_CONFIGS.keys() == SCHEDULES.keys()


def test_a_0x_config_on_a_1x_tree_is_refused_by_the_cli(config, pristine):
    code, out, _, err = config(pristine("0.30.0") / DEEPLABV3_0)
    assert code == 2
    assert "MMSeg 0.x config" in one_line_error(err)
    assert not out.exists()


# 0.x end to end: a 0.x checkout patched by `rewardpatch apply`, then `rewardpatch config`.

@pytest.fixture(scope="module", params=MMSEG0)
def patched_0x(request, tmp_path_factory) -> Path:
    """A copy of a pristine 0.x checkout that `rewardpatch apply` patched (module-wide: apply once)."""
    from conftest import copy_checkout

    tree = copy_checkout(request.param, tmp_path_factory.mktemp("patched-0x") / f"mmsegmentation-{request.param}")
    assert run_cli(None, "apply", tree)[0] == 0
    return tree


@pytest.fixture
def config_0x(patched_0x, tmp_path, capsys, stack):
    """config_0x(SRC, *options) -> (exit code, OUT, stdout, stderr) in the patched 0.x tree
    (`config` reads and writes configs with this interpreter's mmengine: the stack)."""

    def call(src, *options):
        out = tmp_path / "reward.py"
        src = patched_0x / src if not Path(src).is_absolute() else src
        code, stdout, stderr = run_cli(capsys, "config", src, "--tree", patched_0x, "-o", out, *options)
        return code, out, stdout, stderr

    return call


def test_config_on_a_patched_0x_tree_writes_a_reward_fine_tune(config_0x, tmp_path):
    import torch

    checkpoint = tmp_path / "ce.pth"
    torch.save({"state_dict": {"decode_head.conv_seg.weight": torch.zeros(19, 512, 1, 1)}, "meta": {}}, checkpoint)
    code, out, stdout, _ = config_0x(DEEPLABV3_0, "--checkpoint", checkpoint, "--reward", "mode=weighted_ce")
    assert code == 0
    cfg = load(out)
    assert cfg.optimizer.lr == float(f"{poly_end(0.01, 1e-4, 0.9, 40000):.6g}")
    assert dict(cfg.lr_config) == dict(policy="poly", power=0.9, min_lr=0.0, by_epoch=False)
    assert dict(cfg.runner) == dict(type="IterBasedRunner", max_iters=2000)
    assert cfg.load_from == str(checkpoint)
    assert cfg.model.decode_head.type == "RewardASPPHead"
    assert cfg.model.decode_head.loss_decode.type == "CrossEntropyRewardLoss"
    assert cfg.model.decode_head.reward_cfg == dict(mode="weighted_ce")
    assert "_base_ = '" in out.read_text() and "runner.max_iters: 40000 -> 2000  (--iters)" in stdout


def test_config_on_a_patched_0x_tree_writes_the_cascade_and_the_cosine_schedule(config_0x):
    code, out, _, _ = config_0x(OCRNET_0, "--schedule", "cosine", "--iters", "500")
    assert code == 0
    cfg = load(out)
    assert [head.type for head in cfg.model.decode_head] == ["RewardFCNHead", "RewardOCRHead"]
    assert {head.loss_decode.type for head in cfg.model.decode_head} == {"CrossEntropyRewardLoss"}
    assert dict(cfg.lr_config) == dict(policy="CosineAnnealing", min_lr=0.0, by_epoch=False)
    assert cfg.runner.max_iters == 500
    assert cfg.checkpoint_config.interval == 500 and cfg.evaluation.interval == 500


def test_config_on_a_patched_0x_tree_clears_resume_from_and_keeps_the_step_lr(config_0x, patched_0x, tmp_path):
    src = write(tmp_path / "resumed.py", f"_base_ = '{patched_0x / STEP_0}'\nresume_from = 'work_dirs/ce/latest.pth'\n")
    code, out, stdout, _ = config_0x(src, "--aux")
    assert code == 0
    cfg = load(out)
    assert cfg.resume_from is None and "resume_from: work_dirs/ce/latest.pth -> None" in stdout
    assert cfg.optimizer.lr == pytest.approx(0.0005 * 0.1**2)
    assert cfg.model.auxiliary_head.type == "RewardFCNHead"


def test_config_on_a_patched_0x_tree_asks_for_lr_when_the_schedule_decayed(config_0x):
    code, out, _, err = config_0x(SEGFORMER_0)
    assert code == 2
    assert "pass --lr" in one_line_error(err)
    assert not out.exists()
    assert config_0x(SEGFORMER_0, "--lr", "6e-6")[0] == 0
    assert load(out).optimizer.lr == 6e-6


def test_a_1x_config_on_a_patched_0x_tree_is_refused_in_one_line(config_0x, pristine):
    code, out, _, err = config_0x(pristine("1.2.2") / DEEPLABV3)
    assert code == 2
    assert "an MMSeg 1.x config (it sets optim_wrapper, param_scheduler, train_cfg) but the tree is MMSeg 0.x" in (
        one_line_error(err))
    assert not out.exists()


# The 0.x end LR against mmcv 1.x itself, in the 0.x stack (the python_0x fixture).
MMCV_END_LR = """
import json, sys, torch
from mmcv.runner import HOOKS
from mmcv.utils import build_from_cfg

class Runner:  # what an IterBasedRunner shows the hook: optimizer, iter, max_iters
    epoch, max_epochs = 0, 1

results = []
for lr_config, max_iters in json.loads(sys.argv[1]):
    policy = lr_config.pop('policy')  # BaseRunner.register_lr_hook's naming
    lr_config['type'] = (policy.title() if policy == policy.lower() else policy) + 'LrUpdaterHook'
    hook, runner = build_from_cfg(lr_config, HOOKS), Runner()
    runner.optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    runner.max_iters = max_iters
    hook.before_run(runner)
    for runner.iter in range(max_iters):
        hook.before_train_iter(runner)
    results.append(runner.optimizer.param_groups[0]['lr'])
print(json.dumps(results))
"""


def test_the_0x_end_lr_is_what_mmcv_1x_sets_at_the_last_iteration(python_0x):
    from rewardpatch.configs.lr_config import lr_config_end_lr

    lr_configs = [
        dict(policy="poly", power=0.9, min_lr=1e-4, by_epoch=False),
        dict(policy="step", step=[600, 999], gamma=0.5, min_lr=2e-3, by_epoch=False),
        dict(policy="step", step=300, by_epoch=False, warmup="linear", warmup_iters=100, warmup_ratio=1e-3),
        dict(policy="CosineAnnealing", min_lr_ratio=0.1, by_epoch=False),
        dict(policy="exp", gamma=0.999, by_epoch=False),
        dict(policy="inv", gamma=0.01, power=0.5, by_epoch=False),
        dict(policy="fixed", by_epoch=False, warmup="exp", warmup_iters=2000, warmup_ratio=0.1),
        dict(policy="poly", power=0.9, by_epoch=False, warmup="constant", warmup_iters=1500),
    ]
    cases = [(lr_config, max_iters) for lr_config in lr_configs for max_iters in (1000, 7, 1)]
    result = subprocess.run([python_0x, "-c", MMCV_END_LR, json.dumps(cases)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    mmcv = json.loads(result.stdout.strip().splitlines()[-1])
    assert [lr_config_end_lr(lr_config, 0.01, max_iters) for lr_config, max_iters in cases] == mmcv


def test_the_written_0x_config_builds_reward_heads_with_mmcv_1x_in_the_patched_tree(python_0x, config_0x, patched_0x):
    if not patched_0x.name.endswith("0.30.0"):
        pytest.skip("the 0.x stack is 0.30.0's: mmcv 1.7.2, which 0.24.1 refuses (it wants mmcv <= 1.6.0)")
    code, out, _, _ = config_0x(OCRNET_0, "--schedule", "cosine")
    assert code == 0
    build_0x = f"""
from mmcv import Config
from mmseg.models import build_segmentor
cfg = Config.fromfile({str(out)!r})
model = build_segmentor(cfg.model)
print(cfg.lr_config.policy, cfg.runner.max_iters, [type(h).__name__ for h in model.decode_head],
      {{type(h.loss_decode).__name__ for h in model.decode_head}})
"""
    env = {**os.environ, "PYTHONPATH": str(patched_0x)}
    result = subprocess.run([python_0x, "-c", build_0x], cwd=patched_0x, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    expected = "CosineAnnealing 2000 ['RewardFCNHead', 'RewardOCRHead'] {'CrossEntropyRewardLoss'}"
    assert result.stdout.strip().splitlines()[-1] == expected


# `config --baseline`: the A/B pair, the reward run and cross-entropy continued with the same schedule.

AB_ONLY_DIFFERENCES = (
    "model.decode_head.type", "model.decode_head.loss_decode", "model.decode_head.reward_cfg", "work_dir")


def ab_differences(reward: Path, baseline: Path) -> set[str]:
    """The leaves in which the two configs, loaded by mmengine, differ (both directions)."""
    from rewardpatch.configs.diff import leaf_changes

    a, b = load(reward).to_dict(), load(baseline).to_dict()
    return {change.path for change in [*leaf_changes(a, b), *leaf_changes(b, a)]}


def differ_only_in(paths: set[str], allowed) -> bool:
    from rewardpatch.configs.finetune_plan import within

    return all(any(within(path, prefix) for prefix in allowed) for path in paths)


def test_the_baseline_differs_from_the_reward_config_only_in_the_head_loss_and_work_dir(config, tiny, tmp_path):
    import torch

    checkpoint = tmp_path / "ce.pth"
    torch.save({"state_dict": {}, "meta": {}}, checkpoint)
    baseline = tmp_path / "ce_continued.py"
    code, out, stdout, _ = config(tiny, "--checkpoint", checkpoint, "--iters", "40", "--reward", "num_samples=4",
                                  "--baseline", baseline)
    assert code == 0
    differences = ab_differences(out, baseline)
    assert differ_only_in(differences, AB_ONLY_DIFFERENCES) and "work_dir" in differences
    assert differ_only_in(differences - {"work_dir"}, ["model.decode_head"])
    reward, ce = load(out), load(baseline)
    assert (reward.work_dir, ce.work_dir) == ("./work_dirs/reward", "./work_dirs/ce_continued")
    assert reward.randomness == ce.randomness == dict(seed=0)
    assert reward.load_from == ce.load_from == str(checkpoint)
    assert reward.train_cfg == ce.train_cfg == dict(type="IterBasedTrainLoop", max_iters=40, val_interval=40)
    assert reward.param_scheduler == ce.param_scheduler and reward.optim_wrapper == ce.optim_wrapper
    assert reward.default_hooks == ce.default_hooks
    assert ce.model.decode_head.type == "FCNHead" and ce.model.decode_head.loss_decode.type == "CrossEntropyLoss"
    assert "reward_cfg" not in ce.model.decode_head and reward.model.decode_head.reward_cfg == dict(num_samples=4)
    assert f"wrote {baseline}: " in stdout and "(the A/B baseline: heads and losses as in the source)" in stdout
    line = "randomness: (unset) -> dict(seed=0)  (the source sets no seed: both A/B runs get the same one)"
    assert stdout.count(line) == 2
    assert "Cross-entropy A/B baseline config" in baseline.read_text()


def test_the_baseline_of_a_model_with_an_auxiliary_head_keeps_both_heads_and_builds(config, tmp_path):
    baseline = tmp_path / "ce.py"
    code, out, _, _ = config(UPERNET, "--aux", "--baseline", baseline)
    assert code == 0
    assert differ_only_in(ab_differences(out, baseline), [*AB_ONLY_DIFFERENCES, "model.auxiliary_head"])
    model = build(load(baseline))
    assert type(model.decode_head).__name__ == "UPerHead" and type(model.auxiliary_head).__name__ == "FCNHead"


def test_a_seed_the_source_sets_is_kept_in_both(config, tmp_path):
    source = write(tmp_path / "seeded.py", TINY + "randomness = dict(seed=7, deterministic=True)\n")
    baseline = tmp_path / "ce.py"
    code, out, stdout, _ = config(source, "--baseline", baseline)
    assert code == 0
    assert load(out).randomness == load(baseline).randomness == dict(seed=7, deterministic=True)
    assert "randomness" not in stdout


def test_without_baseline_no_seed_or_work_dir_is_written(config, tiny):
    code, out, _, _ = config(tiny)
    assert code == 0
    assert "randomness" not in out.read_text() and "work_dir" not in out.read_text()


@pytest.mark.parametrize("baseline, message", [
    ("reward.py", "--baseline must be another file than OUT"),
    ("other/reward.py", "give OUT and --baseline different file names"),
    ("ce.txt", "must be a .py file"),
    ("tiny.py", "would overwrite the source config"),
])
def test_a_baseline_that_would_collide_is_an_input_error_and_writes_nothing(
    config, tiny, tmp_path, baseline, message,
):
    code, out, _, err = config(tiny, "--baseline", tmp_path / baseline)
    assert code == 2
    assert message in one_line_error(err)
    assert not out.exists() and (tmp_path / "tiny.py").read_text() == TINY


def test_a_0x_baseline_is_the_same_rewrite_without_the_heads_and_has_no_seed_key(pristine, tmp_path, stack):
    from rewardpatch.configs.finetune_plan import own_work_dir, same_seed

    src = pristine("0.30.0") / DEEPLABV3_0
    source = load_0x(pristine, "0.30.0", DEEPLABV3_0)
    pair = []
    for heads, name in [(True, "reward"), (False, "ce")]:
        plan = plan_0x(source) if heads else _plan_0x_baseline(source)
        assert same_seed(plan, "mmcv") is False
        own_work_dir(plan, name)
        pair.append(written(plan, src, tmp_path / f"{name}.py"))
    reward, ce = (cfg.to_dict() for cfg in pair)
    assert "seed" not in reward and "randomness" not in reward
    from rewardpatch.configs.diff import leaf_changes
    differences = {c.path for c in [*leaf_changes(reward, ce), *leaf_changes(ce, reward)]}
    assert differ_only_in(differences, AB_ONLY_DIFFERENCES) and "work_dir" in differences
    assert ce["model"]["decode_head"]["type"] == "ASPPHead" and ce["runner"] == reward["runner"]
    assert ce["lr_config"] == reward["lr_config"] and ce["optimizer"] == reward["optimizer"]


def _plan_0x_baseline(source):
    from rewardpatch.configs.command import plan_finetune
    from rewardpatch.configs.finetune_plan import FinetuneOptions

    return plan_finetune(source, FinetuneOptions(reward_classes=REWARD_HEADS_0X, tree="TREE", runner="mmcv"),
                         heads=False)


def test_config_baseline_on_a_patched_0x_tree_says_to_pass_the_same_seed(config_0x, tmp_path):
    baseline = tmp_path / "ce.py"
    code, out, _, err = config_0x(DEEPLABV3_0, "--baseline", baseline)
    assert code == 0
    assert "pass the same --seed to both runs" in err
    assert load(baseline).work_dir == "./work_dirs/ce" and load(out).work_dir == "./work_dirs/reward"
