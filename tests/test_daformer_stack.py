"""The domain-adaptation family's own stack, end to end: Python 3.8, torch 1.7.1, mmcv-full 1.3.7.

DAFormer, HRDA, MIC and SePiCo pin that stack; their users train in it. `make setup-daformer`
builds it (.venv-daformer: mmcv-full 1.3.7 with its ops from its sdist, cached like the other
mmcv wheels; mmsegmentation 0.16.0 installed for plugin mode; rewardpatch itself) and `make
test` names its interpreter in REWARDPATCH_DAFORMER_PYTHON. Here, with that interpreter: apply
and revert a DAFormer-style 0.16.0 fork the tests build (byte for byte, as this interpreter's
apply), a training step with `seg_weight` through a reward head in every mode with the numbers
of the current stack (torch 2.13) on identical inputs, `verify` (both stages), and plugin mode
beside the installed MMSeg.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import forks
from conftest import IN_CI, REPO, copy_checkout, git_status, run_cli, run_cli_process
from rewardpatch.planning import plan_apply
from rewardpatch.tree import MMSegTree
from test_mmseg_0x import snapshot

WORKERS = Path(__file__).resolve().parent / "workers"
pytestmark = pytest.mark.stack  # every test runs the DAFormer stack's interpreter


@pytest.fixture(scope="session")
def python_daformer() -> str:
    """The DAFormer stack's interpreter; missing: a skip outside CI, a failure in CI."""
    python = os.environ.get("REWARDPATCH_DAFORMER_PYTHON", "")
    problem = None
    if not python or not Path(python).is_file():
        problem = f"REWARDPATCH_DAFORMER_PYTHON={python!r} names no interpreter"
    else:
        probe = subprocess.run([python, "-c", "import torch, mmcv.ops; print(torch.__version__, mmcv.__version__)"],
                               capture_output=True, text=True)
        if probe.returncode != 0:
            problem = f"{python} lacks torch or mmcv-full with ops: {(probe.stderr.strip().splitlines() or ['?'])[-1]}"
        elif probe.stdout.split()[-2:] != ["1.7.1", "1.3.7"]:  # mmcv may print a CUDA note first
            problem = f"{python} is not the DAFormer stack (torch, mmcv-full: {probe.stdout.strip()})"
    if problem:
        if IN_CI:
            pytest.fail(f"the DAFormer stack is missing in CI ({problem})")
        pytest.skip(f"DAFormer stack not available ({problem}); `make test` sets it up")
    return python


