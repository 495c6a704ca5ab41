"""One writer per tree, and a journal that makes every run all-or-nothing, crashes included.

The lock is `.rewardpatch.lock` at the tree root, held with flock(2): the kernel lets go
when its holder dies however it dies, so a lock left by a dead process is simply taken
over; while a live one holds it, a second apply or revert refuses at once, naming the
holder's pid. The lock file goes when its holder lets go.

The journal is `.rewardpatch.journal`, beside it: before the first change to the tree, a
run records every file it will write or remove, with the bytes, mode and hash each had
before and the hash it will have after, the temporary file each new content goes through
and the folders it will create; it is written to `.rewardpatch.journal.tmp`, fsync'ed and
renamed into place, as git does with index.lock. Then every new content is written to its
temporary file and fsync'ed, and only then renamed into place (a full disk stops the run
before the first rename); the run completes with one atomic step, the journal's removal.
While a journal exists, the run it describes did not complete: the next rewardpatch command
on the tree (any verb) rolls it back to the bytes it records before doing anything else,
says so on stderr, and `check` reports it. Rolling back is idempotent, so a crash during a
recovery is recovered by the next command too.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import json
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from . import faults
from .errors import StateError
from .notice import warn

LOCK_NAME = ".rewardpatch.lock"
JOURNAL_NAME = ".rewardpatch.journal"
JOURNAL_TEMP = JOURNAL_NAME + ".tmp"
# Where a recovery keeps a file it found with bytes the journal does not know
RECOVERED_DIR = ".rewardpatch-recovered"
TEMP_SUFFIX = ".rewardpatch"
SCHEMA = 1


# -- the lock ---------------------------------------------------------------------------------


def _holder(path: Path) -> str:
    try:
        pid = path.read_text(encoding="ascii").split()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return "another rewardpatch process"
    return f"another rewardpatch process (pid {pid})" if pid.isdigit() else "another rewardpatch process"


def lock_holder(root: Path) -> str | None:
    """Who holds the tree's lock now, or None when nobody does (a reader's question)."""
    path = root / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(path)
    except OSError:
        return None
    finally:
        os.close(fd)
    return None


@contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold the tree's lock, or refuse at once naming whoever holds it."""
    path = root / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StateError(f"cannot lock {root}: {exc.strerror} ({LOCK_NAME})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateError(
                f"{_holder(path)} is changing {root} now; wait for it to finish (lock: {LOCK_NAME})"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # its holder removed the file as we opened it: take the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        yield
    finally:
        try:
            os.unlink(path)  # before letting go: whoever opens it next makes a new one
        except OSError:
            pass
        os.close(fd)


# -- the journal ------------------------------------------------------------------------------


@dataclass
class Entry:
    path: str  # relative to the root; a symlink's target, not the link
    temp: str | None  # where the new bytes are written before the rename; None: a removal
    before: str | None  # base64 of the bytes before; None: the file did not exist
    mode: int | None  # its permission bits before (None: it did not exist)
    after_sha256: str | None
    dirs: list[str] = field(default_factory=list)  # folders the run creates, outermost first

    def before_bytes(self) -> bytes | None:
        return None if self.before is None else base64.b64decode(self.before)


@dataclass
class Record:
    verb: str
    pid: int
    entries: list[Entry]

    def to_bytes(self) -> bytes:
        data = {"schema": SCHEMA, "tool": "rewardpatch", **asdict(self)}
        return (json.dumps(data, indent=1) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> "Record":
        try:
            raw = json.loads(data.decode("utf-8"))
            if raw.get("schema") != SCHEMA:
                raise ValueError(f"unknown schema {raw.get('schema')!r}")
            return cls(raw["verb"], int(raw["pid"]), [Entry(**e) for e in raw["entries"]])
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            raise StateError(
                f"{JOURNAL_NAME} is damaged ({exc}): an interrupted run cannot be rolled back "
                "automatically; restore the tree with git and remove the journal"
            ) from None


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # folders some filesystems cannot sync
            raise
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes, mode: int) -> None:
    """Create or truncate `path` with `data`, flushed to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)


def record(root: Path, journal: Record) -> None:
    """Put the journal in place, durably, in one rename: from here on the run can be rolled back."""
    faults.step("write", "journal")
    write_durably(root / JOURNAL_TEMP, journal.to_bytes(), 0o644)
    os.replace(root / JOURNAL_TEMP, root / JOURNAL_NAME)
    fsync_dir(root)


def complete(root: Path) -> None:
    """The commit point: without its journal the run is complete (or was rolled back in full)."""
    (root / JOURNAL_NAME).unlink(missing_ok=True)
    (root / JOURNAL_TEMP).unlink(missing_ok=True)  # a journal that could not be recorded in full
    fsync_dir(root)


def roll_back(root: Path, journal: Record, phase: str) -> list[str]:
    """Give every file of the journal its bytes from before; the paths put back or removed.

    Idempotent: it only ever moves a file towards its recorded state. A file holding bytes
    the journal knows neither as before nor as after (edited after the crash) is kept under
    RECOVERED_DIR first.
    """
    touched = []
    for entry in reversed(journal.entries):
        path = root / entry.path
        if entry.temp:
            faults.step(phase, f"remove {entry.temp}")
            (root / entry.temp).unlink(missing_ok=True)
        before = entry.before_bytes()
        current = path.read_bytes() if path.is_file() else None
        if current != before:
            if current is not None and not _known(current, entry):
                _keep_aside(root, entry.path, current)
            faults.step(phase, f"restore {entry.path}")
            if before is None:
                path.unlink(missing_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                temp = path.with_name(f".{path.name}{TEMP_SUFFIX}")
                write_durably(temp, before, entry.mode if entry.mode is not None else 0o644)
                os.replace(temp, path)
            touched.append(entry.path)
        for folder in reversed(entry.dirs):
            try:
                (root / folder).rmdir()
            except OSError:
                pass  # not empty (another entry's file, or the user's), or gone already
    for folder in sorted({(root / e.path).parent for e in journal.entries}):
        if folder.is_dir():
            fsync_dir(folder)
    return touched


def _known(current: bytes, entry: Entry) -> bool:
    import hashlib

    return hashlib.sha256(current).hexdigest() == entry.after_sha256


def _keep_aside(root: Path, relative: str, data: bytes) -> None:
    kept = root / RECOVERED_DIR / relative
    kept.parent.mkdir(parents=True, exist_ok=True)
    write_durably(kept, data, 0o644)
    warn(f"{relative} held bytes the interrupted run did not write: kept at {RECOVERED_DIR}/{relative}")


@dataclass(frozen=True)
class Recovery:
    verb: str
    pid: int
    files: list[str]

    @property
    def message(self) -> str:
        count = len(self.files)
        if not count:
            return f"an interrupted {self.verb} (pid {self.pid}) had not changed the tree yet: removed its temporary files"
        return (f"an interrupted {self.verb} (pid {self.pid}) had left the tree half-written: "
                f"rolled back {count} file{'s' if count != 1 else ''}")


def recover(root: Path) -> Recovery | None:
    """Roll back the run a journal describes, if any (the caller holds the lock)."""
    faults.begin("recover")
    journal_path = root / JOURNAL_NAME
    if not journal_path.exists():
        if (root / JOURNAL_TEMP).exists():  # stopped while recording: nothing was changed yet
            (root / JOURNAL_TEMP).unlink()
        return None
    try:
        journal = Record.from_bytes(journal_path.read_bytes())
    except OSError as exc:
        raise StateError(f"cannot read {JOURNAL_NAME}: {exc.strerror}") from None
    files = roll_back(root, journal, "recover")
    faults.step("recover", "commit")
    complete(root)
    return Recovery(journal.verb, journal.pid, files)


def unfinished(root: Path) -> bool:
    """A run's leftovers: its journal, or its lock file (its holder died, or is at work)."""
    return any((root / name).exists() for name in (JOURNAL_NAME, JOURNAL_TEMP, LOCK_NAME))


@contextmanager
def exclusive(root: Path) -> Iterator[Recovery | None]:
    """Hold the lock for a writer; an unfinished run is rolled back first (and said)."""
    with locked(root):
        recovery = _recover_saying(root)
        yield recovery


def settle(root: Path) -> Recovery | None:
    """For a reader: roll back an unfinished run first, if there is one and nobody is writing,
    and clear a lock its dead holder left. While a live writer holds the lock, a reader goes
    on unless the writer has begun changing the tree (its journal exists)."""
    if not unfinished(root):
        return None
    holder = lock_holder(root)
    if holder and not (root / JOURNAL_NAME).exists():
        return None
    if holder:
        raise StateError(f"{holder} is changing {root} now; wait for it to finish (lock: {LOCK_NAME})")
    with locked(root):
        return _recover_saying(root)


def _recover_saying(root: Path) -> Recovery | None:
    try:
        recovery = recover(root)
    except OSError as exc:
        raise StateError(
            f"could not roll back the interrupted run recorded in {JOURNAL_NAME}: {exc.strerror}"
            f"{': ' + str(exc.filename) if exc.filename else ''}; free the cause and rerun"
        ) from None
    if recovery:
        warn(recovery.message)
    return recovery
