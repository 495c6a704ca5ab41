"""Which classes are heads: those of the modules the heads package imports, and how they register.

Each test writes what it needs into a copy of a reference checkout: a stray copy of a head
beside the real one (as forks keep them), or a small head registered under another name.
"""

import json
import os
import subprocess
import textwrap

from conftest import git_status, run_cli, run_python
from rewardpatch.head_index import COMPATIBLE, INCOMPATIBLE
from rewardpatch.manifest import Manifest
from rewardpatch.planning import list_heads
from rewardpatch.tree import MMSegTree

HEADS = "mmseg/models/decode_heads"
REAL, STRAY = f"{HEADS}/fcn_head.py", f"{HEADS}/fcn_haed.py"
STRAY_WARNING = (
    f"rewardpatch: warning: skipped FCNHead in {STRAY}: {HEADS}/__init__.py never imports it; "
    f"the head is {REAL}'s"
)


def with_stray(root):
    """fcn_head.py copied to fcn_haed.py, which nothing imports: FCNHead defined and registered twice."""
    (root / STRAY).write_text((root / REAL).read_text())
    return root


def add_head(root, stem: str, source: str, import_line: str | None = None) -> None:
    """Write a head module and import it from the package's __init__ (`import_line`, or its class)."""
    (root / HEADS / f"{stem}.py").write_text(textwrap.dedent(source))
    init = root / HEADS / "__init__.py"
    init.write_text(init.read_text() + (import_line or f"from .{stem} import MyNamedHead  # noqa\n"))
    commit(root, f"add {stem}")


def commit(root, message: str) -> None:
    """Commit every change, as a fork would before patching (apply refuses a dirty __init__)."""
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]
    subprocess.run([*git, "add", "-A"], cwd=root, check=True, capture_output=True)
    subprocess.run([*git, "commit", "-q", "-m", message], cwd=root, check=True, capture_output=True)


def named_head(decorator: str, prelude: str = "") -> str:
    return f"""\
from mmseg.registry import MODELS
from .decode_head import BaseDecodeHead
{prelude}

@MODELS.{decorator}
class MyNamedHead(BaseDecodeHead):

    def forward(self, inputs):
        return self.cls_seg(inputs[0])
"""


def tree_bytes(root) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file() and ".git" not in p.parts}


# --- a stray copy of a head the package never imports ------------------------------------------


def test_list_heads_lists_a_head_once_and_warns_naming_the_stray_and_the_real_file(capsys, tree):
    with_stray(tree)
    code, out, err = run_cli(capsys, "list-heads", tree, "--json")
    assert code == 0
    rows = [r for r in json.loads(out) if r["name"] == "FCNHead"]
    assert [r["file"] for r in rows] == [REAL]
    assert err.strip().splitlines() == [STRAY_WARNING]


def test_the_stray_does_not_change_any_verdict(tree, pristine):
    before = {h.name: h for h in list_heads(MMSegTree.open(pristine("1.2.2")))}
    after = {h.name: h for h in list_heads(MMSegTree.open(with_stray(tree)))}
    assert after == before


def test_apply_generates_from_the_imported_file_only(capsys, tree):
    with_stray(tree)
    code, _, err = run_cli(capsys, "apply", tree, "--heads", "FCNHead")
    assert code == 0, err
    assert (tree / HEADS / "reward_fcn_head.py").is_file()
    assert not (tree / HEADS / "reward_fcn_haed.py").exists()
    record = Manifest.load(MMSegTree.open(tree)).files[f"{HEADS}/reward_fcn_head.py"]
    assert record.source == REAL
    assert (tree / HEADS / "reward_fcn_head.py").read_text().splitlines()[0].endswith(" from fcn_head.py")