def run_in(python: str, *args, cwd: Path, path=()) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [*path, REPO])), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([python, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture
def daformer(tmp_path) -> Path:
    return forks.daformer_0x(copy_checkout("0.16.0", tmp_path / "daformer"))


def test_the_stack_is_the_one_the_family_pins(python_daformer, tmp_path):
    result = run_in(python_daformer, "-c", (
        "import sys, torch, mmcv, mmcv.ops, mmseg, rewardpatch; "
        "print(sys.version_info[:2], torch.__version__, mmcv.__version__, mmseg.__version__)"
    ), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "(3, 8) 1.7.1 1.3.7 0.16.0"


def test_apply_and_revert_there_write_what_they_write_here_and_give_the_fork_back(python_daformer, daformer,
                                                                                   tmp_path, capsys):
    here = forks.daformer_0x(copy_checkout("0.16.0", tmp_path / "here"))
    before = snapshot(daformer)
    applied = run_cli_process("apply", daformer, python=python_daformer, cwd=tmp_path)
    assert applied.returncode == 0, applied.stderr
    assert run_cli(capsys, "apply", here)[0] == 0
    assert snapshot(daformer) == snapshot(here)  # the same bytes, every file
    checked = run_cli_process("check", daformer, python=python_daformer, cwd=tmp_path)
    assert checked.returncode == 0 and checked.stdout.startswith("ok:"), checked.stderr
    reverted = run_cli_process("revert", daformer, python=python_daformer, cwd=tmp_path)
    assert reverted.returncode == 0, reverted.stderr
    assert snapshot(daformer) == before and git_status(daformer) == ""


def inputs(path: Path) -> Path:
    """Logits, labels with ignored pixels, confidence weights and features, as JSON: the very
    numbers every stack reads (no generator of one torch has to match another's)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (2, 1, 16, 16), generator=generator)
    labels[:, :, :3] = 255
    data = dict(
        logits=torch.randn(2, 5, 16, 16, generator=generator).tolist(),
        labels=labels.tolist(),
        weight=torch.rand(2, 16, 16, generator=generator).tolist(),
        features=torch.randn(2, 8, 16, 16, generator=generator).tolist(),
    )
    path.write_text(json.dumps(data))
    return path


def test_a_pseudo_label_step_through_a_reward_head_in_every_mode_gives_the_current_stack_s_numbers(
    python_daformer, python_0x, daformer, tmp_path,
):
    plan_apply(MMSegTree.open(daformer)).execute()
    data = inputs(tmp_path / "inputs.json")
    results = {}
    for name, python, relax in (("daformer", python_daformer, ()), ("current", python_0x, ("1.4.0",))):
        out = tmp_path / f"{name}.json"
        result = run_in(python, WORKERS / "daformer_numbers.py", daformer, data, out, *relax, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        results[name] = json.loads(out.read_text())
    old, new = results["daformer"], results["current"]
    assert (old["python"][:3], old["torch"]) == ("3.8", "1.7.1") and new["torch"].startswith("2.")
    assert [c["case"] for c in old["cases"]] == [c["case"] for c in new["cases"]]
    for ours, theirs in zip(old["cases"], new["cases"]):
        for step, (a, b) in enumerate(zip(ours["steps"], theirs["steps"])):
            assert a["losses"].keys() == b["losses"].keys(), ours["case"]
            for key in a["losses"]:
                assert abs(a["losses"][key] - b["losses"][key]) <= 1e-6 * max(1.0, abs(b["losses"][key])), \
                    (ours["case"], step, key, a["losses"][key], b["losses"][key])
            difference = max(abs(x - y) for x, y in zip(a["grad"], b["grad"]))
            assert difference <= 1e-7, (ours["case"], step, difference)
            assert any(a["grad"]), ours["case"]


def test_verify_passes_both_stages_there(python_daformer, daformer, tmp_path):
    plan_apply(MMSegTree.open(daformer)).execute()
    report_file = tmp_path / "report.json"
    result = run_cli_process("verify", daformer, "--device", "cpu", "--workdir", tmp_path / "work", "--report",
                             report_file, "--ce-iters", "20", "--iters", "8", python=python_daformer, cwd=tmp_path,
                             timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    report = json.loads(report_file.read_text())
    # mmcv-full 1.3.7 has no CPU kernel for CrissCrossAttention: CCHead itself cannot run here
    skipped = {h["name"]: h["skipped"] for h in report["heads"] if h.get("skipped")}
    assert list(skipped) == ["RewardCCHead"] and "ca is not implemented on the CPU" in skipped["RewardCCHead"]
    assert "SKIPPED RewardCCHead" in result.stderr and ", 1 skipped" in result.stdout
    checked = [h for h in report["heads"] if not h.get("skipped")]
    assert len(checked) >= 20 and all(h["ok"] for h in checked), [h for h in checked if not h["ok"]]
    weighted = {h["name"]: h["pixel_weight"] for h in checked}
    assert weighted.pop("RewardOCRHead") is None  # the fork's cascade head takes no seg_weight
    assert set(weighted.values()) == {"seg_weight"}
    fine = report["finetune"]
    assert fine["ok"], fine["error"]
    assert (fine["ce_iters"], fine["iters"]) == (20, 8) and len(fine["reward_mean"]) == 8


PLUGIN_NUMBERS = """
import json, sys, torch
{setup}
import mmseg.models
from mmseg.models import build_head
out = dict(mmseg=mmseg.__file__)
for mode in ('local', 'reinforce', 'weighted_ce'):
    torch.manual_seed(0)
    head = build_head(dict(type='RewardFCNHead', in_channels=8, channels=4, num_classes=5,
                           reward_cfg=dict(mode=mode)))
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 16, 16, generator=generator).requires_grad_()
    labels = torch.randint(0, 5, (2, 1, 16, 16), generator=generator)
    labels[0, :, :3] = 255
    torch.manual_seed(2)
    losses = head.losses(logits, labels)
    sum(v for k, v in losses.items() if k.startswith('loss')).backward()
    out[mode] = dict(losses={{k: float(v) for k, v in sorted(losses.items())}}, grad=logits.grad.flatten().tolist())
print(json.dumps(out))
"""


def test_plugin_mode_beside_the_installed_mmseg_gives_the_patched_tree_s_numbers(python_daformer, tmp_path):
    tree = copy_checkout("0.16.0", tmp_path / "mmsegmentation")
    plan_apply(MMSegTree.open(tree)).execute()
    listed = run_cli_process("list-heads", "--installed", python=python_daformer, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "MMSegmentation 0.16.0 installed at" in listed.stdout and "plugin mode" in listed.stdout
    plugin = run_in(python_daformer, "-c", PLUGIN_NUMBERS.format(setup="import mmseg, rewardpatch.plugin"),
                    cwd=tmp_path)
    assert plugin.returncode == 0, plugin.stderr[-3000:]
    patched = run_in(python_daformer, "-c", PLUGIN_NUMBERS.format(setup="import mmseg"), cwd=tree, path=[tree])
    assert patched.returncode == 0, patched.stderr[-3000:]
    ours, theirs = json.loads(plugin.stdout.splitlines()[-1]), json.loads(patched.stdout.splitlines()[-1])
    assert not Path(ours.pop("mmseg")).is_relative_to(tree) and Path(theirs.pop("mmseg")).is_relative_to(tree)
    assert ours == theirs  # bit for bit: the same code, the same stack
    assert all(any(row["grad"]) for row in ours.values())


def test_config_there_writes_what_config_writes_here(python_daformer, daformer, tmp_path, capsys):
    """config reads a 0.x config with mmcv 1.x's Config where mmengine is not installed, and a
    checkpoint that torch 1.7.1 wrote, which it cannot check for weights-only loading."""
    plan_apply(MMSegTree.open(daformer)).execute()
    checkpoint = tmp_path / "ce.pth"
    saved = run_in(python_daformer, "-c", f"import torch; torch.save({{'state_dict': {{'w': torch.ones(2)}}}}, "
                   f"{str(checkpoint)!r})", cwd=tmp_path)
    assert saved.returncode == 0, saved.stderr
    source = daformer / "configs" / "fcn" / "fcn_r50-d8_512x1024_40k_cityscapes.py"
    there, here = tmp_path / "there" / "fcn_reward.py", tmp_path / "here" / "fcn_reward.py"
    result = run_cli_process("config", source, "-o", there, "--tree", daformer, "--checkpoint", checkpoint,
                             python=python_daformer, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "has no weights-only loader (torch >= 1.13): not checked; used as it is" in result.stderr
    assert "No module named 'mmengine'" not in result.stderr
    code, _, err = run_cli(capsys, "config", source, "-o", here, "--tree", daformer, "--checkpoint", checkpoint)
    assert code == 0, err
    assert there.read_text() == here.read_text()
