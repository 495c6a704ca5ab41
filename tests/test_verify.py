"""verify: a patched tree's heads and a short reward fine-tune, and checks that can fail."""

import json

import pytest

import forks
from conftest import FINETUNE_KEYS, HEAD_KEYS, REPORT_KEYS, copy_checkout, one_line_error, run_cli
from rewardpatch.configs.reward_cfg import reward_cfg_checker
from rewardpatch.planning import ApplyOptions, plan_apply
from rewardpatch.tree import MMSegTree

HEADS = "mmseg/models/decode_heads"


@pytest.fixture(scope="module")
def verified_tree(tmp_path_factory, stack):
    tree = copy_checkout("1.2.2", tmp_path_factory.mktemp("verify") / "mmsegmentation")
    plan_apply(MMSegTree.open(tree)).execute()
    return tree


@pytest.fixture
def fresh_patched(tmp_path, stack):
    tree = copy_checkout("1.2.2", tmp_path / "mmsegmentation")
    plan_apply(MMSegTree.open(tree), ApplyOptions(heads=("ASPPHead", "FCNHead", "PSPHead"))).execute()
    return tree


def verify(capsys, *args):
    return run_cli(capsys, "verify", *args)


def test_default_verify_passes_on_the_patched_1_2_2_checkout(verified_tree, tmp_path, capsys):
    report_path = tmp_path / "report.json"
    code, out, err = verify(capsys, verified_tree, "--device", "cpu", "--workdir", tmp_path / "work",
                            "--report", report_path)
    assert code == 0, out + err
    report = json.loads(report_path.read_text())
    assert report["ok"] is True and report["device"] == "cpu"
    assert report["tree"] == str(verified_tree)
    assert len(report["heads"]) == 27
    # the schema test_verify_0x.py expects of a 0.x tree's report too
    assert set(report) == REPORT_KEYS and set(report["heads"][0]) == HEAD_KEYS
    fine = report["finetune"]
    assert set(fine) == FINETUNE_KEYS
    assert fine["ok"] and fine["iters"] == 40 and fine["checkpoint_loads_weights_only"] is False
    assert fine["reward_cfg"] == reward_cfg_checker(MMSegTree.open(verified_tree))({})  # the default
    assert fine["load_from"].endswith("weights_only.pth")
    assert (tmp_path / "work" / "verify_curves.png").stat().st_size > 10_000
    assert "27/27 heads passed on cpu" in out
    # mmcv 2.1.0 is inside 1.2.2's MMCV_MIN..MMCV_MAX; its BaseDecodeHead.loss takes no seg_weight
    assert report["notes"] == [] and all(h["pixel_weight"] is None for h in report["heads"])


def test_a_broken_generated_head_fails_verify_and_is_named(fresh_patched, tmp_path, capsys):
    path = fresh_patched / HEADS / "reward_aspp_head.py"
    source = path.read_text()
    broken = source.replace("output = self.cls_seg(output)", "output = self.cls_seg(output)[:, :1]")
    assert broken != source
    path.write_text(broken)
    code, out, err = verify(capsys, fresh_patched, "--skip-finetune", "--workdir", tmp_path / "work",
                            "--report", tmp_path / "report.json")
    assert code == 1
    assert "FAILED RewardASPPHead: AssertionError: output shape" in err
    assert "RewardPSPHead" in out and "FAILED RewardPSPHead" not in err
    # ASPPHead itself built and ran with verify's arguments: the reward step is what failed
    rows = {h["name"]: h for h in json.loads((tmp_path / "report.json").read_text())["heads"]}
    assert rows["RewardASPPHead"]["failed_at"] == "reward" and rows["RewardPSPHead"]["failed_at"] is None
    assert rows["RewardASPPHead"]["args"]["dilations"] == [1, 2]


def test_a_head_whose_loss_never_reaches_the_classifier_fails(fresh_patched, tmp_path, capsys):
    path = fresh_patched / HEADS / "reward_psp_head.py"
    path.write_text(path.read_text().replace("output = self.cls_seg(output)", "output = self.cls_seg(output).detach()"))
    code, _, err = verify(capsys, fresh_patched, "--skip-finetune", "--heads", "PSPHead", "--workdir", tmp_path / "w")
    assert code == 1
    assert "FAILED RewardPSPHead" in err


def test_an_unpatched_tree_is_refused_with_the_apply_hint(tree, tmp_path, capsys, stack):
    # verify stops on a missing torch or mmcv before it reads the tree
    code, _, err = verify(capsys, tree, "--workdir", tmp_path / "work")
    assert code == 1
    assert err.strip().endswith("run `rewardpatch apply " + str(tree) + "` first")


def test_an_unpatched_head_is_refused(fresh_patched, tmp_path, capsys):
    code, _, err = verify(capsys, fresh_patched, "--heads", "UPerHead", "--workdir", tmp_path / "work")
    assert code == 2
    assert "UPerHead not patched" in err and len(err.strip().splitlines()) == 1


