"""Plugin mode's verbs: `list-heads --installed`, `config --plugin`, `verify --installed`.

Each runs the `rewardpatch` command in a fresh interpreter whose import path holds a project's
modules (relative_project, from test_plugin) and this rewardpatch, so the MMSeg is the one
installed in the environment (1.2.2 in the test interpreter's, 0.30.0 in the 0.x stack's), as a
user's would be.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPORT_KEYS, one_line_error, run_cli_process
from rewardpatch.planning import list_heads
from rewardpatch.tree import MMSegTree
from test_config import AB_ONLY_DIFFERENCES, TINY, differ_only_in
from test_plugin import last_line, relative_project, run

pytestmark = pytest.mark.usefixtures("stack")

PROJECT = "myproj.models.heads"  # RelativeHead: relative imports, up one level too
LATE = "myproj.models.late"  # LateHead, OwnRegistryHead (a child registry), NoLossHead (incompatible)


@pytest.fixture(autouse=True)
def no_bytecode(monkeypatch):
    """The CLI's processes write no bytecode into the projects they import."""
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")


def verdicts(heads: list[dict]) -> list[tuple]:
    return [(h["name"], h["status"], h["reason"], h["reward_name"]) for h in heads]


def test_list_heads_installed_gives_list_heads_verdicts_for_the_installed_release(tmp_path, pristine):
    result = run_cli_process("list-heads", "--installed", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expected = [h.as_json() for h in list_heads(MMSegTree.open(pristine("1.2.2")))]
    assert verdicts(json.loads(result.stdout)) == verdicts(expected)

    table = run_cli_process("list-heads", "--installed", cwd=tmp_path)
    lines = table.stdout.splitlines()
    assert lines[0].startswith("MMSegmentation 1.2.2 installed at ") and "site-packages" in lines[0]
    compatible = sum(h["status"] == "compatible" for h in expected)
    assert lines[2] == ("plugin mode (custom_imports = dict(imports=['rewardpatch.plugin'])) registers "
                        f"Reward<X> for the {compatible} compatible heads")


def test_list_heads_installed_import_adds_the_project_s_heads_with_their_verdicts(tmp_path):
    project = relative_project(tmp_path)
    result = run_cli_process("list-heads", "--installed", "--json", "--import", PROJECT, "--import", LATE, cwd=tmp_path,
                 path=[project])
    assert result.returncode == 0, result.stderr
    found = {h["name"]: h for h in json.loads(result.stdout)}
    assert {n: found[n]["status"] for n in ("RelativeHead", "LateHead", "OwnRegistryHead", "NoLossHead")} == {
        "RelativeHead": "compatible", "LateHead": "compatible", "OwnRegistryHead": "compatible",
        "NoLossHead": "incompatible"}
    assert found["RelativeHead"]["file"] == str(project / "myproj/models/heads.py")
    assert "the reward loss would never run" in found["NoLossHead"]["reason"]
    assert found["FCNHead"]["status"] == "compatible"


@pytest.mark.parametrize(
    "args, message",
    [
        (["list-heads"], "give TREE or --installed"),
        (["list-heads", ".", "--installed"], "give TREE or --installed, not both"),
        (["list-heads", ".", "--import", "x"], "--import goes with --installed"),
        (["list-heads", "--installed", "--import", "nosuchproject.heads"],
         "importing nosuchproject.heads, rewardpatch.plugin failed: ModuleNotFoundError: "
         "No module named 'nosuchproject'"),
        (["verify"], "give TREE or --installed"),
        (["verify", "--installed", "--heads", "NoSuchHead,PointHead"],
         "NoSuchHead gets no reward version in plugin mode: no decode head of that name in the installed MMSeg "
         "or the --import modules (`rewardpatch list-heads --installed` lists them); PointHead gets no reward "
         "version in plugin mode: "),
        (["config", "src.py", "-o", "out.py"], "give --tree TREE or --plugin"),
        (["config", "src.py", "-o", "out.py", "--plugin", "--tree", "."], "give --tree TREE or --plugin, not both"),
    ],
)
def test_plugin_mode_usage_errors_are_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "src.py").write_text(TINY)
    result = run_cli_process(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in one_line_error(result.stderr)


# Builds the model of a config as tools/train.py would: Config.fromfile imports its custom_imports.
BUILD = """
import json, sys
from mmengine.config import Config
from mmengine.registry import init_default_scope
cfg = Config.fromfile(sys.argv[1])
init_default_scope('mmseg')
from mmseg.registry import MODELS
model = MODELS.build(cfg.model)
head = model.decode_head
print(json.dumps([type(head).__name__, type(head).__module__, sys.modules[type(head).__module__].__file__,
                  type(head.loss_decode).__name__, type(head).__mro__[1].__name__]))
"""


def build_in_a_fresh_process(config: Path, cwd: Path, path=()) -> list:
    return json.loads(last_line(run(BUILD.replace("sys.argv[1]", repr(str(config))), cwd, list(path))))


def load_without_imports(path: Path) -> dict:
    from mmengine.config import Config

    return Config.fromfile(str(path), import_custom_modules=False).to_dict()


def test_config_plugin_writes_the_config_line_and_the_output_trains_with_plugin_heads(tmp_path):
    src = tmp_path / "tiny.py"
    src.write_text(TINY)
    out, baseline = tmp_path / "reward.py", tmp_path / "ce.py"
    result = run_cli_process("config", src, "--plugin", "-o", out, "--baseline", baseline, "--reward", "num_samples=2",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = ("custom_imports: (unset) -> dict(imports=['rewardpatch.plugin'], allow_failed_imports=False)  "
            "(plugin mode: importing rewardpatch.plugin registers the reward heads)")
    assert result.stdout.count(line) == 2  # the baseline imports it too: the runs differ in the loss alone
    assert "# Reward heads from plugin mode on the MMSegmentation 1.2.2 installed at " in out.read_text()
    reward, ce = load_without_imports(out), load_without_imports(baseline)
    assert reward["custom_imports"] == ce["custom_imports"] == dict(imports=["rewardpatch.plugin"],
                                                                    allow_failed_imports=False)
    from rewardpatch.configs.diff import leaf_changes

    differences = {c.path for c in [*leaf_changes(reward, ce), *leaf_changes(ce, reward)]}
    assert differ_only_in(differences, AB_ONLY_DIFFERENCES)

    name, module, file, loss, base = build_in_a_fresh_process(out, tmp_path)
    assert (name, module, loss, base) == ("RewardFCNHead", "mmseg.models.decode_heads.reward_fcn_head",
                                          "CrossEntropyRewardLoss", "RewardDecodeHead")
    assert file.startswith("rewardpatch-plugin://")  # from plugin mode, not a file in site-packages
    assert build_in_a_fresh_process(baseline, tmp_path)[0] == "FCNHead"


def test_config_plugin_keeps_the_project_s_custom_imports_first_and_rewards_its_heads(tmp_path):
    project = relative_project(tmp_path)
    src = tmp_path / "project_head.py"
    src.write_text(TINY.replace("type='FCNHead', in_channels=64, channels=8, num_convs=1,",
                                "type='RelativeHead', in_channels=64, channels=8,")
                   + f"custom_imports = dict(imports=['{PROJECT}'], allow_failed_imports=False)\n")
    out = tmp_path / "reward.py"
    result = run_cli_process("config", src, "--plugin", "-o", out, cwd=tmp_path, path=[project])
    assert result.returncode == 0, result.stderr
    assert load_without_imports(out)["custom_imports"]["imports"] == [PROJECT, "rewardpatch.plugin"]
    name, module, file, loss, base = build_in_a_fresh_process(out, tmp_path, [project])
    assert (name, module, base) == ("RewardRelativeHead", "mmseg.models.decode_heads.reward_plugin_myproj_models_heads",
                                    "RewardDecodeHead")

    refused = tmp_path / "no_loss_head.py"
    refused.write_text(TINY.replace("type='FCNHead'", "type='NoLossHead'")
                       + f"custom_imports = dict(imports=['{LATE}'], allow_failed_imports=False)\n")
    result = run_cli_process("config", refused, "--plugin", "-o", tmp_path / "refused.py", cwd=tmp_path, path=[project])
    assert result.returncode == 1
    assert one_line_error(result.stderr) == (
        "rewardpatch: error: NoLossHead gets no reward version in plugin mode: NoLossHead.loss_by_feat computes "
        "its own loss without handing batch_data_samples to super(): the reward loss would never run")
    assert not (tmp_path / "refused.py").exists()


def test_verify_installed_checks_the_plugin_heads_and_fine_tunes_through_the_config_line(tmp_path):
    project = relative_project(tmp_path)
    workdir = tmp_path / "verify"
    result = run_cli_process("verify", "--installed", "--import", PROJECT, "--heads", "RelativeHead,FCNHead,PSPHead",
                 "--iters", "3", "--ce-iters", "4", "--workdir", workdir, cwd=tmp_path, path=[project])
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((workdir / "report.json").read_text())
    assert set(report) == REPORT_KEYS  # the schema of a tree's report, mode "plugin"
    assert report["ok"] and report["mode"] == "plugin" and report["mmseg_version"] == "1.2.2"
    assert [h["name"] for h in report["heads"]] == ["RewardRelativeHead", "RewardFCNHead", "RewardPSPHead"]
    assert report["finetune"]["ok"] and report["finetune"]["head"] == "RewardFCNHead"
    assert (workdir / "plugin_mode_config.py").read_text() == (
        f"custom_imports = dict(imports=['{PROJECT}', 'rewardpatch.plugin'], allow_failed_imports=False)\n")
    assert "passed (plugin mode) on cpu" in result.stdout


def test_verify_installed_on_0_30_0(tmp_path, python_0x):
    workdir = tmp_path / "verify"
    result = run_cli_process("verify", "--installed", "--heads", "FCNHead,PSPHead", "--iters", "3", "--ce-iters", "4",
                 "--workdir", workdir, cwd=tmp_path, python=python_0x)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((workdir / "report.json").read_text())
    assert report["ok"] and report["mode"] == "plugin" and report["mmseg_version"] == "0.30.0"
    assert [h["name"] for h in report["heads"]] == ["RewardFCNHead", "RewardPSPHead"]
    assert report["finetune"]["ok"]


BUILD_0X = """
import json, sys
from mmcv import Config
from mmseg.models import build_segmentor
cfg = Config.fromfile(sys.argv[1])
model = build_segmentor(cfg.model)
print(json.dumps([type(model.decode_head).__name__, type(model.decode_head.loss_decode).__name__]))
"""


def test_config_plugin_on_0_30_0_writes_a_config_mmcv_loads_with_the_plugin_heads(tmp_path, pristine, python_0x):
    src = pristine("0.30.0") / "configs/pspnet/pspnet_r50-d8_512x1024_40k_cityscapes.py"
    out = tmp_path / "reward.py"
    result = run_cli_process("config", src, "--plugin", "-o", out, cwd=tmp_path, python=python_0x)
    assert result.returncode == 0, result.stderr
    assert "installed at " in out.read_text() and "custom_imports" in result.stdout
    code = BUILD_0X.replace("sys.argv[1]", repr(str(out))).replace("SyncBN", "BN")
    built = json.loads(last_line(run(code + "", tmp_path, python=python_0x)))
    assert built == ["RewardPSPHead", "CrossEntropyRewardLoss"]
