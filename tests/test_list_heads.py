"""list-heads: static verdicts on real MMSeg checkouts, without importing torch."""

import json
import subprocess
import sys

import pytest

from conftest import run_cli_process
from rewardpatch.head_index import COMPATIBLE, INCOMPATIBLE, PATCHED
from rewardpatch.planning import list_heads
from rewardpatch.tree import MMSegTree

COMPATIBLE_BOTH = {
    "ANNHead", "APCHead", "ASPPHead", "CCHead", "DAHead", "DMHead", "DNLHead", "DPTHead",
    "DepthwiseSeparableASPPHead", "DepthwiseSeparableFCNHead", "EMAHead", "EncHead", "FCNHead",
    "FPNHead", "GCHead", "ISAHead", "LRASPPHead", "LightHamHead", "NLHead", "OCRHead", "PSAHead",
    "PSPHead", "SETRMLAHead", "SETRUPHead", "SegformerHead", "SegmenterMaskTransformerHead",
    "UPerHead",
}
OWN_LOSS_BOTH = {"STDCHead", "PIDHead", "PointHead", "IterativeDecodeHead"}
OWN_LOSS_122 = {"DDRHead", "VPDDepthHead", "SideAdapterCLIPHead"}
OTHER_PACKAGE = {"MaskFormerHead", "Mask2FormerHead"}
NOT_HEADS = {"KernelUpdateHead", "KernelUpdator"}


def verdicts(path):
    return {h.name: h for h in list_heads(MMSegTree.open(path))}


@pytest.mark.parametrize("version", ["1.0.0", "1.2.2"])
def test_every_registered_head_gets_the_expected_verdict(pristine, version):
    heads = verdicts(pristine(version))
    own_loss = OWN_LOSS_BOTH | (OWN_LOSS_122 if version == "1.2.2" else set())
    assert set(heads) == COMPATIBLE_BOTH | own_loss | OTHER_PACKAGE | NOT_HEADS
    assert {n for n, h in heads.items() if h.status == COMPATIBLE} == COMPATIBLE_BOTH
    for name in own_loss:
        assert heads[name].status == INCOMPATIBLE
        assert "the reward loss would never run" in heads[name].reason
    for name in OTHER_PACKAGE:
        assert "mmdet" in heads[name].reason
    for name in NOT_HEADS:
        assert heads[name].reason.startswith("not a decode head")


def test_heads_that_delegate_their_loss_to_super_are_compatible(pristine):
    heads = verdicts(pristine("1.2.2"))
    assert heads["DAHead"].status == COMPATIBLE
    assert heads["EncHead"].status == COMPATIBLE


def test_a_head_that_hands_derived_targets_to_super_is_incompatible(pristine):
    stdc = verdicts(pristine("1.2.2"))["STDCHead"]
    assert stdc.status == INCOMPATIBLE
    assert "STDCHead.loss_by_feat" in stdc.reason


def test_base_chains_are_resolved_across_files(pristine):
    heads = verdicts(pristine("1.2.2"))
    assert heads["CCHead"].chain == ("FCNHead", "BaseDecodeHead")
    assert heads["DepthwiseSeparableASPPHead"].chain == ("ASPPHead", "BaseDecodeHead")
    assert heads["OCRHead"].chain == ("BaseCascadeDecodeHead",)
    assert heads["CCHead"].reward_name == "RewardCCHead"


def test_a_head_deriving_from_an_incompatible_head_inherits_the_verdict(tree):
    path = tree / "mmseg/models/decode_heads/stdc_head.py"
    path.write_text(
        path.read_text()
        + "\n\n@MODELS.register_module()\nclass MyBoundaryHead(STDCHead):\n    pass\n"
    )
    head = verdicts(tree)["MyBoundaryHead"]
    assert head.status == INCOMPATIBLE
    assert head.reason.startswith("inherits from STDCHead")


def test_patched_heads_are_reported_as_patched(tree):
    from rewardpatch.planning import ApplyOptions, plan_apply

    plan_apply(MMSegTree.open(tree), ApplyOptions(heads=("CCHead",))).execute()
    heads = verdicts(tree)
    assert heads["CCHead"].status == PATCHED
    assert heads["FCNHead"].status == PATCHED  # generated too, as CCHead's base
    assert heads["ASPPHead"].status == COMPATIBLE
    assert not any(name.startswith("Reward") for name in heads)


def test_json_output_has_the_documented_keys(pristine):
    result = run_cli_process("list-heads", pristine("1.2.2"), "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {"name", "file", "base", "status", "reason", "reward_name"} <= set(rows[0])
    fcn = next(r for r in rows if r["name"] == "FCNHead")
    assert fcn == {
        "name": "FCNHead", "file": "mmseg/models/decode_heads/fcn_head.py", "base": "BaseDecodeHead",
        "chain": ["BaseDecodeHead"], "status": "compatible", "reason": None, "reward_name": "RewardFCNHead",
        "registered_as": [], "notes": [], "condition": None, "condition_args": None,
    }


def test_list_heads_never_imports_torch_or_libcst(pristine):
    code = (
        "import sys; from rewardpatch.cli import main; main(['list-heads', sys.argv[1]]);"
        "assert 'torch' not in sys.modules and 'libcst' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code, str(pristine("1.2.2"))], check=True, capture_output=True)
