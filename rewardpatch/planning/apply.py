"""apply's plan: what the tree holds set against what apply writes (desired.py), step by
step, then the refusals, then the new manifest.

Nothing here writes: the plan is printed (dry run), compared (check) or executed (engine.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import PurePosixPath

from .. import gitstate
from ..adopt import Adoption, Takeover, find_hand_made_files
from ..errors import InputError, StateError
from ..import_graph import parse_python, sibling_path, unbound_imports, unresolved_imports
from ..manifest import CREATED, EDITED, EXPORTS_FILE, HAND_EDITED, HEAD_FILE, ORIGINAL, FileRecord, Manifest
from ..naming import is_generated
from ..notice import Notices
from ..patch_plan import PatchPlan
from ..tree import MANIFEST_NAME, MMSegTree, sha256
from .copies import Draft
from .desired import Desired, Files, desired_for, select_heads
from .state import load_state


class Purpose(Enum):
    """What a plan of apply is for; it decides which refusals apply."""

    APPLY = "apply"  # to be written: every refusal
    DRY_RUN = "dry-run"  # shown as a diff, written nowhere: git is not asked about uncommitted changes
    CHECK = "check"  # compared with the tree by `check`, which reports conflicts and hand edits itself


@dataclass(frozen=True)
class ApplyOptions:
    """How apply plans, as the command line asked: one object handed down (as black's Mode is)."""

    heads: tuple[str, ...] | None = None  # --heads; None: every compatible head
    force: bool = False
    allow_dirty: bool = False
    adopt: bool = False
    purpose: Purpose = Purpose.APPLY

    @property
    def refuses_conflicts(self) -> bool:
        """Whether a file apply does not own, or a hand-edited generated one, stops the plan."""
        return not self.force and self.purpose is not Purpose.CHECK

    @property
    def refuses_dirty(self) -> bool:
        """Whether target files with uncommitted changes stop the plan."""
        return not self.allow_dirty and self.purpose is Purpose.APPLY


@dataclass
class ApplyDraft(Draft):
    """The plan of apply as its steps build it, and what the new manifest will record."""

    records: dict[str, FileRecord] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)  # files at target paths apply does not own
    edited: list[str] = field(default_factory=list)  # generated files edited by hand

    @property
    def previous(self) -> dict[str, FileRecord]:
        """The files the tree's manifest records: an earlier apply's, by path."""
        return self.manifest.files if self.manifest else {}


def plan_apply(tree: MMSegTree, options: ApplyOptions = ApplyOptions(), notices: Notices | None = None) -> PatchPlan:
    """The plan that patches `tree`; `options.adopt` takes over a patch made by hand first (adopt.py)."""
    return plan_apply_with_manifest(tree, Manifest.load(tree), options, notices)


def plan_apply_with_manifest(
    tree: MMSegTree, manifest: Manifest | None, options: ApplyOptions, notices: Notices | None,
) -> PatchPlan:
    """plan_apply, for a tree whose manifest the caller has read (check reads it once)."""
    hand_made = find_hand_made_files(tree, manifest, options.adopt)
    state = load_state(tree, manifest, hand_made.paths, notices=notices)
    if state.index.api.problem:
        raise StateError(f"cannot patch this tree: {state.index.api.problem}")
    selected = sorted(set(select_heads(state.index, manifest, options.heads)) | set(hand_made.heads(state.index)))
    desired = desired_for(state.index, selected)
    draft = ApplyDraft(tree, manifest, PatchPlan(tree, notes=desired.notes, heads=selected),
                       {b.copy: b for b in manifest.backups} if manifest else {})
    _plan_created(draft, desired.files, hand_made)
    _plan_no_longer_generated(draft, desired.files)
    _plan_adopted_removals(draft, desired.files, hand_made)
    _plan_exports(draft, desired, hand_made)
    _refuse_unresolved_imports(tree, draft.plan, desired.files)
    hand_made.note(draft.plan)
    _refuse(draft, options)
    _plan_manifest(draft, selected)
    return draft.plan


