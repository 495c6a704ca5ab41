"""verify on MMSeg 0.x trees, run by the 0.x stack's interpreter (REWARDPATCH_MMSEG0_PYTHON).

The 0.x stack (mmcv-full 1.x) cannot share this process with the 1.x one, so each test runs
`python_0x -m rewardpatch verify` in a subprocess, with this checkout's rewardpatch first on its
path. The fine-tunes are short (a few CE and reward iterations): they prove that the runner,
the eval hooks, the checkpoint hand-over and the reward statistics work, not that it learns.
"""

import csv
import json
from pathlib import Path

import pytest

import forks
from conftest import FINETUNE_KEYS, HEAD_KEYS, REPORT_KEYS, copy_checkout, one_line_error, run_cli, run_cli_process
from rewardpatch.planning import plan_apply
from rewardpatch.tree import MMSegTree
from rewardpatch.verify.worker import MMCVRange, assert_bound, mmcv_range

REPO = Path(__file__).resolve().parents[1]


def verify_0x(python_0x: str, tree: Path, workdir: Path, *args) -> tuple[int, str, str, dict | None]:
    """(exit code, stdout, stderr, report or None) of the 0.x stack's `rewardpatch verify`."""
    report = workdir.parent / f"{workdir.name}-report.json"
    result = run_cli_process("verify", tree, "--device", "cpu", "--workdir", workdir, "--report", report, *args,
                             python=python_0x, cwd=workdir.parent, timeout=600)
    loaded = json.loads(report.read_text()) if report.exists() else None
    return result.returncode, result.stdout, result.stderr, loaded


def patched(version: str, dest: Path) -> Path:
    tree = copy_checkout(version, dest)
    plan_apply(MMSegTree.open(tree)).execute()
    return tree


@pytest.fixture(scope="module")
def tree030(tmp_path_factory, python_0x) -> Path:
    return patched("0.30.0", tmp_path_factory.mktemp("verify_0x") / "mmsegmentation")


