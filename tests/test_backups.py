"""apply --force keeps every file it replaces under .rewardpatch/; revert puts them back."""

import json
import os
import subprocess

from conftest import git_status, one_line_error, run_cli
from rewardpatch.checkout import COMMIT_ENV
from rewardpatch.tree import APPLY_COPIES_DIR, MANIFEST_NAME

HEADS = "mmseg/models/decode_heads"
LOSSES = "mmseg/models/losses"
# CRLF, no final newline, a non-ASCII byte: byte for byte means byte for byte
HAND_MADE = {
    f"{LOSSES}/iou_metric_loss.py": b"# my IoU loss\r\nclass IoUMetricLoss:\r\n    weight = '\xc2\xb5'",
    f"{LOSSES}/cross_entropy_reward_loss.py": (
        b"# copied from the old README\nclass CrossEntropyRewardLoss:\n    pass\n"
    ),
}


def commit_hand_made_files(tree):
    for path, data in HAND_MADE.items():
        (tree / path).write_bytes(data)
    env = {**os.environ, **COMMIT_ENV}
    subprocess.run(["git", "add", *HAND_MADE], cwd=tree, env=env, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "my losses"], cwd=tree, env=env, check=True)
    assert git_status(tree) == ""


def snapshot(tree):
    return {p.relative_to(tree): p.read_bytes() for p in tree.rglob("*") if p.is_file() and ".git" not in p.parts}


def test_apply_force_keeps_each_replaced_file_byte_for_byte_under_the_backup_folder(capsys, tree):
    commit_hand_made_files(tree)
    code, out, _ = run_cli(capsys, "apply", tree, "--force")
    assert code == 0
    for path, data in HAND_MADE.items():
        assert (tree / APPLY_COPIES_DIR / "original" / path).read_bytes() == data
        assert f"create  {APPLY_COPIES_DIR}/original/{path}  (copy of {path})" in out


def test_the_manifest_records_each_copy_with_its_hash(capsys, tree):
    commit_hand_made_files(tree)
    run_cli(capsys, "apply", tree, "--force")
    backups = json.loads((tree / MANIFEST_NAME).read_text())["backups"]
    assert {(b["path"], b["copy"], b["kind"]) for b in backups} == {
        (path, f"{APPLY_COPIES_DIR}/original/{path}", "original") for path in HAND_MADE
    }


def test_revert_after_apply_force_puts_the_files_back_and_leaves_a_clean_git_status(capsys, tree):
    commit_hand_made_files(tree)
    assert run_cli(capsys, "apply", tree, "--force")[0] == 0
    assert run_cli(capsys, "check", tree)[0] == 0
    code, out, _ = run_cli(capsys, "revert", tree)
    assert code == 0
    for path, data in HAND_MADE.items():
        assert (tree / path).read_bytes() == data
    assert not (tree / APPLY_COPIES_DIR).exists()
    assert git_status(tree) == ""


def test_dry_run_shows_the_copies_and_writes_nothing(capsys, tree):
    commit_hand_made_files(tree)
    code, out, _ = run_cli(capsys, "apply", tree, "--force", "--dry-run")
    assert code == 0
    assert f"+++ b/{APPLY_COPIES_DIR}/original/{LOSSES}/cross_entropy_reward_loss.py" in out
    assert "+# copied from the old README" in out
    assert git_status(tree) == ""


def test_a_failed_write_leaves_no_copy_behind(capsys, tree, monkeypatch):
    commit_hand_made_files(tree)
    real_replace = os.replace

    def no_manifest(src, dst, **at):
        if str(dst).endswith(MANIFEST_NAME):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst, **at)

    monkeypatch.setattr("rewardpatch.treefs.os.replace", no_manifest)
    code, _, err = run_cli(capsys, "apply", tree, "--force")
    assert code == 1
    assert "the tree was left unchanged" in one_line_error(err)
    assert not (tree / APPLY_COPIES_DIR).exists()
    assert git_status(tree) == ""


def test_hand_edits_that_apply_force_overwrites_are_kept_too(capsys, tree):
    run_cli(capsys, "apply", tree, "--heads", "FCNHead")
    generated = tree / HEADS / "reward_fcn_head.py"
    edited = generated.read_bytes() + b"# my tweak\n"
    generated.write_bytes(edited)
    assert run_cli(capsys, "apply", tree, "--heads", "FCNHead", "--force")[0] == 0
    copies = list((tree / APPLY_COPIES_DIR / "hand-edited").rglob("reward_fcn_head.py.*"))
    assert [c.read_bytes() for c in copies] == [edited]


def test_revert_refuses_to_drop_kept_hand_edits_unless_forced(capsys, tree):
    run_cli(capsys, "apply", tree, "--heads", "FCNHead")
    generated = tree / HEADS / "reward_fcn_head.py"
    generated.write_bytes(generated.read_bytes() + b"# my tweak\n")
    run_cli(capsys, "apply", tree, "--heads", "FCNHead", "--force")
    before = snapshot(tree)
    code, _, err = run_cli(capsys, "revert", tree)
    assert code == 1
    assert f"{APPLY_COPIES_DIR}/hand-edited/{HEADS}/reward_fcn_head.py." in one_line_error(err)
    assert snapshot(tree) == before
    assert run_cli(capsys, "revert", tree, "--force")[0] == 0
    assert git_status(tree) == ""


def test_check_fails_when_a_kept_copy_is_missing(capsys, tree):
    commit_hand_made_files(tree)
    run_cli(capsys, "apply", tree, "--force")
    copy = f"{APPLY_COPIES_DIR}/original/{LOSSES}/iou_metric_loss.py"
    (tree / copy).unlink()
    code, _, err = run_cli(capsys, "check", tree)
    assert code == 1
    assert f"{copy}: missing, the copy of {LOSSES}/iou_metric_loss.py kept by apply --force" in err


def test_revert_refuses_when_a_kept_copy_is_missing_and_changes_nothing(capsys, tree):
    commit_hand_made_files(tree)
    run_cli(capsys, "apply", tree, "--force")
    (tree / APPLY_COPIES_DIR / "original" / LOSSES / "iou_metric_loss.py").unlink()
    before = snapshot(tree)
    code, _, err = run_cli(capsys, "revert", tree, "--force")
    assert code == 1
    assert f"cannot put back {LOSSES}/iou_metric_loss.py" in one_line_error(err)
    assert snapshot(tree) == before