def test_a_hand_edit_to_the_real_head_makes_check_report_stale(capsys, tree):
    with_stray(tree)
    run_cli(capsys, "apply", tree, "--heads", "FCNHead")
    (tree / STRAY).write_text((tree / STRAY).read_text() + "\n# an edit to the stray changes nothing\n")
    assert run_cli(capsys, "check", tree)[0] == 0
    (tree / REAL).write_text((tree / REAL).read_text() + "\n# a hand edit\n")
    code, out, err = run_cli(capsys, "check", tree)
    assert code == 1
    assert f"{HEADS}/reward_fcn_head.py: stale, {REAL} changed since apply" in out + err


def test_revert_after_apply_on_a_tree_with_a_stray_is_byte_exact(capsys, tree):
    with_stray(tree)
    before = tree_bytes(tree)
    assert run_cli(capsys, "apply", tree)[0] == 0
    assert run_cli(capsys, "revert", tree)[0] == 0
    assert tree_bytes(tree) == before
    assert git_status(tree) == f"?? {STRAY}\n"


def test_the_patched_tree_with_a_stray_imports_and_registers_each_head_once(capsys, tree, stack):
    with_stray(tree)
    assert run_cli(capsys, "apply", tree)[0] == 0
    code = (
        "import mmseg.models\n"
        "from mmseg.registry import MODELS\n"
        "print(MODELS.get('FCNHead').__module__, MODELS.get('RewardFCNHead').__module__)\n"
    )
    result = run_python(code, tree)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [
        "mmseg.models.decode_heads.fcn_head", "mmseg.models.decode_heads.reward_fcn_head",
    ]


def test_a_registered_class_in_a_file_nothing_imports_is_skipped_with_a_warning(capsys, tree):
    (tree / HEADS / "draft_head.py").write_text(named_head("register_module()").replace("MyNamedHead", "DraftHead"))
    code, out, err = run_cli(capsys, "list-heads", tree)
    assert code == 0
    assert "DraftHead" not in out
    assert err.strip().splitlines() == [
        f"rewardpatch: warning: skipped DraftHead in {HEADS}/draft_head.py: {HEADS}/__init__.py never imports it"
    ]


def test_a_module_reached_only_through_another_head_module_holds_heads(capsys, tree):
    (tree / HEADS / "my_extra_head.py").write_text(named_head("register_module()"))
    fcn = tree / REAL
    fcn.write_text(fcn.read_text() + "\nfrom .my_extra_head import MyNamedHead  # noqa\n")
    code, out, err = run_cli(capsys, "list-heads", tree)
    assert code == 0 and err == ""
    assert "MyNamedHead" in out


def test_a_star_import_reaches_a_module(capsys, tree):
    add_head(tree, "my_named_head", named_head("register_module()"), "from .my_named_head import *  # noqa\n")
    heads = {h.name: h for h in list_heads(MMSegTree.open(tree))}
    assert heads["MyNamedHead"].status == COMPATIBLE


def test_a_0x_tree_with_a_stray_lists_and_generates_the_imported_head_only(capsys, make_tree):
    tree_0x = with_stray(make_tree("0.30.0"))
    code, out, err = run_cli(capsys, "list-heads", tree_0x, "--json")
    assert code == 0
    assert [r["file"] for r in json.loads(out) if r["name"] == "FCNHead"] == [REAL]
    assert err.strip().splitlines() == [STRAY_WARNING]
    assert run_cli(capsys, "apply", tree_0x, "--heads", "FCNHead")[0] == 0
    assert not (tree_0x / HEADS / "reward_fcn_haed.py").exists()
    assert Manifest.load(MMSegTree.open(tree_0x)).files[f"{HEADS}/reward_fcn_head.py"].source == REAL


