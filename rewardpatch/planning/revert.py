"""revert's plan: apply's steps undone, in the same order (the files apply created, the hand
edits it kept, the exports it added, the hand-made files it took over), then the refusals,
the kept hand edits and the manifest's removal.

Nothing here writes: the plan is printed (dry run) or executed (engine.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import StateError
from ..import_graph import imports_of_files, parse_python
from ..manifest import HAND_EDITED, ORIGINAL, Backup, Manifest, require_patched
from ..patch_plan import PatchPlan
from ..tree import APPLY_COPIES_DIR, MANIFEST_NAME, MMSegTree, sha256
from .copies import REVERT_COPIES_DIR, Draft, kept_folder


@dataclass
class RevertDraft(Draft):
    """The plan of revert as its steps build it, and the hand edits it removes."""

    manifest: Manifest  # revert needs a patched tree
    force: bool = False
    originals: dict[str, Backup] = field(default_factory=dict)  # the manifest's copies of replaced files, by path
    edited: list[str] = field(default_factory=list)  # hand-edited files the plan removes
    kept: list[tuple[str, str, str]] = field(default_factory=list)  # (name under the kept folder, text, what it is)


def plan_revert(tree: MMSegTree, force: bool = False) -> PatchPlan:
    """The plan that takes the patch out of `tree` again, as its manifest records it; `force`
    removes hand-edited files too (kept under REVERT_COPIES_DIR)."""
    manifest = require_patched(tree, "nothing to revert")
    draft = RevertDraft(tree, manifest, PatchPlan(tree), {b.copy: b for b in manifest.backups},
                        force=force, originals=manifest.originals())
    _revert_created(draft)
    _revert_kept_hand_edits(draft)
    _refuse_hand_edits(draft)
    _revert_exports(draft)
    _revert_adopted_removals(draft)
    _refuse_dangling_imports(draft.plan, manifest)
    _keep_hand_edits(draft)
    draft.plan.add(MANIFEST_NAME, tree.read(MANIFEST_NAME), None, note="manifest")
    return draft.plan


def _revert_created(draft: RevertDraft) -> None:
    """Each file apply created: removed, or the file it replaced put back; a hand-edited one
    is noted, to be refused or kept."""
    tree, plan = draft.tree, draft.plan
    for path, record in sorted(draft.manifest.created().items()):
        current = tree.read(path)
        original = draft.originals.get(path)
        after = draft.restore(original) if original else None
        if current is None and after is None:
            plan.notes.append(f"{path} was already removed")
            continue
        if current is not None and sha256(current) != record.sha256:
            draft.edited.append(path)
            draft.kept.append((path, current, f"hand edits of {path}"))
        plan.add(path, current, after, note=record.kind if after is None else "your file, put back")


def _revert_kept_hand_edits(draft: RevertDraft) -> None:
    """The copies of hand edits that apply --force replaced: removed, to be refused or kept."""
    hand_edited = f"{APPLY_COPIES_DIR}/{HAND_EDITED}/"
    for copy, backup in sorted(draft.backups.items()):
        if backup.kind == HAND_EDITED:
            draft.edited.append(copy)
            text = draft.tree.read(copy)
            if text is not None:
                kept_as = copy[len(hand_edited):] if copy.startswith(hand_edited) else copy
                draft.kept.append((kept_as, text, f"hand edits of {backup.path}"))
            draft.plan.add(copy, text, None, note=f"hand edits of {backup.path}")


def _refuse_hand_edits(draft: RevertDraft) -> None:
    """Refuse to remove hand edits without --force."""
    if draft.edited and not draft.force:
        raise StateError(
            f"hand-edited generated file(s): {', '.join(draft.edited)}; use --force to remove them anyway "
            f"(they are kept under {REVERT_COPIES_DIR}/)"
        )


def _revert_exports(draft: RevertDraft) -> None:
    """Each `__init__` apply edited: its exports taken out, or the file as it was put back
    where apply --adopt replaced its hand-made imports (refused without --force if it changed since)."""
    from ..codemods.exports import remove_exports

    tree, plan = draft.tree, draft.plan
    for path, record in sorted(draft.manifest.edited().items()):
        exports = record.exports
        assert exports is not None  # an edited file's record has them (FileRecord.from_json)
        current = tree.read(path)
        if current is None:
            plan.notes.append(f"{path} is missing: nothing to take out of it")
            continue
        parse_python(current, path)
        original = draft.originals.get(path)  # the hand-made imports apply --adopt replaced
        if original is not None and sha256(current) == record.sha256:
            plan.add(path, current, draft.restore(original), note="your file, put back")
            continue
        if original is not None:
            if not draft.force:
                raise StateError(
                    f"{path} changed since apply --adopt replaced its hand-made imports (kept at "
                    f"{original.copy}); use --force to take out only rewardpatch's exports"
                )
            draft.kept.append((path, draft.restore(original), f"{path} before apply --adopt"))
            plan.add(path, current, remove_exports(current, exports), note="exports")
            plan.notes.append(f"{path}: the hand-made imports apply --adopt replaced are not put back")
            continue
        plan.add(path, current, remove_exports(current, exports), note="exports")


def _revert_adopted_removals(draft: RevertDraft) -> None:
    """Each hand-made file apply --adopt removed, put back; refused where a file stands there again."""
    for copy, backup in sorted(draft.backups.items()):
        if backup.kind == ORIGINAL:
            current = draft.tree.read(backup.path)
            text = draft.restore(backup)
            if current is not None and current != text:
                raise StateError(
                    f"{backup.path} exists again; move it away so that revert can put back the file "
                    f"apply --adopt removed (kept at {copy})"
                )
            draft.plan.add(backup.path, current, text, note="your file, put back")


def _refuse_dangling_imports(plan: PatchPlan, manifest: Manifest) -> None:
    """Refuse a revert after which an `__init__` still imports a module the revert removes:
    `import mmseg.models` would break (an import of ours spelt in a way remove_exports does
    not recognise, or one a user added)."""
    removed = {c.path for c in plan.changes if c.after is None and c.path.endswith(".py")}
    after = {c.path: c.after for c in plan.changes}
    for path in sorted(manifest.edited()) if removed else ():
        current = plan.tree.read(path)
        text = after[path] if path in after else current
        if text is None:
            continue
        for line, module in imports_of_files(path, text, removed):
            line = line_before(current or "", text, line)
            raise StateError(
                f"{path}:{line}: imports from {module}, which revert removes, in a form revert "
                "cannot take out; delete that import (or restore the line apply wrote) and revert again"
            )


def _keep_hand_edits(draft: RevertDraft) -> None:
    """The hand edits revert --force removes, kept in a fresh folder under REVERT_COPIES_DIR that git ignores."""
    if not draft.kept:
        return
    plan = draft.plan
    folder = kept_folder(draft.tree)
    plan.add(f"{folder}/.gitignore", None, "# hand edits `rewardpatch revert --force` removed\n*\n",
             note="keeps the folder out of git")
    for name, text, what in draft.kept:
        plan.add(f"{folder}/{name}", None, text, note=f"{what}, kept")
    plan.notes.append(f"{len(draft.kept)} hand-edited file(s) removed by revert --force are kept in {folder}/")


def line_before(before: str, after: str, line: int) -> int:
    """The number in `before` of line `line` of `after`, a text made from `before` by taking
    lines out (remove_exports): the same text, as many times over above it."""
    lines = after.splitlines()
    if not 0 < line <= len(lines):
        return line
    target, seen = lines[line - 1], lines[: line - 1].count(lines[line - 1])
    for number, text in enumerate(before.splitlines(), 1):
        if text == target:
            if not seen:
                return number
            seen -= 1
    return line
