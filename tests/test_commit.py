"""apply --commit refuses before writing when git cannot commit, and rolls the patch back
when the commit fails after; every git failure is one line (issue 15)."""

import shutil
import subprocess

import git
import pytest

from conftest import git_status, one_line_error, run_cli
from rewardpatch import gitstate
from rewardpatch.tree import MANIFEST_NAME

HEADS = "mmseg/models/decode_heads"
IDENTITY = ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL")


def snapshot(tree):
    return {p.relative_to(tree): p.read_bytes() for p in tree.rglob("*") if p.is_file() and ".git" not in p.parts}


def staged(tree):
    return subprocess.run(["git", "diff", "--cached", "--name-only"], cwd=tree, capture_output=True, text=True,
                          check=True).stdout


def head(tree):
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=tree, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def no_identity(tmp_path, monkeypatch):
    """A git that can find no identity: no system or global config, none in the env, and no guessing."""
    home = tmp_path / "home"
    home.mkdir()
    config = home / "gitconfig"
    config.write_text("[user]\n\tuseConfigOnly = true\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    for name in IDENTITY:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def identity(monkeypatch):
    monkeypatch.setenv("GIT_AUTHOR_NAME", "me")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "me@example.org")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "me")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "me@example.org")


def refused_before_writing(capsys, tree, *args):
    before, status = snapshot(tree), git_status(tree) if (tree / ".git").exists() else None
    code, out, err = run_cli(capsys, "apply", tree, "--heads", "FCNHead", "--commit", *args)
    assert code == 1
    line = one_line_error(err)
    assert not line.endswith("'") and "nothing was changed" in line
    assert snapshot(tree) == before
    if status is not None:
        assert git_status(tree) == status and staged(tree) == ""
    return line


def test_commit_without_a_repository_refuses_before_writing(capsys, tree):
    shutil.rmtree(tree / ".git")
    assert "not in a git work tree" in refused_before_writing(capsys, tree)


def test_commit_without_a_git_identity_refuses_before_writing(capsys, tree, no_identity):
    assert "git has no identity" in refused_before_writing(capsys, tree)


def test_commit_during_a_merge_refuses_before_writing(capsys, tree, identity):
    (tree / ".git" / "MERGE_HEAD").write_text(head(tree))
    assert "during a merge" in refused_before_writing(capsys, tree)


def test_a_commit_rejected_by_a_hook_rolls_the_patch_back(capsys, tree, identity):
    hook = tree / ".git" / "hooks" / "pre-commit"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text("#!/bin/sh\necho 'lint: 3 files would be reformatted' >&2\nexit 1\n")
    hook.chmod(0o755)
    before, commit = snapshot(tree), head(tree)
    code, out, err = run_cli(capsys, "apply", tree, "--heads", "FCNHead", "--commit")
    assert code == 1
    line = one_line_error(err)
    assert line == ("rewardpatch: error: git commit failed: lint: 3 files would be reformatted; "
                    "the patch was rolled back, nothing was changed")
    assert snapshot(tree) == before
    assert git_status(tree) == "" and staged(tree) == "" and head(tree) == commit


def test_a_failed_commit_on_a_patched_tree_puts_the_earlier_patch_back(capsys, tree, identity):
    assert run_cli(capsys, "apply", tree, "--heads", "FCNHead", "--commit")[0] == 0
    hook = tree / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\nexit 1\n")
    hook.chmod(0o755)
    before, commit = snapshot(tree), head(tree)
    code, _, err = run_cli(capsys, "apply", tree, "--heads", "ASPPHead", "--commit")
    assert code == 1
    assert "the patch was rolled back" in one_line_error(err)
    assert snapshot(tree) == before and (tree / MANIFEST_NAME).is_file()
    assert git_status(tree) == "" and staged(tree) == "" and head(tree) == commit


def test_commit_succeeds_with_an_identity_from_the_environment(capsys, tree, no_identity, identity):
    code, out, _ = run_cli(capsys, "apply", tree, "--heads", "FCNHead", "--commit")
    assert code == 0
    assert "committed " in out
    assert git_status(tree) == ""


DUBIOUS = (
    "fatal: detected dubious ownership in repository at '{0}'\n"
    "To add an exception for this directory, call:\n\n\tgit config --global --add safe.directory {0}\n"
)


def test_dubious_ownership_is_one_line_with_the_way_out(capsys, tree, monkeypatch):
    """gitpython raising what git says about a repository owned by someone else."""

    def refuse(self, method, *args, **kwargs):
        raise git.GitCommandError(["git", method], 128, stderr=DUBIOUS.format(tree).encode())

    monkeypatch.setattr(git.cmd.Git, "_call_process", refuse)
    code, _, err = run_cli(capsys, "apply", tree, "--heads", "FCNHead")
    assert code == 1
    line = one_line_error(err)
    assert line == (f"rewardpatch: error: git status failed (--allow-dirty skips this check): "
                    f"detected dubious ownership in repository at "
                    f"'{tree}' (if you trust it: git config --global --add safe.directory {tree})")
    assert git_status(tree) == ""


