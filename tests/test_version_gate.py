"""The version gate: which MMSegmentation releases rewardpatch opens, and --mmseg-version.

patches/*.toml each state their releases once, as a specifier; a tree is opened only when
its mmseg/version.py names a release inside one of them, spelled as MMSeg spells releases.
A fork whose version.py names no such release (an unreleased version, a computed one, a
merge conflict) is opened with --mmseg-version, the release it is based on.
"""

import hashlib
import json
import os
import subprocess

import pytest

from conftest import git_status, one_line_error, run_cli
from rewardpatch.checkout import COMMIT_ENV
from rewardpatch.errors import InputError
from rewardpatch.mmseg_generations import _releases, generation_for, supported_versions
from rewardpatch.tree import MANIFEST_NAME, MMSegTree

SUPPORTED = "0.6.0 to 0.30.0, 1.0.0rc0 to 1.2.2"
REFUSAL = ("is not supported by rewardpatch (supported: 0.6.0 to 0.30.0, 1.0.0rc0 to 1.2.2; "
           "a fork can state the release it is based on with --mmseg-version)")
TREATED = "treated as MMSegmentation 1.2.2 (--mmseg-version)"
RELEASE_LINE = "__version__ = '1.2.2'\n"
# what a fork's mmseg/version.py may hold instead of 1.2.2's __version__ line (line 3)
FORK_VERSION_LINES = {
    "unreleased": "__version__ = '1.3.0.dev0'\n",
    "computed": "from importlib.metadata import version\n__version__ = version('mmsegmentation')\n",
    "conflicted": "<<<<<<< HEAD\n__version__ = '1.2.2'\n=======\n__version__ = '1.3.0'\n>>>>>>> upstream\n",
}


def version_only_tree(path, version):
    """A directory with nothing but mmseg/version.py naming `version`: enough for the gate."""
    (path / "mmseg").mkdir()
    (path / "mmseg/version.py").write_text(f"__version__ = {version!r}\n")
    return path


def rewrite_version_line(tree, kind):
    """1.2.2's mmseg/version.py as a fork may hold it: the rest of the file (version_info) kept."""
    path = tree / "mmseg/version.py"
    text = path.read_text()
    assert RELEASE_LINE in text
    path.write_text(text.replace(RELEASE_LINE, FORK_VERSION_LINES[kind]))


def commit(tree, message):
    env = {**os.environ, **COMMIT_ENV}
    subprocess.run(["git", "add", "--all"], cwd=tree, env=env, check=True)
    subprocess.run(["git", "commit", "-q", "-m", message], cwd=tree, env=env, check=True)


def hashes(tree):
    return {p.relative_to(tree): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in tree.rglob("*") if p.is_file() and ".git" not in p.parts}


@pytest.fixture(params=sorted(FORK_VERSION_LINES))
def fork(request, make_tree):
    """A 1.2.2 checkout whose committed mmseg/version.py names no release."""
    tree = make_tree("1.2.2")
    rewrite_version_line(tree, request.param)
    commit(tree, f"version.py of a fork: {request.param}")
    return tree


def warnings(err):
    return [line for line in err.splitlines() if line.startswith("rewardpatch: warning: ")]


# The gate's edges

@pytest.mark.parametrize("version, generation", [
    ("0.6.0", "mmseg-0.x"), ("0.10.0", "mmseg-0.x"), ("0.11.0", "mmseg-0.x"), ("0.23.0", "mmseg-0.x"),
    ("0.24.0", "mmseg-0.x"), ("0.30.0", "mmseg-0.x"),
    ("1.0.0rc0", "mmseg-1.x"), ("1.0.0rc6", "mmseg-1.x"), ("1.0.0", "mmseg-1.x"), ("1.2.2", "mmseg-1.x"),
])
def test_a_supported_release_opens_as_its_generation(tmp_path, version, generation):
    tree = MMSegTree.open(version_only_tree(tmp_path, version))
    assert (tree.version, tree.generation.name) == (version, generation)


