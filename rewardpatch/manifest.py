"""The manifest a patched tree carries: every file rewardpatch created or edited, with hashes.

It is what lets revert undo exactly the patch, check tell drift from a stale patch, and
a later apply refresh files nobody edited while refusing to overwrite files somebody did.
"""

from __future__ import annotations

import ast
import json
from dataclasses import asdict, dataclass, field

from . import __version__
from .codemods.export_record import ExportRecord
from .errors import InputError, StateError
from .tree import APPLY_COPIES_DIR, MANIFEST_NAME, MMSegTree, NotText
from .treefs import TooLarge, Unsafe, relative

SCHEMA = 1

CREATED = "create"
EDITED = "edit"

# What a recorded file is (FileRecord.kind): a reward_<x>.py generated from a head module, a
# copy of a templates/ file, or an `__init__` whose exports apply added.
HEAD_FILE = "head"
TEMPLATE_FILE = "template"
EXPORTS_FILE = "exports"

# What a backup holds: the user's own file that stood at a target path before the patch
# (revert puts it back), or a generated file's hand edits (kept, not put back).
ORIGINAL = "original"
HAND_EDITED = "hand-edited"


@dataclass
class FileRecord:
    action: str  # CREATED or EDITED
    sha256: str  # content as rewardpatch left it
    kind: str  # HEAD_FILE, TEMPLATE_FILE or EXPORTS_FILE
    source: str | None = None  # template name, or the head module the file was generated from
    source_sha256: str | None = None
    classes: list[str] = field(default_factory=list)  # what the file defines or exports
    exports: ExportRecord | None = None

    def as_json(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if v not in (None, [])}
        if self.exports is not None:
            data["exports"] = self.exports.as_json()
        return data

    @classmethod
    def from_json(cls, data: dict) -> "FileRecord":
        """The record `data` holds; a TypeError or ValueError naming what is wrong with it."""
        data = dict(_typed(data, dict, "a file record"))
        exports = data.pop("exports", None)
        record = cls(**data)
        for name in ("action", "sha256", "kind"):
            _typed(getattr(record, name), str, name)
        for name in ("source", "source_sha256"):
            _typed(getattr(record, name), (str, type(None)), name)
        for name in _typed(record.classes, list, "classes"):
            _typed(name, str, "a name of classes")
        if record.action not in (CREATED, EDITED):
            raise ValueError(f"action {record.action!r} is neither {CREATED!r} nor {EDITED!r}")
        if record.action == EDITED and exports is None:
            raise ValueError("an edited file's record has no exports")
        if exports is not None:
            _typed(exports, dict, "exports")
            for key in ("imports", "names"):
                for item in _typed(exports.get(key, []), list, f"exports.{key}"):
                    _typed(item, str, f"an item of exports.{key}")
            _typed(exports.get("rewrapped", False), bool, "exports.rewrapped")
            record.exports = ExportRecord.from_json(exports)
        return record


def _typed(value, kind: type | tuple[type, ...], what: str):
    """`value`, when it is a `kind`; a TypeError naming `what` otherwise (JSON's names for types)."""
    if not isinstance(value, kind):
        raise TypeError(f"{what} is {_json_type(value)}")
    return value


def _json_type(value) -> str:
    names = ((type(None), "null"), (bool, "a boolean"), (str, "a string"), (dict, "an object"), (list, "an array"))
    return next((name for kind, name in names if isinstance(value, kind)), "a number")


@dataclass(frozen=True)
class Backup:
    """A file `apply --force` replaced, kept byte for byte under APPLY_COPIES_DIR."""

    path: str  # where it stood in the tree
    copy: str  # where its bytes are kept
    sha256: str
    kind: str  # ORIGINAL or HAND_EDITED

    def as_json(self) -> dict:
        return asdict(self)


