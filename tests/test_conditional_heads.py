"""Heads whose loss reaches the reward only on some branch (loss_paths.py): list-heads calls
them `conditional`, naming the condition, and `config` sets the flag or refuses.

The fork (tests/forks.py `conditional_1x`) adds two such heads to MMSeg 1.2.2: ATMHead hands
its labels to the base only when its constructor argument CE_loss is true (MaskCLIP's
ATMHead, CE_loss=False by default), ManyClassHead only for more than two classes.
"""

import ast
import json
from typing import cast

import pytest

import forks
from conftest import one_line_error, run_cli, run_python
from rewardpatch.loss_paths import ALWAYS, NEVER, reaching_condition
from test_config import TINY, write


@pytest.fixture
def fork(make_tree):
    return forks.conditional_1x(make_tree("1.2.2"))


def verdicts(capsys, tree) -> dict:
    code, out, _ = run_cli(capsys, "list-heads", tree, "--json")
    assert code == 0
    return {h["name"]: h for h in json.loads(out)}


def test_a_head_that_reaches_the_reward_under_a_flag_is_conditional(capsys, fork):
    atm = verdicts(capsys, fork)["ATMHead"]
    assert (atm["status"], atm["condition"], atm["condition_args"]) == (
        "conditional", "self.CE_loss", {"CE_loss": True})
    assert atm["reason"] == (
        "ATMHead.loss_by_feat reaches the reward loss only when self.CE_loss: `rewardpatch config` sets CE_loss=True"
    )
    assert atm["reward_name"] == "RewardATMHead"


def test_a_condition_on_a_config_value_names_the_value(capsys, fork):
    head = verdicts(capsys, fork)["LossTypeHead"]
    assert (head["status"], head["condition"], head["condition_args"]) == (
        "conditional", "self.loss_type == 'ce'", {"loss_type": "ce"})
    assert head["reason"].endswith("`rewardpatch config` sets loss_type='ce'")


def test_a_condition_no_constructor_argument_sets_is_named(capsys, fork):
    head = verdicts(capsys, fork)["ManyClassHead"]
    assert (head["status"], head["condition"], head["condition_args"]) == (
        "conditional", "self.num_classes > 2", None)
    assert "no constructor argument sets that" in head["reason"]


def test_the_table_counts_and_explains_conditional_heads(capsys, fork):
    code, out, _ = run_cli(capsys, "list-heads", fork)
    assert code == 0
    assert "27 compatible, 3 conditional, 0 patched" in out.splitlines()[0]
    assert "ATMHead.loss_by_feat reaches the reward loss only when self.CE_loss" in out


def test_apply_copies_conditional_heads_and_list_heads_keeps_the_condition(capsys, fork):
    assert run_cli(capsys, "apply", fork)[0] == 0
    assert (fork / forks.HEADS / "reward_atm_head.py").is_file()
    assert run_cli(capsys, "check", fork)[0] == 0
    atm = verdicts(capsys, fork)["ATMHead"]
    assert (atm["status"], atm["condition"]) == ("patched", "self.CE_loss")
    assert any("only when self.CE_loss" in note for note in atm["notes"])


def config_of(capsys, tree, tmp_path, head: str):
    """`config` on TREE (it needs torch and mmengine: its callers request `stack`)."""
    src = write(tmp_path / "src.py", TINY.replace("type='FCNHead', in_channels=64, channels=8, num_convs=1,",
                                                  f"type='{head}', in_channels=64, channels=8,"))
    return run_cli(capsys, "config", src, "--tree", tree, "-o", tmp_path / "reward.py")


def test_config_sets_the_flag_that_reaches_the_reward(capsys, fork, tmp_path, stack):
    assert run_cli(capsys, "apply", fork)[0] == 0
    code, out, _ = config_of(capsys, fork, tmp_path, "ATMHead")
    assert code == 0, out
    assert ("model.decode_head.CE_loss: (unset) -> True  "
            "(RewardATMHead reaches the reward loss only when self.CE_loss)") in out
    from mmengine.config import Config

    head = Config.fromfile(str(tmp_path / "reward.py")).model.decode_head
    assert (head.type, head.CE_loss) == ("RewardATMHead", True)


