"""What the planner reads of a tree, once per command: its manifest and its heads."""

from __future__ import annotations

from dataclasses import dataclass

from ..head_index import HeadIndex, HeadInfo
from ..manifest import Manifest
from ..notice import Notices
from ..tree import MMSegTree


@dataclass(frozen=True)
class TreeState:
    """What the planner reads of a tree, once per command: its manifest and its heads."""

    manifest: Manifest | None
    index: HeadIndex


def load_state(
    tree: MMSegTree,
    manifest: Manifest | None,
    skip_files: frozenset[str] = frozenset(),
    extra: dict[str, tuple[str, str]] | None = None,
    notices: Notices | None = None,
) -> TreeState:
    """`manifest` (the tree's, read by the caller), and the index of the heads apply can copy:
    neither its own files nor `skip_files`; `extra`: modules read as if in the heads package
    (HeadIndex). The index's warnings go to `notices`, for the caller to print."""
    created = set(manifest.created()) if manifest else set()
    return TreeState(manifest, HeadIndex(tree, skip_files=created | skip_files, extra=extra, notices=notices))


def list_heads(tree: MMSegTree, notices: Notices | None = None) -> list[HeadInfo]:
    """Every registered decode head of `tree` and its verdict (what `list-heads` prints)."""
    manifest = Manifest.load(tree)
    return load_state(tree, manifest, notices=notices).index.heads(manifest.reward_classes if manifest else set())