@pytest.mark.parametrize("version", [
    "0.5.0", "0.31.0", "1.2.3", "1.3.0.dev0", "1.9.9", "2.0.0", "v1.2.2", "1.0.0-rc4", "1.0.0b1", "1.2.2.post1", "1.2",
    # a release candidate only where a range starts at one: 1.2.2rc1 and 1.1.0rc0 were never published
    "1.2.2rc1", "1.1.0rc0", "0.30.0rc1",
])
def test_any_other_version_is_refused_in_one_line_naming_the_supported_releases(capsys, tmp_path, version):
    code, _, err = run_cli(capsys, "list-heads", version_only_tree(tmp_path, version))
    assert code == 2
    assert one_line_error(err) == f"rewardpatch: error: MMSegmentation {version} {REFUSAL}"


def test_a_version_with_blanks_around_it_is_refused_and_shown_quoted(capsys, tmp_path):
    code, _, err = run_cli(capsys, "list-heads", version_only_tree(tmp_path, "1.2.2 "))
    assert code == 2
    assert one_line_error(err) == f"rewardpatch: error: MMSegmentation '1.2.2 ' {REFUSAL}"


def test_the_supported_releases_are_read_off_the_specifiers_in_patches():
    assert supported_versions() == SUPPORTED
    assert str(generation_for("0.30.0").releases) == "<=0.30.0,>=0.6.0"


def test_a_releases_rule_without_an_inclusive_highest_release_is_a_data_error(tmp_path):
    with pytest.raises(ValueError, match="must read '>=X.Y.Z,<=X.Y.Z'"):
        _releases(tmp_path / "mmseg-9.x.toml", ">=1.0.0,<2.0.0")


def test_list_heads_names_the_supported_releases(capsys, pristine):
    code, out, _ = run_cli(capsys, "list-heads", pristine("1.2.2"))
    assert code == 0
    assert out.splitlines()[1] == f"rewardpatch supports MMSegmentation {SUPPORTED} (mmseg-1.x for this tree)"


def test_the_help_names_the_supported_releases(capsys):
    code, out, _ = run_cli(capsys, "apply", "--help")
    assert code == 0
    assert "--mmseg-version" in out and SUPPORTED in " ".join(out.split())


# --mmseg-version

@pytest.mark.parametrize("verb", ["list-heads", "apply", "check", "revert"])
def test_a_fork_without_the_flag_is_refused_in_one_line_that_suggests_it(capsys, fork, verb):
    before = hashes(fork)
    code, _, err = run_cli(capsys, verb, fork)
    assert code == 2
    assert "--mmseg-version" in one_line_error(err)
    assert hashes(fork) == before


def test_the_refusal_names_the_line_of_a_merge_conflict(capsys, make_tree):
    tree = make_tree("1.2.2")
    rewrite_version_line(tree, "conflicted")
    _, _, err = run_cli(capsys, "list-heads", tree)
    assert one_line_error(err) == (
        f"rewardpatch: error: {tree}/mmseg/version.py:3: cannot parse: merge-conflict marker; "
        f"if the tree is based on a release of MMSegmentation ({SUPPORTED}), state it with --mmseg-version"
    )


def test_the_refusal_says_when_version_py_computes_the_version(capsys, make_tree):
    tree = make_tree("1.2.2")
    rewrite_version_line(tree, "computed")
    _, _, err = run_cli(capsys, "list-heads", tree)
    assert f"{tree}/mmseg/version.py: no __version__ string found" in one_line_error(err)


def test_list_heads_treats_a_fork_as_the_declared_release_with_one_warning(capsys, fork):
    code, out, err = run_cli(capsys, "list-heads", fork, "--mmseg-version", "1.2.2")
    assert code == 0
    assert out.startswith(f"MMSegmentation 1.2.2 at {fork}: ")
    assert len(warnings(err)) == 1 and warnings(err)[0].endswith(TREATED)
    assert err.strip() == warnings(err)[0]


