"""A patched MMSeg 1.2.2 checkout for benchmarks, imported first on sys.path."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from rewardpatch.checkout import cache_dir, pristine
from rewardpatch.planning import ApplyOptions, plan_apply
from rewardpatch.tree import MMSegTree


def import_patched_mmseg(version: str = "1.2.2") -> Path:
    """Patch a cached copy of the checkout (once) and import mmseg.models from it."""
    tree = cache_dir() / "bench" / f"mmsegmentation-{version}-patched"
    if tree.exists() and not (tree / ".rewardpatch.json").exists():
        shutil.rmtree(tree)
    if not tree.exists():
        shutil.copytree(pristine(version), tree, symlinks=True)
    plan = plan_apply(MMSegTree.open(tree), ApplyOptions(allow_dirty=True, force=True))
    if not plan.empty:
        plan.execute()
    sys.path.insert(0, str(tree))
    import mmseg.models  # noqa: F401

    return tree