def test_config_sets_the_config_value_that_reaches_the_reward(capsys, fork, tmp_path, stack):
    assert run_cli(capsys, "apply", fork)[0] == 0
    code, out, _ = config_of(capsys, fork, tmp_path, "LossTypeHead")
    assert code == 0, out
    from mmengine.config import Config

    head = Config.fromfile(str(tmp_path / "reward.py")).model.decode_head
    assert (head.type, head.loss_type) == ("RewardLossTypeHead", "ce")


def test_config_refuses_a_condition_it_cannot_set_naming_it(capsys, fork, tmp_path, stack):
    assert run_cli(capsys, "apply", fork)[0] == 0
    code, _, err = config_of(capsys, fork, tmp_path, "ManyClassHead")
    assert code == 1
    assert "RewardManyClassHead reaches the reward loss only when self.num_classes > 2" in one_line_error(err)
    assert not (tmp_path / "reward.py").exists()


STEP = """
import torch
import mmseg.models
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

samples = []
for label in torch.randint(0, 3, (2, 1, 16, 16)):
    sample = SegDataSample()
    sample.gt_sem_seg = PixelData(data=label)
    samples.append(sample)
for flag in (False, True):
    head = MODELS.build(dict(type='RewardATMHead', in_channels=8, channels=8, num_classes=3, CE_loss=flag))
    losses = head.loss([torch.randn(2, 8, 16, 16)], samples, None)
    print(flag, sorted(k for k in losses if 'loss' in k))
"""


def test_the_flag_config_sets_is_what_makes_the_reward_run(capsys, fork, stack):
    assert run_cli(capsys, "apply", fork, "--heads", "ATMHead")[0] == 0
    result = run_python(STEP, fork)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = [line for line in result.stdout.splitlines() if line.startswith(("False", "True"))]
    assert printed == ["False ['loss_own']", "True ['loss_ce_reward']"]


def reach(source: str):
    function = cast(ast.FunctionDef, ast.parse(source).body[0])

    def delegates(node):
        return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "losses"

    result = reaching_condition(function, delegates, source)
    return result if result in (ALWAYS, NEVER) else str(result)


@pytest.mark.parametrize(("body", "expected"), [
    ("if self.CE_loss:\n        return super().losses(x, y)\n    return own(x)", "self.CE_loss"),
    ("if not self.own:\n        return super().losses(x, y)\n    return own(x)", "not self.own"),
    ("if self.own:\n        return own(x)\n    return super().losses(x, y)", "not self.own"),
    ("if isinstance(x, tuple):\n        x = x[0]\n    return super().losses(x, y)", ALWAYS),
    ("if self.a:\n        loss = super().losses(x[0], y)\n    else:\n        loss = super().losses(x, y)\n"
     "    return loss", ALWAYS),
    ("if self.a:\n        if self.b:\n            return super().losses(x, y)\n"
     "        return super().losses(2 * x, y)\n    return own(x)", "self.a"),
    ("if self.a and self.b:\n        return super().losses(x, y)\n    return own(x)", "self.a and self.b"),
    ("return super().losses(x, y) if self.ce else own(x)", "self.ce"),
    ("for part in x:\n        loss = super().losses(part, y)\n    return loss", ALWAYS),
    ("return own(x)", NEVER),
], ids=["flag", "negated", "guard-clause", "preprocessing", "both-branches", "merged", "conjunction", "if-expression",
        "loop", "never"])
def test_the_condition_is_read_path_by_path(body, expected):
    assert reach(f"def losses(self, x, y):\n    {body}\n") == expected


def test_a_0x_head_conditional_on_a_stored_argument_names_that_argument(capsys, make_tree):
    tree = forks.conditional_0x(make_tree("0.30.0"))
    heads = verdicts(capsys, tree)
    for name in ("ATMHead", "MyATMHead"):
        head = heads[name]
        assert (head["status"], head["condition"], head["condition_args"]) == (
            "conditional", "self.CE_loss", {"use_ce": True})
    assert heads["MyATMHead"]["reason"].startswith("ATMHead.losses reaches the reward loss only when self.CE_loss")
    assert heads["FCNHead"]["status"] == "compatible"
    assert run_cli(capsys, "apply", tree)[0] == 0
    assert (tree / forks.HEADS / "reward_atm_head.py").is_file()
    assert run_cli(capsys, "check", tree)[0] == 0
