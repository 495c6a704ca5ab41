"""check's problem list: what the manifest's records say is wrong with the tree, then every
way it differs from the plan apply would write now (apply.py, for the same heads).

Nothing here writes, and nothing asks git: check reads the tree alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import __version__, treefs
from ..errors import StateError
from ..import_graph import imports_of_files, parse_python, sibling_path, unbound_imports, unresolved_imports
from ..manifest import HEAD_FILE, TEMPLATE_FILE, Manifest
from ..notice import Notices
from ..tree import APPLY_COPIES_DIR, MANIFEST_NAME, MMSegTree, sha256
from .apply import ApplyOptions, Purpose, plan_apply_with_manifest
from .revert import line_before


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a tree, as check reports it; `kind` names its sort."""

    path: str | None
    kind: str
    message: str

    def as_json(self) -> dict:
        return {"path": self.path, "kind": self.kind, "message": self.message}


def check_tree(tree: MMSegTree, manifest: Manifest | None, notices: Notices | None = None) -> list[Problem]:
    """Every way the tree differs from what apply would write for the heads its `manifest`
    (read by the caller) records.

    As `black --check` does, it computes the very plan apply writes and reports each
    difference, so a changed generator or template shows even where the manifest's hashes
    agree; the problems it can name more precisely (missing, hand-edited, stale, a missing
    export, an unbound import, a changed copy) are named so, once per file.
    """
    if manifest is None:
        return [Problem(None, "not-patched", f"not patched (no {MANIFEST_NAME}); run `rewardpatch apply`")]
    problems = _recorded_problems(tree, manifest)
    try:
        plan = plan_apply_with_manifest(
            tree, manifest, ApplyOptions(tuple(manifest.heads) or None, purpose=Purpose.CHECK), notices
        )
    except StateError as exc:  # named above already when there is a problem: its cause, as a rule
        return problems or [Problem(None, "refused", f"apply would refuse: {exc}")]
    named = {p.path for p in problems}
    for change in plan.changes:
        if change.path in named or change.path.startswith(f"{APPLY_COPIES_DIR}/"):
            continue  # named already, or a copy apply --force would keep of a file named already
        if change.path == MANIFEST_NAME and problems:
            continue  # it records the files named above
        problems.append(Problem(change.path, "drift", _drift_message(change.path, change.action, manifest)))
    return problems


def _recorded_problems(tree: MMSegTree, manifest: Manifest) -> list[Problem]:
    """What the manifest's hashes and records say is wrong with the tree."""
    from ..codemods.export_record import missing_exports

    problems = []
    templates = {s.source: s for s in tree.generation.templates}
    for path, record in sorted(manifest.created().items()):
        current = tree.read(path)
        if current is None:
            problems.append(Problem(path, "missing", f"{path}: missing"))
            continue
        if sha256(current) != record.sha256:
            problems.append(Problem(path, "hand-edited", f"{path}: hand-edited since apply"))
        if record.kind == HEAD_FILE:
            # the manifest is untrusted: a head file's record that names no source is refused
            # (Unsafe) by the check tree.read makes of every path, made here first
            source = tree.read(treefs.relative(record.source, "a path"))
            if source is None:
                problems.append(Problem(path, "stale", f"{path}: its source {record.source} is gone"))
            elif sha256(source) != record.source_sha256:
                problems.append(
                    Problem(
                        path, "stale", f"{path}: stale, {record.source} changed since apply; run `rewardpatch apply`"
                    )
                )
        elif record.kind == TEMPLATE_FILE:
            spec = templates.get(record.source) if record.source is not None else None
            if spec is None or spec.sha256 != record.source_sha256:
                problems.append(
                    Problem(path, "stale", f"{path}: stale, template {record.source} changed; run `rewardpatch apply`")
                )
    for backup in manifest.backups:
        current = tree.read(backup.copy)
        if current is None or sha256(current) != backup.sha256:
            state = "missing" if current is None else "changed"
            problems.append(
                Problem(
                    backup.copy, "backup", f"{backup.copy}: {state}, the copy of {backup.path} kept by apply --force"
                )
            )

    for path in sorted(manifest.created()):
        current = tree.read(path)
        if current is not None and path.endswith(".py"):
            for problem in unresolved_imports(path, current, tree.read):
                problems.append(Problem(path, "unresolved-import", problem))

    def managed(module: str) -> str | None:  # the modules whose names check vouches for
        return tree.read(module) if module in manifest.files else None

    for path, record in sorted(manifest.edited().items()):
        current = tree.read(path)
        if current is None:
            problems.append(Problem(path, "missing", f"{path}: missing"))
            continue
        parse_python(current, path)
        assert record.exports is not None  # an edited file's record has them (FileRecord.from_json)
        for what in missing_exports(current, record.exports):
            problems.append(Problem(path, "missing-export", f"{path}: missing {what}"))
        problems += unrevertable_imports(tree, manifest, path, current)
        for stem, names in unbound_imports(path, current, managed):
            module = sibling_path(path, stem)
            problems.append(
                Problem(
                    path,
                    "unbound-import",
                    f"{path}: imports {', '.join(names)} from .{stem}, which {module} does not define",
                )
            )
    return problems


def unrevertable_imports(tree: MMSegTree, manifest: Manifest, path: str, current: str) -> list[Problem]:
    """The imports of `path` (an `__init__` apply edited) that revert would leave pointing
    at a module it removes."""
    from ..codemods.exports import remove_exports

    record = manifest.files[path]
    removed = {p for p in manifest.created() if p.endswith(".py") and p not in manifest.originals()}
    after = remove_exports(current, record.exports) if record.exports else current
    return [
        Problem(path, "unrevertable-import",
                f"{path}:{line_before(current, after, line)}: imports from {module} in a form revert cannot take out; "
                "restore the line apply wrote")
        for line, module in imports_of_files(path, after, removed)
    ]


def _drift_message(path: str, action: str, manifest: Manifest) -> str:
    """What check says of a file where the plan apply would write now differs from the tree."""
    if path == MANIFEST_NAME and manifest.tool_version != __version__:
        return f"{path}: written by rewardpatch {manifest.tool_version}, not {__version__}; run `rewardpatch apply`"
    if path == MANIFEST_NAME:
        return f"{path}: differs from what apply would record now; run `rewardpatch apply`"
    if action == "create":
        return f"{path}: missing from the patch; run `rewardpatch apply`"
    if action == "remove":
        return f"{path}: no longer part of the patch; run `rewardpatch apply`"
    return f"{path}: differs from what rewardpatch {__version__} writes; run `rewardpatch apply`"