def test_every_head_and_a_short_fine_tune_pass_on_0_30_0(tree030, python_0x, tmp_path, capsys):
    code, out, err, report = verify_0x(python_0x, tree030, tmp_path / "work", "--ce-iters", "20", "--iters", "8")
    assert code == 0, out + err[-3000:]
    names = _reward_classes(MMSegTree.open(tree030))  # every patched head, the default
    assert [h["name"] for h in report["heads"]] == names and all(h["ok"] for h in report["heads"])
    assert report["mmseg_version"] == "0.30.0" and report["device"] == "cpu"
    # the same schema as a 1.x tree's report (test_verify.py checks the 1.x side)
    assert set(report) == REPORT_KEYS and set(report["heads"][0]) == HEAD_KEYS
    fine = report["finetune"]
    assert set(fine) == FINETUNE_KEYS
    assert fine["ok"], fine["error"]
    assert fine["head"] == "RewardFCNHead" and fine["world_size"] == 1 and fine["device"] == "cpu"
    assert (fine["ce_iters"], fine["iters"]) == (20, 8)
    assert len(fine["ce_loss"]) == 20 and len(fine["reward_loss"]) == 8 and len(fine["reward_mean"]) == 8
    # mmcv's IterBasedRunner wrote its checkpoint; the reward phase started from it, evaluated
    # it first (the CE phase's last evaluation, same weights) and every 2 iterations
    assert fine["checkpoint"].endswith("iter_20.pth") and Path(fine["checkpoint"]).is_file()
    assert fine["dataset_miou_before"] == pytest.approx(fine["miou_ce"])
    assert [step for step, _ in fine["miou_curve"]] == [0, 2, 4, 6, 8]
    assert 0 < fine["dataset_miou_after"] <= 100
    assert fine["reward_cfg"]["mode"] == "local"
    assert (tmp_path / "work" / "verify_curves.png").stat().st_size > 10_000
    assert f"{len(names)}/{len(names)} heads passed on cpu" in out
    # 0.30.0 allows mmcv-full up to 1.8.0: nothing relaxed; its BaseDecodeHead takes no seg_weight
    assert report["notes"] == [] and "relaxed" not in out
    assert all(h["pixel_weight"] is None for h in report["heads"])

    # `plot` reads the two phases' mmcv logs (<timestamp>.log.json) as an A/B pair: the reward
    # phase's validations at the training iterations they followed (the one before iteration 1 is
    # verify's own, not logged), in percent as MMSeg 1.x logs
    code, _, err = run_cli(
        capsys, "plot", tmp_path / "work" / "ce", tmp_path / "work" / "reward", "-o", tmp_path / "ab"
    )
    assert code == 0, err
    with (tmp_path / "ab" / "ab_miou.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    curve = [(float(row["step"]), float(row["mIoU B: reward"])) for row in rows if row["mIoU B: reward"]]
    assert curve == [(step, pytest.approx(miou, abs=0.006)) for step, miou in fine["miou_curve"] if step > 0]
    with (tmp_path / "ab" / "ab_per_class.csv").open() as handle:
        assert [row["class"] for row in csv.DictReader(handle)] == ["background", "object1", "object2", "object3"]


def _reward_classes(tree: MMSegTree) -> list[str]:
    from rewardpatch.manifest import Manifest

    manifest = Manifest.load(tree)
    assert manifest is not None
    return sorted(manifest.reward_classes)


def test_the_fine_tune_runs_under_torchrun_with_two_processes(tree030, python_0x, tmp_path):
    code, out, err, report = verify_0x(python_0x, tree030, tmp_path / "work", "--heads", "FCNHead", "--nproc", "2",
                                     "--ce-iters", "8", "--iters", "4")
    assert code == 0, out + err[-3000:]
    fine = report["finetune"]
    assert fine["ok"], fine["error"]
    assert fine["world_size"] == 2 and len(fine["reward_mean"]) == 4
    assert fine["dataset_miou_before"] is not None and fine["dataset_miou_after"] is not None
    assert "on cpu x2" in out


def relaxed_line(version: str, highest: str) -> str:
    return (f"rewardpatch: MMSeg {version} asserts mmcv-full <= {highest}; verified with 1.7.2, "
            "the tree's assert relaxed for this run only")


@pytest.mark.parametrize("version, lowest, highest, inclusive", [
    ("0.11.0", "1.1.4", "1.3.0", True), ("0.16.0", "1.3.7", "1.4.0", True), ("0.20.2", "1.3.13", "1.5.0", True),
    ("0.24.1", "1.3.13", "1.6.0", True), ("0.30.0", "1.3.13", "1.8.0", False),
])
def test_the_worker_reads_the_tree_s_own_mmcv_range_without_importing_it(pristine, version, lowest, highest,
                                                                         inclusive):
    tree = MMSegTree.open(pristine(version))
    assert mmcv_range(tree) == MMCVRange(lowest, highest, inclusive)
    assert assert_bound(tree, "1.7.2") == (None if version == "0.30.0" else (highest, f"<= {highest}"))
    assert assert_bound(tree, "1.0.0") == (lowest, f">= {lowest}")
    assert assert_bound(tree, lowest) is None
    # 0.30.0 asserts mmcv < MMCV_MAX, as 1.x does: mmcv then reads as that release's first candidate
    assert assert_bound(tree, highest) == (None if inclusive else (f"{highest}rc0", f"< {highest}"))


@pytest.mark.parametrize("version", ["1.0.0", "1.1.2", "1.2.2"])
def test_the_worker_reads_a_1x_tree_s_exclusive_mmcv_bound(pristine, version):
    tree = MMSegTree.open(pristine(version))
    highest = "2.2.0" if version == "1.2.2" else "2.1.0"
    assert mmcv_range(tree) == MMCVRange("2.0.0rc4", highest, high_inclusive=False)
    assert assert_bound(tree, "2.1.0") == (None if version == "1.2.2" else ("2.1.0rc0", "< 2.1.0"))
    assert assert_bound(tree, "2.0.1") is None


def test_stage_one_passes_on_0_24_1_with_its_mmcv_assert_relaxed_in_the_worker(python_0x, tmp_path):
    tree = patched("0.24.1", tmp_path / "mmsegmentation")
    # 0.24.1 asserts mmcv-full <= 1.6.0; this stack has 1.7.2 (the one mmcv-full built here),
    # whose API 0.24.1 uses unchanged: the worker relaxes the assert, the tree stays as it is
    init = tree / "mmseg" / "__init__.py"
    before = init.read_bytes()
    assert b"MMCV_MAX = '1.6.0'" in before
    code, out, err, report = verify_0x(python_0x, tree, tmp_path / "work", "--skip-finetune")
    assert code == 0, out + err[-3000:]
    assert init.read_bytes() == before
    assert relaxed_line("0.24.1", "1.6.0") in out.splitlines()
    assert report["notes"] == [relaxed_line("0.24.1", "1.6.0").removeprefix("rewardpatch: ")]
    assert report["mmseg_version"] == "0.24.1" and report["finetune"] is None
    names = _reward_classes(MMSegTree.open(tree))
    assert [h["name"] for h in report["heads"]] == names and all(h["ok"] for h in report["heads"])


# MMSeg 0.11.0: 20 reward heads, 0.20.2: 25, 0.23.0: 26 (tests/test_mmseg_0x_releases.py)
@pytest.mark.parametrize("version, highest", [("0.11.0", "1.3.0"), ("0.20.2", "1.5.0"), ("0.23.0", "1.5.0")])
def test_stage_one_passes_on_an_older_release(python_0x, tmp_path, version, highest):
    report, _ = stage_one_passes(python_0x, tmp_path, version, highest)
    assert all(h["pixel_weight"] is None for h in report["heads"])


def stage_one_passes(python_0x: str, tmp_path: Path, version: str, highest: str) -> tuple[dict, list[str]]:
    """`verify --skip-finetune` on a patched reference tree of `version` passes every reward head,
    the tree's mmcv assert (<= highest) relaxed: the report and the reward heads' names."""
    tree = patched(version, tmp_path / "mmsegmentation")
    code, out, err, report = verify_0x(python_0x, tree, tmp_path / "work", "--skip-finetune")
    assert code == 0, out + err[-3000:]
    assert report is not None
    assert relaxed_line(version, highest) in out.splitlines()
    names = _reward_classes(MMSegTree.open(tree))
    assert [h["name"] for h in report["heads"]] == names and all(h["ok"] for h in report["heads"])
    return report, names


def test_the_daformer_fork_verifies_with_a_pseudo_label_step_and_a_fine_tune(python_0x, tmp_path):
    tree = forks.daformer_0x(copy_checkout("0.16.0", tmp_path / "daformer"))
    plan_apply(MMSegTree.open(tree)).execute()
    code, out, err, report = verify_0x(python_0x, tree, tmp_path / "work", "--ce-iters", "20", "--iters", "8")
    assert code == 0, out + err[-3000:]
    assert relaxed_line("0.16.0", "1.4.0") in out.splitlines()
    names = _reward_classes(MMSegTree.open(tree))
    assert [h["name"] for h in report["heads"]] == names and all(h["ok"] for h in report["heads"])
    # every head trained through forward_train(..., seg_weight=<[B, H, W] weights>), except the
    # cascade head, whose forward_train (the fork's cascade_decode_head.py) takes no seg_weight
    weighted = {h["name"]: h["pixel_weight"] for h in report["heads"]}
    assert weighted.pop("RewardOCRHead") is None
    assert set(weighted.values()) == {"seg_weight"}
    fine = report["finetune"]
    assert fine["ok"], fine["error"]
    assert (fine["ce_iters"], fine["iters"]) == (20, 8) and len(fine["reward_mean"]) == 8
    assert fine["dataset_miou_before"] is not None and 0 < fine["dataset_miou_after"] <= 100


def test_a_0x_tree_under_the_1x_stack_names_the_stack_it_needs(tree030, stack, tmp_path, capsys):
    code, _, err = run_cli(capsys, "verify", tree030, "--skip-finetune", "--workdir", tmp_path / "w")
    assert code == 2
    line = one_line_error(err)
    assert "MMSeg 0.30.0 needs mmcv-full 1.x; this interpreter" in line and "has mmcv 2." in line
    assert line.endswith("run the rewardpatch of a 0.x environment (make setup0)")


def test_a_1x_tree_under_the_0x_stack_names_the_stack_it_needs(python_0x, tmp_path):
    tree = patched("1.2.2", tmp_path / "mmsegmentation")
    code, _, err, _ = verify_0x(python_0x, tree, tmp_path / "work", "--skip-finetune")
    assert code == 2
    line = one_line_error(err)
    assert "MMSeg 1.2.2 needs mmcv 2.x and mmengine; this interpreter" in line and "has mmcv 1.7" in line
    assert line.endswith("run the rewardpatch of a 1.x environment (make setup)")