@dataclass
class Manifest:
    generation: str
    mmseg_version: str
    heads: list[str]
    templates: dict[str, str]  # template name -> sha256 of the template applied
    files: dict[str, FileRecord]
    tool_version: str = __version__
    backups: list[Backup] = field(default_factory=list)

    @property
    def reward_classes(self) -> set[str]:
        return {c for r in self.files.values() if r.kind == HEAD_FILE for c in r.classes}

    def created(self) -> dict[str, FileRecord]:
        return {p: r for p, r in self.files.items() if r.action == CREATED}

    def edited(self) -> dict[str, FileRecord]:
        return {p: r for p, r in self.files.items() if r.action == EDITED}

    def originals(self) -> dict[str, Backup]:
        return {b.path: b for b in self.backups if b.kind == ORIGINAL}

    def to_text(self) -> str:
        data = {
            "schema": SCHEMA,
            "tool": "rewardpatch",
            "tool_version": self.tool_version,
            "generation": self.generation,
            "mmseg_version": self.mmseg_version,
            "heads": self.heads,
            "templates": self.templates,
            "files": {path: self.files[path].as_json() for path in sorted(self.files)},
        }
        if self.backups:  # absent otherwise: a manifest without backups reads as before
            data["backups"] = [b.as_json() for b in sorted(self.backups, key=lambda b: b.copy)]
        return json.dumps(data, indent=2) + "\n"

    def _check_paths(self) -> None:
        """Every path the manifest names is one a record may name (treefs.relative); the copies
        of backups lie under APPLY_COPIES_DIR. A manifest is untrusted input: a fork can commit one."""
        for path, record in self.files.items():
            relative(path, "a file record")
            if record.source is not None:
                relative(record.source, f"the source of {path}")
            for line in record.exports.imports if record.exports else ():
                _check_import_line(line)
        for backup in self.backups:
            relative(backup.path, "a backup's path")
            if not relative(backup.copy, "a backup's copy").startswith(f"{APPLY_COPIES_DIR}/"):
                raise Unsafe(f"a backup's copy {backup.copy!r} lies outside {APPLY_COPIES_DIR}/")

    @classmethod
    def load(cls, tree: MMSegTree) -> "Manifest | None":
        try:
            text = tree.read(MANIFEST_NAME)
        except (NotText, TooLarge) as exc:
            raise StateError(f"{MANIFEST_NAME} is not a valid rewardpatch manifest ({exc.why})") from None
        if text is None:
            return None
        try:
            data = _typed(json.loads(text), dict, "the manifest")
            if data.get("schema") != SCHEMA:
                raise ValueError(f"unknown schema {data.get('schema')!r}")
            for name in ("generation", "mmseg_version", "tool_version"):
                _typed(data[name], str, name)
            for head in _typed(data["heads"], list, "heads"):
                _typed(head, str, "a name of heads")
            for digest in _typed(data["templates"], dict, "templates").values():
                _typed(digest, str, "a hash of templates")
            backups = []
            for backup in _typed(data.get("backups", []), list, "backups"):
                backup = Backup(**_typed(backup, dict, "a backup"))
                for name in ("path", "copy", "sha256", "kind"):
                    _typed(getattr(backup, name), str, f"a backup's {name}")
                if backup.kind not in (ORIGINAL, HAND_EDITED):
                    raise ValueError(f"a backup's kind {backup.kind!r} is neither {ORIGINAL!r} nor {HAND_EDITED!r}")
                backups.append(backup)
            manifest = cls(
                generation=data["generation"],
                mmseg_version=data["mmseg_version"],
                heads=list(data["heads"]),
                templates=dict(data["templates"]),
                files={p: FileRecord.from_json(r) for p, r in _typed(data["files"], dict, "files").items()},
                tool_version=data["tool_version"],
                backups=backups,
            )
            manifest._check_paths()
            return manifest
        except Unsafe as exc:
            raise StateError(f"{MANIFEST_NAME} is refused: {exc}; nothing was changed") from None
        except KeyError as exc:
            raise StateError(f"{MANIFEST_NAME} is not a valid rewardpatch manifest (no {exc})") from None
        except (ValueError, TypeError) as exc:
            raise StateError(f"{MANIFEST_NAME} is not a valid rewardpatch manifest ({exc})") from None


def _check_import_line(line: str) -> None:
    """An import line of an export record: one `from .module import names` statement."""
    from .import_graph import bounded_parse

    try:
        body = bounded_parse(line, "an export record").body
    except (SyntaxError, InputError):
        raise ValueError(f"exports.imports holds {line!r}, not an import") from None
    if len(body) != 1 or not isinstance(body[0], ast.ImportFrom) or body[0].level != 1 or not body[0].module:
        raise ValueError(f"exports.imports holds {line!r}, not one `from .module import ...`")


def require_patched(tree: MMSegTree, hint: str) -> Manifest:
    """The manifest of `tree`, which a verb needs patched (revert, config, verify); else a
    StateError, exit 1 like every refusal for the tree's state, ending with `hint`."""
    manifest = Manifest.load(tree)
    if manifest is None:
        raise StateError(f"{tree.root} is not patched (no {MANIFEST_NAME}): {hint}")
    return manifest
