"""A patch plan: every file change, computed before anything is written.

apply, revert and dry-run share it. `execute` writes each file through a temporary file
and an atomic rename in the same directory; if any step fails, what was already written
is put back, so the tree ends either fully changed or untouched.
"""

from __future__ import annotations

import difflib
import os
import signal
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .errors import Interrupted, StateError
from .tree import MMSegTree


@dataclass(frozen=True)
class FileChange:
    path: str  # relative to the tree root
    before: str | None  # None: the file does not exist yet
    after: str | None  # None: the file is removed
    note: str = ""

    @property
    def action(self) -> str:
        if self.before is None:
            return "create"
        if self.after is None:
            return "remove"
        return "update"

    def diff(self) -> str:
        before = (self.before or "").splitlines(keepends=True)
        after = (self.after or "").splitlines(keepends=True)
        old = "/dev/null" if self.before is None else f"a/{self.path}"
        new = "/dev/null" if self.after is None else f"b/{self.path}"
        lines = list(difflib.unified_diff(before, after, old, new))
        return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


@dataclass
class PatchPlan:
    tree: MMSegTree
    changes: list[FileChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    heads: list[str] = field(default_factory=list)  # the heads the patched tree has afterwards
    adopted: list[str] = field(default_factory=list)  # one line per hand-made file apply --adopt replaces

    def add(self, path: str, before: str | None, after: str | None, note: str = "") -> None:
        self.tree.path(path)  # refuse a target outside the tree now, before anything is written
        if before != after:
            self.changes.append(FileChange(path, before, after, note))

    @property
    def empty(self) -> bool:
        return not self.changes

    def diff(self) -> str:
        return "".join(change.diff() for change in self.changes)

    def execute(self) -> None:
        """Write every change, or none: a failure rolls back what was written."""
        targets = [(change, self.tree.path(change.path)) for change in self.changes]
        done: list[tuple[FileChange, Path]] = []
        current = None
        try:
            for change, current in targets:
                # recorded first: Ctrl-C can land between the rename and the next line
                done.append((change, current))
                _put(current, change.after, self.tree.root)
        except (OSError, KeyboardInterrupt) as exc:
            with _ctrl_c_held_off():
                for written, path in reversed(done):
                    if not _holds(path, written.before):
                        _put(path, written.before, self.tree.root)
            failed = self.tree.rel(current) if current is not None else "the tree"
            if isinstance(exc, KeyboardInterrupt):
                raise Interrupted(f"interrupted while writing {failed}; the tree was left unchanged") from None
            reason = exc.strerror or str(exc)
            raise StateError(f"could not write {failed}: {reason}; the tree was left unchanged") from None


@contextmanager
def _ctrl_c_held_off():
    """Ignore Ctrl-C while rolling back: a second one must not leave half a rollback."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives SIGINT
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _holds(path: Path, content: str | None) -> bool:
    if content is None:
        return not path.exists()
    return path.is_file() and path.read_bytes() == content.encode("utf-8")


def _put(path: Path, content: str | None, root: Path) -> None:
    """Make `path` hold `content` (None: absent), with the folders that takes.

    A folder only a removed file needed goes too (the backups' folder after revert), so
    that a reverted tree holds nothing rewardpatch made.
    """
    if content is None:
        path.unlink(missing_ok=True)
        for folder in path.parents:
            if folder == root or not folder.is_relative_to(root) or any(folder.iterdir()):
                break
            folder.rmdir()
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, content)


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _write_atomically(path: Path, content: str) -> None:
    mode = path.stat().st_mode & 0o7777 if path.exists() else _default_mode()
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".rewardpatch")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content.encode("utf-8"))
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