def test_cuda_requested_without_a_gpu_is_a_usage_error(fresh_patched, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, _, err = verify(capsys, fresh_patched, "--device", "cuda", "--skip-finetune", "--workdir", tmp_path / "w")
    assert code == 2
    assert "no CUDA device" in err


def test_mmseg_imported_from_elsewhere_stops_verify(fresh_patched, tmp_path, capsys):
    # without its __init__.py, the tree's mmseg is only a namespace portion and an installed
    # mmseg package further down the path would win
    (fresh_patched / "mmseg/__init__.py").unlink()
    code, _, err = verify(capsys, fresh_patched, "--skip-finetune", "--workdir", tmp_path / "w")
    assert code == 2
    assert "mmseg would be imported from" in err and f"not from {fresh_patched}" in err


def test_a_foreign_non_empty_workdir_is_refused(fresh_patched, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    code, _, err = verify(capsys, fresh_patched, "--workdir", tmp_path / "mine")
    assert code == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_the_fine_tune_runs_under_torchrun_with_two_processes(fresh_patched, tmp_path, capsys):
    report_path = tmp_path / "report.json"
    code, out, err = verify(capsys, fresh_patched, "--device", "cpu", "--heads", "FCNHead", "--nproc", "2",
                            "--ce-iters", "8", "--iters", "4", "--workdir", tmp_path / "w", "--report", report_path)
    assert code == 0, out + err
    fine = json.loads(report_path.read_text())["finetune"]
    assert fine["world_size"] == 2 and fine["ok"]


def test_stage_one_runs_a_pseudo_label_step_on_a_1x_port_of_daformer(tmp_path, capsys, stack):
    # the port's BaseDecodeHead.loss takes seg_weight: each head's loss gets [B, H, W] weights
    tree = forks.daformer_1x(copy_checkout("1.2.2", tmp_path / "port"))
    plan_apply(MMSegTree.open(tree), ApplyOptions(heads=("ASPPHead", "FCNHead", "UPerHead"))).execute()
    report_path = tmp_path / "report.json"
    code, out, err = verify(capsys, tree, "--device", "cpu", "--skip-finetune", "--workdir", tmp_path / "work",
                            "--report", report_path)
    assert code == 0, out + err
    heads = json.loads(report_path.read_text())["heads"]
    assert [(h["name"], h["ok"], h["pixel_weight"]) for h in heads] == [
        (name, True, "seg_weight") for name in ("RewardASPPHead", "RewardFCNHead", "RewardUPerHead")
    ]


@pytest.mark.parametrize("version", ["1.0.0", "1.1.2"])
def test_verify_passes_on_1_0_and_1_1_with_the_tree_s_exclusive_mmcv_bound_relaxed(version, tmp_path, capsys, stack):
    # 1.0.0 to 1.1.2 assert MMCV_MIN <= mmcv < MMCV_MAX = '2.1.0'; the stack has 2.1.0, whose API
    # they use unchanged: the worker relaxes that assert for its own import, the tree stays as it is
    tree = copy_checkout(version, tmp_path / "mmsegmentation")
    plan_apply(MMSegTree.open(tree)).execute()
    init = tree / "mmseg" / "__init__.py"
    before = init.read_bytes()
    assert b"MMCV_MAX = '2.1.0'" in before and b"mmcv_version < mmcv_max_version" in before
    report_path = tmp_path / "report.json"
    code, out, err = verify(capsys, tree, "--device", "cpu", "--ce-iters", "8", "--iters", "4",
                            "--workdir", tmp_path / "work", "--report", report_path)
    assert code == 0, out + err
    assert init.read_bytes() == before
    note = f"MMSeg {version} asserts mmcv < 2.1.0; verified with 2.1.0, the tree's assert relaxed for this run only"
    assert f"rewardpatch: {note}" in out.splitlines()
    report = json.loads(report_path.read_text())
    assert report["notes"] == [note] and report["mmseg_version"] == version
    assert len(report["heads"]) == 27 and all(h["ok"] for h in report["heads"])
    assert report["finetune"]["ok"] and report["finetune"]["iters"] == 4


@pytest.fixture(scope="module")
def scale_pool_fork(tmp_path_factory, stack):
    """A fork with a head of its own whose constructor needs `scales`, patched with FCNHead."""
    tree = forks.scale_pool_head_1x(copy_checkout("1.2.2", tmp_path_factory.mktemp("fork") / "mmsegmentation"))
    plan_apply(MMSegTree.open(tree), ApplyOptions(heads=("FCNHead", "ScalePoolHead"))).execute()
    return tree


def test_a_head_verify_cannot_build_with_its_guessed_arguments_is_a_build_failure(scale_pool_fork, tmp_path, capsys):
    report_path = tmp_path / "report.json"
    code, out, err = verify(capsys, scale_pool_fork, "--skip-finetune", "--workdir", tmp_path / "work",
                            "--report", report_path)
    assert code == 1
    rows = {h["name"]: h for h in json.loads(report_path.read_text())["heads"]}
    assert rows["RewardFCNHead"]["ok"] and rows["RewardFCNHead"]["failed_at"] is None
    row = rows["RewardScalePoolHead"]
    assert not row["ok"] and row["failed_at"] == "build"
    assert row["args"] == {"in_channels": 16, "channels": 8, "num_classes": 5}
    assert row["error"] == (
        "could not build ScalePoolHead with the arguments verify guessed (patches/ names none for ScalePoolHead: "
        "the defaults) (in_channels=16, channels=8, num_classes=5): TypeError: ScalePoolHead.__init__() missing 1 "
        "required positional argument: 'scales'; give its arguments with --head-args 'RewardScalePoolHead={...}'")
    assert f"FAILED RewardScalePoolHead: {row['error']}" in err.splitlines()


def test_head_args_build_the_head_and_it_passes(scale_pool_fork, tmp_path, capsys):
    report_path = tmp_path / "report.json"
    code, out, err = verify(capsys, scale_pool_fork, "--skip-finetune", "--workdir", tmp_path / "work",
                            "--report", report_path, "--head-args", 'RewardScalePoolHead={"scales": [1, 2]}')
    assert code == 0, out + err
    rows = {h["name"]: h for h in json.loads(report_path.read_text())["heads"]}
    assert rows["RewardScalePoolHead"]["ok"] and rows["RewardScalePoolHead"]["failed_at"] is None
    assert rows["RewardScalePoolHead"]["args"] == {"in_channels": 16, "channels": 8, "scales": [1, 2],
                                                   "num_classes": 5}
    assert rows["RewardFCNHead"]["args"] == {"in_channels": 16, "channels": 8, "num_convs": 1, "num_classes": 5}


def test_a_head_that_builds_but_fails_on_verify_s_inputs_is_a_build_failure_too(scale_pool_fork, tmp_path, capsys):
    # ScalePoolHead builds with scales=[0]; pooling to an empty map fails: the arguments, not the reward
    report_path = tmp_path / "report.json"
    code, _, err = verify(capsys, scale_pool_fork, "--skip-finetune", "--heads", "ScalePoolHead", "--workdir",
                          tmp_path / "work", "--report", report_path, "--head-args", 'ScalePoolHead={"scales": [0]}')
    assert code == 1
    row = json.loads(report_path.read_text())["heads"][0]
    assert row["failed_at"] == "build"
    assert row["error"].startswith(
        "ScalePoolHead built with the arguments verify guessed, scales from --head-args (in_channels=16, channels=8, "
        "scales=(0,), num_classes=5) fails on verify's inputs: ")


def test_head_args_from_a_json_file_merge_over_the_guessed_arguments(scale_pool_fork, tmp_path, capsys):
    given = tmp_path / "head_args.json"
    given.write_text(json.dumps({"ScalePoolHead": {"scales": [2]}, "RewardFCNHead": {"channels": 4}}))
    report_path = tmp_path / "report.json"
    code, out, err = verify(capsys, scale_pool_fork, "--skip-finetune", "--workdir", tmp_path / "work",
                            "--report", report_path, "--head-args", given)
    assert code == 0, out + err
    rows = {h["name"]: h for h in json.loads(report_path.read_text())["heads"]}
    assert rows["RewardScalePoolHead"]["args"]["scales"] == [2] and rows["RewardScalePoolHead"]["ok"]
    assert rows["RewardFCNHead"]["args"]["channels"] == 4 and rows["RewardFCNHead"]["ok"]


@pytest.mark.parametrize("value, message", [
    ('RewardScalePoolHead={"scales": [1, 2]', "--head-args RewardScalePoolHead: not JSON (Expecting"),
    ('RewardScalePoolHead=[1, 2]', "--head-args RewardScalePoolHead: the arguments of RewardScalePoolHead must "
                                   "be a JSON object, not [1, 2]"),
    ('RewardPSPHead={"pool_scales": [1]}', "--head-args RewardPSPHead: RewardPSPHead has no reward version here "
                                           "(heads: FCNHead, ScalePoolHead)"),
    ('ScalePoolHead={"num_classes": 3}', "--head-args ScalePoolHead: verify sets num_classes of ScalePoolHead "
                                         "itself"),
    ("no-such-file.json", "--head-args no-such-file.json: neither HEAD=JSON nor a readable JSON file "
                          "(No such file or directory)"),
])
def test_a_bad_head_args_value_is_a_usage_error_of_one_line(scale_pool_fork, tmp_path, capsys, value, message):
    code, _, err = verify(capsys, scale_pool_fork, "--skip-finetune", "--workdir", tmp_path / "work",
                          "--head-args", value)
    assert code == 2
    assert one_line_error(err).startswith(f"rewardpatch: error: {message}")
    assert not (tmp_path / "work").exists()
