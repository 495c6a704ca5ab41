"""An MMSegmentation checkout on disk: where it is, which version, safe paths."""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, StateError
from .mmseg_generations import Generation, generation_for

MANIFEST_NAME = ".rewardpatch.json"
# Beside the manifest: byte-for-byte copies of the files `apply --force` replaced.
BACKUP_DIR = ".rewardpatch"


def sha256(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def read_version(version_file: Path) -> str:
    try:
        module = ast.parse(version_file.read_text(encoding="utf-8"))
    except SyntaxError:
        raise InputError(f"{version_file}: cannot parse") from None
    for node in module.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    raise InputError(f"{version_file}: no __version__ string found")


@dataclass(frozen=True)
class MMSegTree:
    root: Path
    version: str
    generation: Generation

    @classmethod
    def open(cls, path: str | Path) -> "MMSegTree":
        root = Path(path)
        if not root.exists():
            raise InputError(f"{path}: no such directory")
        if not root.is_dir():
            raise InputError(f"{path}: not a directory")
        version_file = root / "mmseg" / "version.py"
        if not version_file.is_file():
            raise InputError(f"{path}: not an MMSegmentation tree (no mmseg/version.py)")
        version = read_version(version_file)
        return cls(root=root.resolve(), version=version, generation=generation_for(version))

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    def path(self, relative: str) -> Path:
        """The absolute path of `relative`, refusing anything that leaves the tree.

        A symlink whose target lies outside the tree is refused too: writing through
        it would change files the user never pointed us at.
        """
        candidate = self.root / relative
        resolved = candidate.resolve()
        if not resolved.is_relative_to(self.root):
            if candidate.is_symlink() or any(p.is_symlink() for p in candidate.parents):
                raise StateError(f"{relative} is a symlink pointing outside the tree ({resolved})")
            raise InputError(f"{relative} lies outside the tree")
        return candidate

    def read(self, relative: str) -> str | None:
        """The file's text with its line endings untouched, or None when it is absent.

        Reading may follow a symlink out of the tree; writing (see `path`) may not.
        """
        path = self.root / relative
        if not path.is_file():
            return None
        try:
            return path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{relative}: not UTF-8 text") from None

    def rel(self, path: Path) -> str:
        """`path`, a path under the root (not resolved), relative to the root."""
        return Path(path).relative_to(self.root).as_posix()
