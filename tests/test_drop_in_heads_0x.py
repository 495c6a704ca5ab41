"""Reward heads are drop-in on MMSeg 0.x too: a config that swaps only `type` X -> RewardX trains.

tests/workers/drop_in_heads_0x.py runs, in the 0.x stack's interpreter, on a patched
0.30.0 tree: for every reward head of the tree it builds one of the tree's own configs
that uses X with only the head types changed (and the offline edits its docstring
lists), computes the segmentor's `forward_train` losses and backpropagates them to the
head's output layer. The choice of config and the type swap are tests/drop_in.py's, as
in the 1.x test (tests/test_drop_in_heads.py).
"""

import json
import math
import re
import subprocess
from pathlib import Path

import pytest

from conftest import copy_checkout
from drop_in import SIGMOID_CE, sigmoid_refusal
from rewardpatch.planning import plan_apply
from rewardpatch.tree import MANIFEST_NAME, MMSegTree

WORKER = Path(__file__).parent / "workers" / "drop_in_heads_0x.py"


@pytest.fixture(scope="module")
def patched_0x(python_0x, tmp_path_factory):
    """(tree, the worker's report) for a patched 0.30.0 checkout."""
    dest = tmp_path_factory.mktemp("drop_in_0x")
    tree = copy_checkout("0.30.0", dest / "mmsegmentation")
    plan_apply(MMSegTree.open(tree)).execute()
    out = dest / "drop_in.json"
    result = subprocess.run([python_0x, "-P", str(WORKER), str(tree), str(out)], cwd=dest,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return tree, json.loads(out.read_text())


def test_the_worker_tried_every_head_the_0x_tree_was_patched_with(patched_0x):
    tree, report = patched_0x
    assert report["mmseg"] == "0.30.0"
    patched = json.loads((tree / MANIFEST_NAME).read_text())["heads"]
    assert len(patched) >= 20
    assert sorted(report["heads"]) == sorted(patched)


def test_every_0x_reward_head_trains_in_an_mmseg_config_that_swaps_only_its_type(patched_0x):
    _, report = patched_0x
    failures = [f"Reward{head} in {r['config']}: {r['error']}" for head, r in report["heads"].items() if not r["ok"]]
    assert not failures, f"{len(failures)} of {len(report['heads'])} heads failed:\n" + "\n".join(failures)
    for head, r in report["heads"].items():
        assert r["config"].startswith("configs/") and "_base_" not in r["config"], (head, r["config"])
        assert math.isfinite(r["loss"]), (head, r["loss"])
        assert any(k.endswith("reward_mean") for k in r["loss_keys"]), (head, r["loss_keys"])
        assert r["grad_norms"] and all(math.isfinite(g) and g > 0 for g in r["grad_norms"]), (head, r["grad_norms"])


def test_a_sigmoid_cross_entropy_is_refused_by_name_on_0x(patched_0x):
    _, report = patched_0x
    for head in SIGMOID_CE:
        error = report["heads"][head]["sigmoid_error"]
        assert error and error.startswith("ValueError: ") and re.search(sigmoid_refusal(head), error), (head, error)