def run_python_0x(python_0x: str, code: str, tree) -> subprocess.CompletedProcess:
    """Run `code` with the 0.x stack's interpreter, `tree` first on its import path."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([python_0x, "-c", code], cwd=tree, env=env, capture_output=True, text=True, timeout=600)


def test_a_patched_0x_tree_with_a_stray_imports_and_registers_each_head_once(capsys, make_tree, python_0x):
    tree_0x = with_stray(make_tree("0.30.0"))
    assert run_cli(capsys, "apply", tree_0x)[0] == 0
    code = (
        "import mmseg.models\n"
        "from mmseg.models.builder import HEADS\n"
        "print(HEADS.get('FCNHead').__module__, HEADS.get('RewardFCNHead').__module__)\n"
    )
    result = run_python_0x(python_0x, code, tree_0x)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [
        "mmseg.models.decode_heads.fcn_head", "mmseg.models.decode_heads.reward_fcn_head",
    ]


# --- register_module(name=..., force=...) ------------------------------------------------------
# (what the copy's decorator becomes: the pairs in test_codemods.py)


def test_list_heads_reports_the_registered_name_and_the_dropped_force(capsys, tree):
    add_head(tree, "my_named_head", named_head("register_module(name='MyNamed', force=True)"))
    notes = [
        "registered as 'MyNamed': the reward version registers as 'RewardMyNamed'",
        "force=True not copied: RewardMyNamedHead never replaces a registered head",
    ]
    code, out, _ = run_cli(capsys, "list-heads", tree, "--json")
    row = next(r for r in json.loads(out) if r["name"] == "MyNamedHead")
    assert (row["status"], row["registered_as"], row["notes"]) == (COMPATIBLE, ["MyNamed"], notes)
    code, out, _ = run_cli(capsys, "list-heads", tree)
    lines = [line.strip() for line in out.splitlines()]
    assert all(note in lines for note in notes)


def test_a_name_that_is_not_a_literal_makes_the_head_incompatible(capsys, tree):
    add_head(tree, "my_named_head", named_head("register_module(name=NAME)", prelude="\nNAME = 'MyNamed'\n"))
    head = {h.name: h for h in list_heads(MMSegTree.open(tree))}["MyNamedHead"]
    assert head.status == INCOMPATIBLE
    assert head.reason.startswith("MyNamedHead registers as name=NAME, not a literal string")
    code, _, err = run_cli(capsys, "apply", tree, "--heads", "MyNamedHead")
    assert code == 2 and "not a literal string" in err


def test_the_patched_tree_registers_both_and_the_reward_head_replaces_nothing(capsys, tree, stack):
    add_head(tree, "my_named_head", named_head("register_module(name='MyNamed', force=True)"))
    code, _, err = run_cli(capsys, "apply", tree, "--heads", "MyNamedHead")
    assert code == 0, err
    code = (
        "import mmseg.models\n"
        "from mmseg.registry import MODELS\n"
        "print(MODELS.get('MyNamed').__name__, MODELS.get('RewardMyNamed').__name__)\n"
        "print('MyNamedHead' in MODELS.module_dict, 'RewardMyNamedHead' in MODELS.module_dict)\n"
    )
    result = run_python(code, tree)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["MyNamedHead", "RewardMyNamedHead", "False", "False"]


def test_a_0x_head_registered_with_a_name_and_force_keeps_both_heads(capsys, make_tree, python_0x):
    tree_0x = make_tree("0.30.0")
    source = named_head("register_module(name='MyNamed', force=True)")
    add_head(tree_0x, "my_named_head", source.replace("mmseg.registry import MODELS", "..builder import HEADS")
             .replace("@MODELS.", "@HEADS."))
    code, _, err = run_cli(capsys, "apply", tree_0x, "--heads", "MyNamedHead")
    assert code == 0, err
    text = (tree_0x / HEADS / "reward_my_named_head.py").read_text()
    assert "@HEADS.register_module(name='RewardMyNamed')\nclass RewardMyNamedHead(RewardDecodeHead):" in text
    code = (
        "import mmseg.models\n"
        "from mmseg.models.builder import HEADS\n"
        "print(HEADS.get('MyNamed').__name__, HEADS.get('RewardMyNamed').__name__)\n"
    )
    result = run_python_0x(python_0x, code, tree_0x)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["MyNamedHead", "RewardMyNamedHead"]
