"""The copies a plan keeps of the texts it replaces, under APPLY_COPIES_DIR, and puts back.

apply keeps a file of someone else's it overwrites, a hand edit `--force` replaces and a
hand-made file `--adopt` takes over; revert puts each back, or keeps the hand edits it
removes under REVERT_COPIES_DIR. The copies are changes of the same plan: written with it, or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import StateError
from ..manifest import HAND_EDITED, Backup, Manifest
from ..patch_plan import PatchPlan
from ..tree import APPLY_COPIES_DIR, MMSegTree, sha256

# Where `revert --force` keeps the hand edits it removes: one folder per revert, at the tree
# root, outside the package (no later apply or check reads it) and ignored by git.
REVERT_COPIES_DIR = ".rewardpatch-reverted"


@dataclass
class Draft:
    """A plan as its steps build it, with the copies it keeps and puts back."""

    tree: MMSegTree
    manifest: Manifest | None  # the tree's, as the plan found it
    plan: PatchPlan
    backups: dict[str, Backup]  # by copy: the manifest's, and the copies this plan keeps

    def copy_aside(self, path: str, text: str, kind: str) -> str:
        """Copy `text`, which the plan replaces at `path`, under APPLY_COPIES_DIR, in the same plan; the copy's path."""
        digest = sha256(text)
        copy = f"{APPLY_COPIES_DIR}/{kind}/{path}"
        if kind == HAND_EDITED:
            copy += f".{digest[:12]}"  # each version of the hand edits apart: none overwrites another
        existing = self.tree.read(copy)
        if existing is not None and existing != text:
            raise StateError(f"{copy} already exists and is not a copy of {path}; move it away")
        self.plan.add(copy, existing, text, note=f"copy of {path}")
        self.backups[copy] = Backup(path, copy, digest, kind)
        return copy

    def restore(self, backup: Backup) -> str:
        """The kept bytes of `backup.path`; the plan removes their copy."""
        text = self.tree.read(backup.copy)
        if text is None or sha256(text) != backup.sha256:
            state = "missing" if text is None else "changed"
            raise StateError(f"cannot put back {backup.path}: its copy {backup.copy} is {state}")
        self.plan.add(backup.copy, text, None, note=f"copy of {backup.path}, put back")
        del self.backups[backup.copy]
        return text


def kept_folder(tree: MMSegTree) -> str:
    """A fresh `REVERT_COPIES_DIR/<UTC timestamp>` folder name for this revert's hand edits."""
    from datetime import datetime, timezone

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder, n = f"{REVERT_COPIES_DIR}/{stamp}", 1
    while tree.path(folder).exists():
        n += 1
        folder = f"{REVERT_COPIES_DIR}/{stamp}-{n}"
    return folder