@pytest.mark.parametrize("extra", [(), ("--allow-dirty",)], ids=["status", "commit-check"])
def test_dubious_ownership_as_git_reports_it(capsys, tree, monkeypatch, extra):
    monkeypatch.setenv("GIT_TEST_ASSUME_DIFFERENT_OWNER", "1")  # git >= 2.35.2's test switch
    probe = subprocess.run(["git", "status"], cwd=tree, capture_output=True, text=True)
    if "dubious ownership" not in probe.stderr:
        pytest.skip(f"this git does not simulate a foreign owner ({probe.stderr.strip() or 'no error'})")
    before = snapshot(tree)
    code, _, err = run_cli(capsys, "apply", tree, "--heads", "FCNHead", "--commit", *extra)
    assert code == 1
    line = one_line_error(err)
    assert f"safe.directory {tree})" in line and ("cannot --commit" in line) == bool(extra)
    assert snapshot(tree) == before


def test_a_full_disk_in_git_is_one_line_and_rolled_back(capsys, tree, identity, monkeypatch):
    real = git.cmd.Git._call_process

    def full(self, method, *args, **kwargs):
        if method == "commit":
            raise git.GitCommandError(["git", "commit"], 128, stderr=(
                b"error: unable to create temporary file: No space left on device\n"
                b"fatal: failed to write commit object\n"))
        return real(self, method, *args, **kwargs)

    monkeypatch.setattr(git.cmd.Git, "_call_process", full)
    before = snapshot(tree)
    code, _, err = run_cli(capsys, "apply", tree, "--heads", "FCNHead", "--commit")
    assert code == 1
    assert one_line_error(err) == ("rewardpatch: error: git commit failed: fatal: failed to write commit object; "
                                   "the patch was rolled back, nothing was changed")
    assert snapshot(tree) == before and git_status(tree) == "" and staged(tree) == ""


def test_commit_adds_the_files_apply_wrote_where_gitignore_ignores_them(capsys, tree, identity):
    # a fork that keeps its package out of git by default (/mmseg), yet tracks its own files in it
    ignore = tree / ".gitignore"
    ignore.write_text((ignore.read_text() if ignore.exists() else "") + "/mmseg\n")
    (tree / "notes.txt").write_text("mine, not to be committed\n")
    subprocess.run(["git", "add", ".gitignore"], cwd=tree, check=True)
    subprocess.run(["git", "commit", "-qm", "ignore /mmseg"], cwd=tree, check=True)
    stray = tree / HEADS / "scratch.py"  # an ignored file of the user's, beside the patch
    stray.write_text("x = 1\n")
    line = ignore.read_text().splitlines().index("/mmseg") + 1
    code, out, err = run_cli(capsys, "apply", tree, "--heads", "FCNHead", "--commit")
    assert code == 0, err
    written = set(subprocess.run(["git", "show", "--name-only", "--format=", "HEAD"], cwd=tree, capture_output=True,
                                 text=True, check=True).stdout.split())
    created = {f"{HEADS}/reward_fcn_head.py", f"{HEADS}/reward_decode_head.py",
               "mmseg/models/losses/reward_estimator.py"}
    assert created <= written and f"{HEADS}/__init__.py" in written and MANIFEST_NAME in written
    assert f"{HEADS}/scratch.py" not in written and "notes.txt" not in written
    forced = len([p for p in written if p.startswith("mmseg/")])  # the __init__ files, tracked, too
    assert (f"note: git's ignore rules (.gitignore:{line}: /mmseg) match {forced} of the files apply wrote: "
            "committed with git add --force") in out.splitlines()
    assert git_status(tree) == "?? notes.txt\n" and staged(tree) == ""
    assert stray.read_text() == "x = 1\n"


def test_a_tracked_file_under_an_ignored_folder_is_committed_too(tree, identity):
    # git refuses a plain `git add` of a tracked file whose folder an ignore rule matches
    (tree / ".git" / "info").mkdir(exist_ok=True)
    (tree / ".git" / "info" / "exclude").write_text("/mmseg\n")
    init = f"{HEADS}/__init__.py"
    (tree / init).write_text((tree / init).read_text() + "# changed\n")
    committed = gitstate.commit(tree, [init], "change a tracked file")
    assert committed.forced == (init,) and committed.rules == (".git/info/exclude:1: /mmseg",)
    assert git_status(tree) == "" and staged(tree) == ""
