"""The releases before the two generations' first tested ones: MMSeg 0.6.0 to 0.10.0 (mmseg-0.x)
and 1.0.0rc0 to 1.0.0rc6 (mmseg-1.x).

Reference trees from the package index's sdists. Their decode-head bases, loss methods and
losses/__init__.py are those of 0.11.0 and 1.0.0 (the heads added later aside), so they are
ranges of the existing generations, not generations of their own: the same verdict rules,
the same patch, byte-exact revert, and verify's stage 1 in the matching stack.
"""

import pytest

from conftest import git_status, run_cli
from rewardpatch.head_index import COMPATIBLE, INCOMPATIBLE
from rewardpatch.mmseg_generations import generation_for
from rewardpatch.planning import list_heads
from rewardpatch.tree import MMSegTree
from test_list_heads import COMPATIBLE_BOTH
from test_mmseg_0x import COMPATIBLE_0X, snapshot
from test_verify_0x import stage_one_passes

# 0.6.0 to 0.9.0 have 0.11.0's heads but APCHead, DMHead and LRASPPHead (0.10.0), and none of
# 0.16.0's and later
BEFORE_0_10 = {"APCHead", "DMHead", "LRASPPHead"}
LATER_THAN_0_10 = {"DPTHead", "ISAHead", "SegformerHead", "SETRMLAHead", "SETRUPHead", "SegmenterMaskTransformerHead"}
COMPATIBLE_EARLY_0X = {
    "0.6.0": COMPATIBLE_0X - LATER_THAN_0_10 - BEFORE_0_10,
    "0.10.0": COMPATIBLE_0X - LATER_THAN_0_10,
}
# the release candidates have every head of 1.0.0 but LightHamHead and PIDHead (1.0.0), and
# before rc2 MaskFormerHead and Mask2FormerHead
OTHER_PACKAGE = {"MaskFormerHead", "Mask2FormerHead"}
INCOMPATIBLE_RC = {"IterativeDecodeHead", "PointHead", "STDCHead", "KernelUpdateHead", "KernelUpdator"}


@pytest.mark.parametrize("version", ["0.6.0", "0.10.0"])
def test_an_early_0x_release_is_of_the_0x_generation_with_its_verdicts(pristine, version):
    tree = MMSegTree.open(pristine(version))
    assert tree.generation.name == "mmseg-0.x"
    heads = {h.name: h for h in list_heads(tree)}
    assert {n for n, h in heads.items() if h.status == COMPATIBLE} == COMPATIBLE_EARLY_0X[version]
    assert {n for n, h in heads.items() if h.status == INCOMPATIBLE} == {"PointHead"}
    assert "PointHead.forward_train computes its own loss" in heads["PointHead"].reason


@pytest.mark.parametrize("version, other_package", [("1.0.0rc0", set()), ("1.0.0rc6", OTHER_PACKAGE)])
def test_a_release_candidate_is_of_the_1x_generation_with_its_verdicts(pristine, version, other_package):
    tree = MMSegTree.open(pristine(version))
    assert tree.generation.name == "mmseg-1.x"
    heads = {h.name: h for h in list_heads(tree)}
    assert {n for n, h in heads.items() if h.status == COMPATIBLE} == COMPATIBLE_BOTH - {"LightHamHead"}
    assert {n for n, h in heads.items() if h.status == INCOMPATIBLE} == INCOMPATIBLE_RC | other_package


def test_list_heads_names_the_release_candidate_and_the_supported_ranges(capsys, pristine):
    code, out, _ = run_cli(capsys, "list-heads", pristine("1.0.0rc0"))
    assert code == 0
    assert "MMSegmentation 1.0.0rc0" in out.splitlines()[0]
    assert out.splitlines()[1] == (
        "rewardpatch supports MMSegmentation 0.6.0 to 0.30.0, 1.0.0rc0 to 1.2.2 (mmseg-1.x for this tree)"
    )


@pytest.mark.parametrize("version", ["0.6.0", "0.10.0", "1.0.0rc0", "1.0.0rc6"])
def test_an_early_release_round_trips_byte_for_byte(capsys, make_tree, version):
    tree = make_tree(version)
    before = snapshot(tree)
    code, _, err = run_cli(capsys, "apply", tree)
    assert code == 0, err
    assert (tree / generation_for(version).templates[0].target).is_file()
    assert run_cli(capsys, "check", tree)[0] == 0
    assert run_cli(capsys, "apply", tree)[0] == 0  # idempotent
    assert run_cli(capsys, "revert", tree)[0] == 0
    assert snapshot(tree) == before
    assert git_status(tree) == ""


@pytest.mark.parametrize("version, highest", [("0.6.0", "1.2.0"), ("0.10.0", "1.3.0")])
def test_stage_one_passes_on_an_early_0x_release_with_its_mmcv_assert_relaxed(python_0x, tmp_path, version, highest):
    _, names = stage_one_passes(python_0x, tmp_path, version, highest)
    assert len(names) == len(COMPATIBLE_EARLY_0X[version])


@pytest.mark.parametrize("version, asserted", [("1.0.0rc4", "<= 2.0.0rc3"), ("1.0.0rc0", "< 2.1.0")])
def test_stage_one_passes_on_a_release_candidate_in_the_1x_stack(capsys, make_tree, stack, tmp_path, version,
                                                                 asserted):
    # rc4 asserts mmcv == 2.0.0rc3, an inclusive bound; the other release candidates assert
    # mmcv < 2.1.0, an exclusive one: the worker relaxes either (see docs/stacks.md, "Supported releases")
    tree = make_tree(version)
    assert run_cli(capsys, "apply", tree)[0] == 0
    report = tmp_path / "report.json"
    code, out, err = run_cli(capsys, "verify", tree, "--device", "cpu", "--skip-finetune",
                             "--workdir", tmp_path / "work", "--report", report)
    assert code == 0, out + err[-3000:]
    assert (f"rewardpatch: MMSeg {version} asserts mmcv {asserted}; verified with 2.1.0, "
            "the tree's assert relaxed for this run only") in out.splitlines()
    assert f"{len(COMPATIBLE_BOTH) - 1}/{len(COMPATIBLE_BOTH) - 1} heads passed" in out