def _take_over(draft: ApplyDraft, takeover: Takeover) -> None:
    """Carry out what `apply --adopt` does to a hand-made text (adopt.Takeover): keep it under
    APPLY_COPIES_DIR/original/, remove the file where it asks, and say so in the plan."""
    assert takeover.text is not None  # a hand-made file find_hand_made read: it stands in the tree
    copy = draft.copy_aside(takeover.path, takeover.text, ORIGINAL)
    if takeover.removed:
        draft.plan.add(takeover.path, takeover.text, None, note="made by hand, adopted")
    draft.plan.adopted.append(takeover.said(copy))


def _plan_created(draft: ApplyDraft, files: Files, hand_made: Adoption) -> None:
    """Each file apply creates; a file of someone else's at its path is kept under APPLY_COPIES_DIR."""
    for path, (text, record) in files.items():
        current = draft.tree.read(path)
        owned = draft.previous.get(path)
        takeover = hand_made.replaced(path, current)
        if takeover is not None:
            _take_over(draft, takeover)
        elif current is not None and current != text:
            if owned is None:
                draft.conflicts.append(path)
                draft.copy_aside(path, current, ORIGINAL)
            elif sha256(current) != owned.sha256:
                draft.edited.append(path)
                draft.copy_aside(path, current, HAND_EDITED)
        draft.plan.add(path, current, text, note=", ".join(record.classes) if record.kind == HEAD_FILE else "template")
        draft.records[path] = record


def _plan_no_longer_generated(draft: ApplyDraft, files: Files) -> None:
    """The files an earlier apply created that this one does not: removed, or the file they replaced put back."""
    originals = draft.manifest.originals() if draft.manifest else {}
    for path, owned in draft.previous.items():
        if owned.action == CREATED and path not in files:
            current = draft.tree.read(path)
            if current is not None and sha256(current) != owned.sha256:
                draft.edited.append(path)
                draft.copy_aside(path, current, HAND_EDITED)
            original = originals.get(path)
            after = draft.restore(original) if original else None
            draft.plan.add(path, current, after, note="no longer generated")


def _plan_adopted_removals(draft: ApplyDraft, files: Files, hand_made: Adoption) -> None:
    """Each hand-made file apply does not write, removed (kept under APPLY_COPIES_DIR/original/):
    its Reward<X> is generated in another file now."""
    for takeover in hand_made.removed(draft.tree, files):
        _take_over(draft, takeover)


def _plan_exports(draft: ApplyDraft, desired: Desired, hand_made: Adoption) -> None:
    """The imports and `__all__` names apply adds to each `__init__`, added to the file as it
    would be without them (an earlier patch's taken out first)."""
    from ..codemods.exports import add_exports, remove_exports, undo_unrecorded_exports

    tree, files = draft.tree, desired.files
    for init, imports in desired.exports.items():
        current = tree.read(init)
        if current is None:
            raise InputError(f"{init} is missing: not a complete MMSegmentation {tree.version} tree")
        parse_python(current, init)  # one line naming file:line, rather than libcst's report
        owned = draft.previous.get(init)
        pristine = remove_exports(current, owned.exports) if owned and owned.exports else current
        if owned is None:  # imports an earlier patch added, its manifest lost: recorded again, not missed
            earlier = {
                stem for stem in (PurePosixPath(p).stem for p in files)
                if sibling_path(init, stem) in files and is_generated(tree.read(sibling_path(init, stem)) or "")
            }
            ours = [(stem, group) for stem, group in imports if stem in earlier]
            stripped = undo_unrecorded_exports(pristine, ours, [n for _, g in ours for n in g]) if ours else pristine
            if stripped != pristine:
                draft.plan.notes.append(
                    f"{init}: the imports of an earlier patch whose {MANIFEST_NAME} is gone, recorded again"
                )
                pristine = stripped
        pristine, takeover = hand_made.dropped_imports(init, pristine)
        if takeover is not None:
            _take_over(draft, takeover)
        names = [n for _, group in imports for n in group]
        text, record = add_exports(pristine, imports, names)
        draft.plan.add(init, current, text, note="exports")
        draft.records[init] = FileRecord(EDITED, sha256(text), EXPORTS_FILE, exports=record)
        _refuse_unbound_imports(init, text, files)


