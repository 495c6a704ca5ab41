"""A patch plan: every file change, computed before anything is written.

apply, revert and dry-run share it. `execute` writes it under a journal (journal.py):
each file through a temporary file and an atomic rename in the same directory; if any
step fails or a signal comes, what was already written is put back, and after a crash the
next command puts it back, so the tree ends either fully changed or untouched.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import faults, journal, signals, treefs
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

    def execute(self, verb: str = "apply") -> None:
        """Write every change, or none: see journal.py. The caller holds the tree's lock
        (journal.exclusive); a failure or a signal rolls back what was written. No link is
        followed on the way to any path written (treefs)."""
        root = self.tree.root
        key = journal.writer_key()
        faults.begin("write")
        made: set[str] = set()  # folders an earlier entry creates
        staged = [self._entry(change, made) for change in self.changes]
        record = journal.Record(verb, os.getpid(), [entry for entry, _ in staged], str(root))
        current = None
        with signals.held():
            try:
                journal.record(root, record, key)
                for entry, data in staged:  # every new content on disk before the first rename
                    current = entry.path
                    if data is not None:
                        _stage(root, entry, data)
                    _stop_if_signalled()
                for entry, data in staged:
                    current = entry.path
                    faults.step("write", f"{'rename' if entry.temp else 'remove'} {entry.path}")
                    if entry.temp:
                        treefs.replace(root, entry.temp, entry.path)
                    else:
                        _remove(root, entry.path)
                    _stop_if_signalled()
                for folder in sorted({entry.path.rpartition("/")[0] for entry, _ in staged}):
                    if folder == "" or treefs.lstat(root, folder) is not None:
                        treefs.fsync_folder(root, folder)
                faults.step("write", "commit")
                _stop_if_signalled()
                journal.complete(root)
            except (OSError, _Stop, KeyboardInterrupt) as exc:  # KeyboardInterrupt: raised, not signalled
                self._roll_back(record, current, exc)
            late = signals.consume_all()
        if late is not None:
            raise Interrupted(
                f"interrupted ({signals.name(late)}) after {verb} had written every file: the change is complete",
                signum=late,
            )

    def _entry(self, change: FileChange, made: set[str]) -> tuple[journal.Entry, bytes | None]:
        """What the journal records for `change`, checked against the disk as it is now, and
        the bytes to write. A symlink inside the tree is written through: its target changes
        (tree.path refuses one that leaves the tree)."""
        root = self.tree.root
        path = self.tree.path(change.path)
        if change.after is not None and path.is_symlink():
            path = path.resolve()
        rel = self.tree.rel(path)
        before = treefs.read(root, rel, limit=None)
        expected = None if change.before is None else self.tree.encode(change.path, change.before)
        if before != expected:
            raise StateError(f"{change.path} changed while rewardpatch was planning; nothing was written, rerun")
        after = None if change.after is None else self.tree.encode(change.path, change.after)
        dirs = [
            self.tree.rel(folder) for folder in reversed(path.parents)
            if after is not None and root in folder.parents and not folder.exists()
            and self.tree.rel(folder) not in made
        ]
        made.update(dirs)
        mode = None
        if before is not None:
            info = treefs.lstat(root, rel)
            assert info is not None  # its bytes were read a moment ago (`before`)
            mode = info.st_mode & 0o777
        entry = journal.Entry(
            path=rel,
            temp=None if after is None else treefs.fresh_name(root, rel, journal.TEMP_SUFFIX),
            before=None if before is None else base64.b64encode(before).decode("ascii"),
            mode=mode,
            after_sha256=None if after is None else hashlib.sha256(after).hexdigest(),
            dirs=dirs,
        )
        return entry, after

    def _roll_back(self, record: journal.Record, current: str | None, exc: BaseException) -> None:
        """Put back what the run wrote, then end with one line saying why it stopped."""
        root = self.tree.root
        failed = current or "the tree"
        try:
            journal.roll_back(root, record, "write")
            journal.complete(root)
        except OSError as again:
            raise StateError(
                f"could not write {failed} ({_reason(exc)}), and rolling back failed too ({_reason(again)}); "
                f"the next apply or revert on this tree rolls it back ({journal.JOURNAL_NAME})"
            ) from None
        signals.consume_all()  # a second signal, or a third: the rollback is done
        if isinstance(exc, (_Stop, KeyboardInterrupt)):
            signum = exc.signum if isinstance(exc, _Stop) else signals.signum_of(exc)
            raise Interrupted(
                f"interrupted ({signals.name(signum)}) while writing {failed}; the tree was left unchanged",
                signum=signum,
            ) from None
        raise StateError(f"could not write {failed}: {_reason(exc)}; the tree was left unchanged") from None


class _Stop(Exception):
    """A stopping signal is pending: roll back."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop_if_signalled() -> None:
    signum = signals.pending()
    if signum is not None:
        raise _Stop(signum)


def _stage(root: Path, entry: journal.Entry, data: bytes) -> None:
    for folder in entry.dirs:
        faults.step("write", f"mkdir {folder}")
        treefs.mkdir(root, folder)
    faults.step("write", f"write {entry.temp}")
    assert entry.temp is not None  # an entry with bytes to write has a temporary name (_entry)
    mode = entry.mode if entry.mode is not None else _default_mode()
    treefs.write_new(root, entry.temp, data, mode)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def _remove(root: Path, relative: str) -> None:
    """Remove the file, and the folders only it needed (the backups' folder after revert),
    so that a reverted tree holds nothing rewardpatch made."""
    treefs.unlink(root, relative)
    folder = relative.rpartition("/")[0]
    while folder and treefs.is_empty_folder(root, folder):
        treefs.rmdir(root, folder)
        folder = folder.rpartition("/")[0]


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask
