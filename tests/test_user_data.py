"""revert never drops what a user wrote: hand edits are kept, and hand-edited import lines
of ours are taken out or refused, never left pointing at a removed module (issue 15)."""

import re

import pytest

from conftest import git_status, one_line_error, run_cli
from rewardpatch.errors import StateError
from rewardpatch.import_graph import unresolved_imports
from rewardpatch.planning import REVERT_COPIES_DIR, plan_revert
from rewardpatch.tree import APPLY_COPIES_DIR, MANIFEST_NAME, MMSegTree

HEADS = "mmseg/models/decode_heads"
INIT = f"{HEADS}/__init__.py"
ASPP = "from .reward_aspp_head import RewardASPPHead\n"
FCN = "from .reward_fcn_head import RewardFCNHead\n"


def snapshot(tree):
    return {p.relative_to(tree): p.read_bytes() for p in tree.rglob("*") if p.is_file() and ".git" not in p.parts}


def kept_folder(tree, out):
    """The folder revert --force names on stdout, checked to exist."""
    found = re.search(rf"kept in ({re.escape(REVERT_COPIES_DIR)}/[^/\s]+)/", out)
    assert found, out
    assert (tree / found.group(1)).is_dir()
    return tree / found.group(1)


def dangling(tree):
    """Imports of the package `__init__` files that the tree cannot satisfy."""
    source = MMSegTree.open(tree).read
    inits = (INIT, "mmseg/models/losses/__init__.py")
    return [p for init in inits for p in unresolved_imports(init, source(init), source)]


def edit_init(tree, old, new):
    init = tree / INIT
    text = init.read_text()
    assert old in text
    init.write_text(text.replace(old, new))


# --- revert --force keeps hand edits ---------------------------------------------------


def test_revert_force_keeps_a_hand_edited_generated_file_byte_for_byte_and_says_where(capsys, tree):
    assert run_cli(capsys, "apply", tree, "--heads", "FCNHead")[0] == 0
    generated = tree / HEADS / "reward_fcn_head.py"
    edited = generated.read_bytes().replace(b"\n", b"\r\n") + b"# my tweak \xc2\xb5"
    generated.write_bytes(edited)
    code, out, _ = run_cli(capsys, "revert", tree, "--force")
    assert code == 0
    folder = kept_folder(tree, out)
    assert (folder / HEADS / "reward_fcn_head.py").read_bytes() == edited
    assert f"create  {folder.relative_to(tree).as_posix()}/{HEADS}/reward_fcn_head.py" in out
    assert not generated.exists()
    assert git_status(tree) == ""  # the kept folder ignores itself
    # not mistaken for a patch: the tree is unpatched, and a new apply/check/revert work
    assert run_cli(capsys, "check", tree)[0] == 1
    assert run_cli(capsys, "apply", tree, "--heads", "FCNHead")[0] == 0
    assert run_cli(capsys, "check", tree)[0] == 0
    assert run_cli(capsys, "revert", tree)[0] == 0
    assert (folder / HEADS / "reward_fcn_head.py").read_bytes() == edited


def test_revert_force_keeps_the_hand_edits_apply_force_kept(capsys, tree):
    run_cli(capsys, "apply", tree, "--heads", "FCNHead")
    generated = tree / HEADS / "reward_fcn_head.py"
    first = generated.read_bytes() + b"# first tweak\n"
    generated.write_bytes(first)
    assert run_cli(capsys, "apply", tree, "--heads", "FCNHead", "--force")[0] == 0
    second = generated.read_bytes() + b"# second tweak\n"
    generated.write_bytes(second)
    code, out, _ = run_cli(capsys, "revert", tree, "--force")
    assert code == 0
    folder = kept_folder(tree, out)
    assert "2 hand-edited file(s)" in out
    kept = {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*") if p.is_file() and p.name != ".gitignore"
    }
    assert kept[f"{HEADS}/reward_fcn_head.py"] == second
    (copy,) = [name for name in kept if name.startswith(f"{HEADS}/reward_fcn_head.py.")]
    assert kept[copy] == first
    assert not (tree / APPLY_COPIES_DIR).exists() and not (tree / MANIFEST_NAME).exists()
    assert git_status(tree) == ""


def test_two_forced_reverts_keep_their_edits_apart(capsys, tree):
    folders = []
    for tweak in (b"# one\n", b"# two\n"):
        run_cli(capsys, "apply", tree, "--heads", "FCNHead")
        generated = tree / HEADS / "reward_fcn_head.py"
        generated.write_bytes(generated.read_bytes() + tweak)
        code, out, _ = run_cli(capsys, "revert", tree, "--force")
        assert code == 0
        folders.append(kept_folder(tree, out))
    assert folders[0] != folders[1]
    assert [(f / HEADS / "reward_fcn_head.py").read_bytes()[-6:] for f in folders] == [b"# one\n", b"# two\n"]


def test_revert_without_force_still_refuses_and_changes_nothing(capsys, tree):
    run_cli(capsys, "apply", tree, "--heads", "FCNHead")
    generated = tree / HEADS / "reward_fcn_head.py"
    generated.write_bytes(generated.read_bytes() + b"# mine\n")
    before = snapshot(tree)
    code, _, err = run_cli(capsys, "revert", tree)
    assert code == 1
    assert "reward_fcn_head.py" in one_line_error(err)
    assert snapshot(tree) == before


def test_revert_force_dry_run_shows_the_kept_copies_and_writes_nothing(capsys, tree):
    run_cli(capsys, "apply", tree, "--heads", "FCNHead")
    generated = tree / HEADS / "reward_fcn_head.py"
    generated.write_bytes(generated.read_bytes() + b"# mine\n")
    before = snapshot(tree)
    code, out, _ = run_cli(capsys, "revert", tree, "--force", "--dry-run")
    assert code == 0
    assert f"+++ b/{REVERT_COPIES_DIR}/" in out and "+# mine" in out
    assert snapshot(tree) == before


# --- hand-edited import lines of ours ------------------------------------------------------


@pytest.mark.parametrize(
    "old, new",
    [
        (ASPP, ASPP.rstrip("\n") + "  # noqa: F401\n"),  # a linter's comment
        (ASPP + "from .reward_cc_head import RewardCCHead\n",
         "from .reward_aspp_head import RewardASPPHead; from .reward_cc_head import RewardCCHead  # noqa\n"),
        (ASPP, "from .reward_aspp_head import (  # keep\n    RewardASPPHead,\n)\n"),  # rewrapped
    ],
    ids=["noqa", "semicolon", "parenthesized"],
)
def test_revert_takes_out_our_imports_however_they_were_respelt(capsys, tree, old, new):
    assert run_cli(capsys, "apply", tree, "--heads", "ASPPHead,CCHead")[0] == 0
    edit_init(tree, old, new)
    assert run_cli(capsys, "check", tree)[0] in (0, 1)  # a respelt line may read as drift; never a crash
    code, _, err = run_cli(capsys, "revert", tree)
    assert code == 0, err
    assert dangling(tree) == []
    assert git_status(tree) == ""


def test_an_import_of_ours_joined_to_a_statement_of_yours_keeps_yours(capsys, tree):
    run_cli(capsys, "apply", tree, "--heads", "FCNHead")
    edit_init(tree, FCN, "MINE = 1; from .reward_fcn_head import RewardFCNHead  # noqa\n")
    code, _, err = run_cli(capsys, "revert", tree)
    assert code == 0, err
    assert "MINE = 1  # noqa\n" in (tree / INIT).read_text()
    assert dangling(tree) == []


@pytest.mark.parametrize(
    "old, new",
    [
        (ASPP, "from .reward_aspp_head import RewardASPPHead, my_helper\n"),  # merged with a name of yours
        (ASPP, ASPP + "from .reward_aspp_head import RewardASPPHead as MyASPP\n"),  # an alias of yours
        (ASPP, ASPP + "from . import reward_aspp_head\n"),
    ],
    ids=["merged", "alias", "module"],
)
def test_revert_refuses_an_import_it_cannot_take_out_and_check_reports_it(capsys, tree, old, new):
    run_cli(capsys, "apply", tree, "--heads", "ASPPHead")
    edit_init(tree, old, new)
    before = snapshot(tree)
    code, _, err = run_cli(capsys, "revert", tree, "--force")
    assert code == 1
    line = one_line_error(err)
    number = (tree / INIT).read_text().splitlines().index(new.splitlines()[-1]) + 1
    assert f"{INIT}:{number}: imports from {HEADS}/reward_aspp_head.py" in line
    assert snapshot(tree) == before
    code, _, err = run_cli(capsys, "check", tree)
    assert code == 1
    assert f"{INIT}:{number}: imports from {HEADS}/reward_aspp_head.py in a form revert cannot take out" in err


def test_revert_never_leaves_an_import_of_a_module_it_removes(tree, monkeypatch):
    """The last safety net: even an inverse edit that missed an import is refused."""
    tree_ = MMSegTree.open(tree)
    from rewardpatch.planning import ApplyOptions, plan_apply

    plan_apply(tree_, ApplyOptions(heads=("FCNHead",))).execute()
    monkeypatch.setattr("rewardpatch.codemods.exports.remove_exports", lambda source, record: source)
    with pytest.raises(StateError, match=rf"{INIT}:\d+: imports from {HEADS}/reward_"):
        plan_revert(tree_)