def test_the_warning_names_what_version_py_says(capsys, make_tree):
    tree = make_tree("1.2.2")
    rewrite_version_line(tree, "unreleased")
    _, _, err = run_cli(capsys, "list-heads", tree, "--mmseg-version", "1.2.2")
    assert err.strip() == f"rewardpatch: warning: mmseg/version.py says 1.3.0.dev0; {TREATED}"


def test_apply_check_revert_on_a_fork_warn_once_each_and_revert_gives_it_back_byte_for_byte(capsys, fork):
    before = hashes(fork)
    for verb in ("apply", "check", "revert"):
        code, out, err = run_cli(capsys, verb, fork, "--mmseg-version", "1.2.2")
        assert code == 0, f"{verb}: {out}{err}"
        assert len(warnings(err)) == 1 and warnings(err)[0].endswith(TREATED), f"{verb}: {err}"
    assert git_status(fork) == ""
    assert hashes(fork) == before


def test_a_patched_fork_records_the_declared_release_and_the_refusal_suggests_it(capsys, fork):
    assert run_cli(capsys, "apply", fork, "--mmseg-version", "1.2.2")[0] == 0
    assert json.loads((fork / MANIFEST_NAME).read_text())["mmseg_version"] == "1.2.2"
    code, _, err = run_cli(capsys, "check", fork)
    assert code == 2
    hint = f"{MANIFEST_NAME} records MMSegmentation 1.2.2: rerun with --mmseg-version 1.2.2"
    assert one_line_error(err).endswith(hint)


def test_the_flag_naming_what_version_py_says_gives_no_warning(capsys, pristine):
    code, _, err = run_cli(capsys, "list-heads", pristine("1.2.2"), "--mmseg-version", "1.2.2")
    assert code == 0
    assert err == ""


@pytest.mark.parametrize("declared", ["9.9.9", "1.2.3", "v1.2.2"])
def test_the_flag_must_name_a_supported_release(capsys, pristine, declared):
    code, _, err = run_cli(capsys, "list-heads", pristine("1.2.2"), "--mmseg-version", declared)
    assert code == 2
    assert one_line_error(err) == (f"rewardpatch: error: --mmseg-version {declared}: not a supported "
                                   f"MMSegmentation release (supported: {SUPPORTED})")


def test_the_flag_does_not_make_a_directory_without_version_py_a_tree(capsys, tmp_path):
    (tmp_path / "mmseg").mkdir()
    code, _, err = run_cli(capsys, "list-heads", tmp_path, "--mmseg-version", "1.2.2")
    assert code == 2
    assert "not an MMSegmentation tree (no mmseg/version.py)" in one_line_error(err)


def test_the_declared_release_reaches_the_tree_object(make_tree):
    tree = make_tree("1.2.2")
    rewrite_version_line(tree, "computed")
    with pytest.raises(InputError):
        MMSegTree.open(tree)
    opened = MMSegTree.open(tree, mmseg_version="1.0.0")
    assert (opened.version, opened.generation.name) == ("1.0.0", "mmseg-1.x")


def test_verify_hands_the_declared_release_to_its_worker(capsys, make_tree, tmp_path, stack):
    tree = make_tree("1.2.2")
    rewrite_version_line(tree, "unreleased")
    assert run_cli(capsys, "apply", tree, "--mmseg-version", "1.2.2", "--heads", "FCNHead")[0] == 0
    report = tmp_path / "report.json"
    code, out, err = run_cli(capsys, "verify", tree, "--mmseg-version", "1.2.2", "--skip-finetune",
                             "--device", "cpu", "--workdir", tmp_path / "work", "--report", report)
    assert code == 0, out + err
    assert len(warnings(err)) == 1
    result = json.loads(report.read_text())
    assert result["ok"] and result["mmseg_version"] == "1.2.2"
