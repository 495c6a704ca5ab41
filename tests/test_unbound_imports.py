"""Every name an __init__ imports from a module rewardpatch writes must be defined in it."""

import json
import os
import subprocess

import pytest

from conftest import git_status, one_line_error, run_cli
from rewardpatch.checkout import COMMIT_ENV
from rewardpatch.import_graph import bound_names, parse_python

LOSSES = "mmseg/models/losses"
HAND_MADE_LOSS = '''\
class CrossEntropyRewardLoss:
    pass


def my_helper():
    return 1
'''


def commit_a_loss_module_the_init_imports_a_helper_from(tree):
    (tree / LOSSES / "cross_entropy_reward_loss.py").write_text(HAND_MADE_LOSS)
    init = tree / LOSSES / "__init__.py"
    init.write_text(
        init.read_text().replace(
            "from .dice_loss import DiceLoss\n",
            "from .cross_entropy_reward_loss import CrossEntropyRewardLoss, my_helper\n"
            "from .dice_loss import DiceLoss\n",
        )
    )
    env = {**os.environ, **COMMIT_ENV}
    subprocess.run(["git", "add", "-A"], cwd=tree, env=env, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "my reward loss"], cwd=tree, env=env, check=True)


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_apply_refuses_to_write_a_module_without_names_the_init_imports_from_it(capsys, tree, force):
    commit_a_loss_module_the_init_imports_a_helper_from(tree)
    code, _, err = run_cli(capsys, "apply", tree, *force)
    assert code == 1
    assert one_line_error(err) == (
        f"rewardpatch: error: {LOSSES}/__init__.py imports my_helper from .cross_entropy_reward_loss, but the "
        "cross_entropy_reward_loss.py that apply writes does not define it; import it from another module first"
    )
    assert git_status(tree) == ""


def test_check_fails_naming_the_module_and_the_name_an_init_imports_that_it_lacks(capsys, tree):
    run_cli(capsys, "apply", tree)
    init = tree / LOSSES / "__init__.py"
    init.write_text(init.read_text() + "from .iou_metric_loss import per_image_miou, per_image_f1\n")
    code, _, err = run_cli(capsys, "check", tree)
    assert code == 1
    assert (
        f"{LOSSES}/__init__.py: imports per_image_f1 from .iou_metric_loss, "
        f"which {LOSSES}/iou_metric_loss.py does not define"
    ) in err


def test_check_reports_the_unbound_import_in_its_json_report(capsys, tree):
    run_cli(capsys, "apply", tree)
    init = tree / LOSSES / "__init__.py"
    init.write_text(init.read_text() + "from .iou_metric_loss import per_image_f1\n")
    code, out, _ = run_cli(capsys, "check", tree, "--json")
    assert code == 1
    # and revert could not take that line out: it names a function rewardpatch does not write
    assert sorted(p["kind"] for p in json.loads(out)["problems"]) == ["unbound-import", "unrevertable-import"]


def test_a_freshly_patched_tree_passes_the_check(capsys, tree):
    run_cli(capsys, "apply", tree)
    assert run_cli(capsys, "check", tree)[0] == 0


def test_names_bound_in_optional_import_fallbacks_count_as_defined():
    source = "try:\n    from scipy import special\nexcept ImportError:\n    special = None\nX: int = 1\n"
    assert bound_names(parse_python(source, "m.py")) == {"special", "X"}


def test_a_module_with_a_star_import_is_taken_on_trust():
    assert bound_names(parse_python("from torch import *\n", "m.py")) is None
