"""A patched tree imports: mmseg.models loads and every generated Reward head is registered."""

from conftest import copy_checkout, run_python
from rewardpatch.manifest import Manifest
from rewardpatch.planning import plan_apply
from rewardpatch.tree import MMSegTree


def test_every_generated_reward_head_is_in_the_registry(patched_tree):
    from mmseg.registry import MODELS

    expected = Manifest.load(MMSegTree.open(patched_tree)).reward_classes
    assert len(expected) == 27
    missing = sorted(name for name in expected if MODELS.get(name) is None)
    assert missing == []
    for name in ("CrossEntropyRewardLoss", "IoUMetricLoss"):
        assert MODELS.get(name) is not None


def test_the_reward_classes_come_from_the_tree(patched_tree):
    import mmseg.models.decode_heads as heads

    assert heads.RewardASPPHead.__module__ == "mmseg.models.decode_heads.reward_aspp_head"
    assert heads.RewardASPPHead.__mro__[1].__name__ == "RewardDecodeHead"
    assert heads.RewardCCHead.__mro__[1] is heads.RewardFCNHead
    assert heads.__file__.startswith(str(patched_tree))


def test_a_patched_1_0_0_tree_imports_with_its_reward_heads(tmp_path, stack):
    tree = copy_checkout("1.0.0", tmp_path / "mmsegmentation")
    plan_apply(MMSegTree.open(tree)).execute()
    # 1.0.0 asserts mmcv < 2.1.0; this stack has 2.1.0 (the only mmcv built here), whose
    # API 1.0.0 uses unchanged, so the version check is relaxed for this import only.
    code = (
        "import mmcv; mmcv.__version__ = '2.0.1'\n"
        "import mmseg, mmseg.models\n"
        "from mmseg.registry import MODELS\n"
        "assert mmseg.__version__ == '1.0.0' and mmseg.__file__.startswith(%r)\n"
        "names = [n for n in MODELS.module_dict if n.startswith('Reward')]\n"
        "print(len(names))\n" % str(tree)
    )
    result = run_python(code, tree)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "27"
