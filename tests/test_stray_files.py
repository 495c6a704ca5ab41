"""Files that do not parse: skipped with a warning when no __init__ reaches them, else an error."""

import pytest

from conftest import git_status, one_line_error, run_cli

HEADS = "mmseg/models/decode_heads"
LOSSES = "mmseg/models/losses"
BROKEN = "def half_written(:\n"


@pytest.mark.parametrize("verb", ["list-heads", "apply"])
def test_an_unimported_head_file_that_does_not_parse_is_skipped_with_one_warning(capsys, tree, verb):
    (tree / HEADS / "aspp_head_old.py").write_text(BROKEN)
    code, _, err = run_cli(capsys, verb, tree)
    assert code == 0
    assert one_line_error(err) == (
        f"rewardpatch: warning: skipped {HEADS}/aspp_head_old.py:1: cannot parse: invalid syntax "
        "(no __init__ of mmseg.models.decode_heads imports it)"
    )


def test_the_skipped_file_is_left_alone_by_apply_check_and_revert(capsys, tree):
    stray = tree / HEADS / "aspp_head_old.py"
    stray.write_text(BROKEN)
    for verb in ("apply", "check", "revert"):
        assert run_cli(capsys, verb, tree)[0] == 0
    assert stray.read_text() == BROKEN
    assert git_status(tree) == f"?? {HEADS}/aspp_head_old.py\n"


def test_a_head_file_the_init_imports_that_does_not_parse_is_an_error_naming_file_and_line(capsys, tree):
    init = tree / HEADS / "__init__.py"
    init.write_text(init.read_text() + "from .my_head import MyHead\n")
    (tree / HEADS / "my_head.py").write_text("import torch\n\n" + BROKEN)
    code, _, err = run_cli(capsys, "list-heads", tree)
    assert code == 2
    assert one_line_error(err) == f"rewardpatch: error: {HEADS}/my_head.py:3: cannot parse: invalid syntax"


def test_a_file_reached_only_through_another_head_module_is_an_error_too(capsys, tree):
    fcn = tree / HEADS / "fcn_head.py"
    fcn.write_text(fcn.read_text() + "\n\ndef _late():\n    from mmseg.models.decode_heads import fcn_extras\n")
    (tree / HEADS / "fcn_extras.py").write_text(BROKEN)
    code, _, err = run_cli(capsys, "apply", tree)
    assert code == 2
    assert f"{HEADS}/fcn_extras.py:1: cannot parse" in one_line_error(err)
    assert git_status(tree) == f" M {HEADS}/fcn_head.py\n?? {HEADS}/fcn_extras.py\n"


def test_a_stray_loss_file_that_does_not_parse_does_not_stop_apply_check_or_revert(capsys, tree):
    (tree / LOSSES / "my_loss_draft.py").write_text(BROKEN)
    for verb in ("apply", "check", "revert"):
        code, _, err = run_cli(capsys, verb, tree)
        assert code == 0, err
    assert git_status(tree) == f"?? {LOSSES}/my_loss_draft.py\n"


@pytest.mark.parametrize("verb", ["check", "revert"])
def test_an_init_that_does_not_parse_is_an_error_naming_file_and_line(capsys, tree, verb):
    run_cli(capsys, "apply", tree)
    init = tree / LOSSES / "__init__.py"
    init.write_text(init.read_text() + BROKEN)
    before = init.read_text()
    code, _, err = run_cli(capsys, verb, tree)
    assert code == 2
    assert f"rewardpatch: error: {LOSSES}/__init__.py:" in one_line_error(err)
    assert "cannot parse" in err
    assert init.read_text() == before