def _refuse(draft: ApplyDraft, options: ApplyOptions) -> None:
    """Refuse what `options` do not allow: files apply does not own, hand edits, uncommitted changes."""
    conflicts, edited = draft.conflicts, draft.edited
    if conflicts and options.refuses_conflicts:
        raise StateError(
            f"{', '.join(conflicts)} already exist{'s' if len(conflicts) == 1 else ''} and "
            "was not created by rewardpatch; move it away, use --force to overwrite, or --adopt if the old "
            "recipe made it by hand"
        )
    if edited and options.refuses_conflicts:
        raise StateError(f"hand-edited generated file(s): {', '.join(edited)}; use --force to overwrite")
    if options.refuses_dirty:
        _refuse_dirty(draft.tree, draft.plan, draft.previous)


def _plan_manifest(draft: ApplyDraft, selected: list[str]) -> None:
    """The new manifest, when it differs from the tree's or anything else changes."""
    tree, manifest = draft.tree, draft.manifest
    new_manifest = Manifest(
        generation=tree.generation.name,
        mmseg_version=tree.version,
        heads=selected,
        templates={s.source: s.sha256 for s in tree.generation.templates},
        files=draft.records,
        backups=list(draft.backups.values()),
    )
    if not draft.plan.empty or manifest is None or manifest.to_text() != new_manifest.to_text():
        draft.plan.add(MANIFEST_NAME, tree.read(MANIFEST_NAME), new_manifest.to_text(), note="manifest")


def _refuse_unbound_imports(init: str, text: str, files: dict[str, tuple[str, FileRecord]]) -> None:
    """Refuse a patch after which `init` imports a name that a module apply writes lacks.

    --force does not help: overwriting such a module breaks `import mmseg.models`.
    """
    unbound = unbound_imports(init, text, lambda path: files[path][0] if path in files else None)
    if unbound:
        stem, names = unbound[0]
        them = "it" if len(names) == 1 else "them"
        raise StateError(
            f"{init} imports {', '.join(names)} from .{stem}, but the {stem}.py that apply writes "
            f"does not define {them}; import {them} from another module first"
        )


def _refuse_unresolved_imports(tree: MMSegTree, plan: PatchPlan, files: dict) -> None:
    """Refuse a patch that writes a file importing what the patched tree would not have.

    Such a file breaks `import mmseg.models`, every config of the tree with it; --force
    does not help.
    """
    after = {change.path: change.after for change in plan.changes}

    def source(path: str) -> str | None:
        return after[path] if path in after else tree.read(path)

    for path in sorted(files):
        problems = unresolved_imports(path, files[path][0], source)
        if problems:
            raise StateError(f"apply would break `import mmseg.models`: {problems[0]}")


def _refuse_dirty(tree: MMSegTree, plan: PatchPlan, previous: dict[str, FileRecord]) -> None:
    """Refuse a patch that overwrites uncommitted changes (other than an earlier apply's own)."""
    paths = [c.path for c in plan.changes if c.before is not None]
    dirty = []
    for path in sorted(gitstate.dirty_files(tree.root, paths)):
        owned = previous.get(path)
        current = tree.read(path)
        if owned is not None and current is not None and sha256(current) == owned.sha256:
            continue  # our own earlier, uncommitted edit
        dirty.append(path)
    if dirty:
        raise StateError(
            f"uncommitted changes in {', '.join(dirty)}; commit or stash them, or use --allow-dirty"
        )
