"""One writer per tree, and a journal that makes every run all-or-nothing, crashes included.

The lock is `.rewardpatch.lock` at the tree root, held with flock(2): the kernel lets go
when its holder dies however it dies, so a lock left by a dead process is taken over (and
said so); while a live one holds it, a second apply or revert refuses at once, naming the
holder's pid. The lock file goes when its holder lets go.

The journal is `.rewardpatch.journal`, beside it: before the first change to the tree, a
run records every file it will write or remove, with the bytes, mode and hash each had
before and the hash it will have after, the temporary file each new content goes through
and the folders it will create; it is written to `.rewardpatch.journal.tmp`, fsync'ed and
renamed into place, as git does with index.lock. Then every new content is written to its
temporary file and fsync'ed, and only then renamed into place (a full disk stops the run
before the first rename); the run completes with one atomic step, the journal's removal.
While a journal exists, the run it describes did not complete: the next apply or revert on
the tree rolls it back to the bytes it records before doing anything else, and says so.
Rolling back is idempotent, so a crash during a recovery is recovered by the next writer too.
Readers (list-heads, check, --dry-run, config, verify) write nothing: they report the
unfinished run, and list-heads, check and --dry-run read the tree as the rollback will leave it.

A tree is untrusted input (treefs.py), and its journal with it: a fork can commit one. A
journal is an interrupted run of this machine only when it is a regular file of this user,
git does not track it, and it carries the HMAC that the writer computed over it and the tree's
path with this user's key (`key_path()`, created once, 0600). Any other journal — committed,
copied from another tree or machine, edited — is *foreign*: apply and revert refuse in one
line naming it, readers warn and leave it be. Even a journal that passes is checked path by
path (treefs.relative: inside the tree, not under .git/, no link on the way) before use.
"""

from __future__ import annotations

import base64
import binascii
import errno
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import stat
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from . import faults, treefs
from .errors import InputError, StateError
from .notice import warn

LOCK_NAME = ".rewardpatch.lock"
JOURNAL_NAME = ".rewardpatch.journal"
JOURNAL_TEMP = JOURNAL_NAME + ".tmp"
# Where a recovery keeps a file it found with bytes the journal does not know
RECOVERY_COPIES_DIR = ".rewardpatch-recovered"
TEMP_SUFFIX = ".rewardpatch"
SCHEMA = 2
KEY_NAME = "journal.key"
# The files at the root that only rewardpatch writes: a fork that commits one is refused
RESERVED = (LOCK_NAME, JOURNAL_NAME, JOURNAL_TEMP)
# The largest journal read: a run records the files it writes, each at most a few hundred KB
MAX_JOURNAL_BYTES = 64 << 20
_RECORDING = "recording"  # Leftovers.record's verb for a journal that was never put in place


# -- the key that tells this user's journals from any other ------------------------------------


def key_path() -> Path:
    """$XDG_STATE_HOME/rewardpatch/journal.key (default ~/.local/state/rewardpatch/journal.key)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "rewardpatch" / KEY_NAME


def _read_key(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            return None
        key = handle.read(65)
    return key if len(key) == 32 else None


def _key(create: bool) -> bytes | None:
    """This user's journal key; made once when `create` (a writer), else None when there is none.
    The key is published with link(2), so two first writers agree on one key."""
    path = key_path()
    key = _read_key(path)
    if key is not None or not create:
        return key
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temp = path.with_name(f".{KEY_NAME}.{secrets.token_hex(4)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, secrets.token_bytes(32))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temp, path)
        except FileExistsError:
            pass  # another first writer's key won
        finally:
            temp.unlink(missing_ok=True)
    except OSError as exc:
        raise StateError(
            f"cannot keep rewardpatch's journal key at {path}: {exc.strerror or exc}; "
            "set XDG_STATE_HOME to a folder of yours that is writable"
        ) from None
    key = _read_key(path)
    if key is None:
        raise StateError(f"{path} is not a journal key of this user (a link, another owner, or damaged); remove it")
    return key


def _mac(key: bytes, body: dict) -> str:
    return hmac.new(key, json.dumps(body, sort_keys=True).encode("utf-8"), hashlib.sha256).hexdigest()


# -- the journal's records ------------------------------------------------------------------------


@dataclass
class Entry:
    path: str  # relative to the root; a symlink's target, not the link
    temp: str | None  # where the new bytes are written before the rename; None: a removal
    before: str | None  # base64 of the bytes before; None: the file did not exist
    mode: int | None  # its permission bits before (None: it did not exist)
    after_sha256: str | None
    dirs: list[str] = field(default_factory=list)  # folders the run creates, outermost first

    def before_bytes(self) -> bytes | None:
        return None if self.before is None else base64.b64decode(self.before, validate=True)

    def check(self) -> None:
        """Every field of the right type, every path one a record may name (treefs.relative);
        a TypeError, ValueError or treefs.Unsafe otherwise."""
        treefs.relative(self.path, "a journal entry's path")
        if self.temp is not None:
            treefs.relative(self.temp, "a journal entry's temporary file")
        if not isinstance(self.dirs, list):
            raise TypeError("dirs is not a list")
        for folder in self.dirs:
            treefs.relative(folder, "a journal entry's folder")
        if self.before is not None:
            if not isinstance(self.before, str):
                raise TypeError("before is not a string")
            try:
                self.before_bytes()
            except (binascii.Error, ValueError) as exc:
                raise ValueError(f"before is not base64 ({exc})") from None
        if self.mode is not None and (type(self.mode) is not int or not 0 <= self.mode <= 0o777):
            raise ValueError(f"mode {self.mode!r} is not permission bits (0 to 0o777)")
        if (self.before is None) != (self.mode is None):
            raise ValueError("before and mode must be given together")
        if self.after_sha256 is not None and not isinstance(self.after_sha256, str):
            raise TypeError("after_sha256 is not a string")


@dataclass
class Record:
    verb: str
    pid: int
    entries: list[Entry]
    root: str = ""  # the tree it was written for (resolved)

    def body(self) -> dict:
        return {"schema": SCHEMA, "tool": "rewardpatch", **asdict(self)}

    def to_bytes(self, key: bytes) -> bytes:
        data = self.body()
        data["mac"] = _mac(key, data)
        return (json.dumps(data, indent=1) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, key: bytes | None, root: Path) -> "Record":
        """The record `data` holds, when this user's key vouches for it in the tree at `root`; a
        Foreign error saying why not otherwise, or StateError when its paths fail the checks."""
        try:
            raw = json.loads(data.decode("utf-8"))
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            raise Foreign(JOURNAL_NAME, f"not a rewardpatch journal ({exc})") from None
        mac = raw.pop("mac", None)
        if raw.get("schema") != SCHEMA or raw.get("tool") != "rewardpatch":
            raise Foreign(JOURNAL_NAME, f"not a journal of this rewardpatch (schema {raw.get('schema')!r})")
        if key is None:
            raise Foreign(JOURNAL_NAME, f"this user has no journal key ({key_path()}), so it cannot be this user's")
        if not isinstance(mac, str) or not hmac.compare_digest(mac, _mac(key, raw)):
            written = raw.get("root")
            elsewhere = (f" (it names the tree {written!r})"
                         if isinstance(written, str) and written != str(Path(root).resolve()) else "")
            raise Foreign(JOURNAL_NAME, f"its signature is not this user's for this tree{elsewhere}")
        if raw.get("root") != str(Path(root).resolve()):  # signed here, for a tree since copied or moved
            raise Foreign(JOURNAL_NAME, f"it was written for the tree at {raw.get('root')}, not this one")
        try:
            entries = [Entry(**e) for e in raw["entries"]]
            for entry in entries:
                entry.check()
            record = cls(str(raw["verb"]), int(raw["pid"]), entries, str(raw["root"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateError(f"{JOURNAL_NAME} is damaged ({exc}); nothing was changed: restore the tree "
                             "with git and remove the journal") from None
        except treefs.Unsafe as exc:
            raise StateError(f"{JOURNAL_NAME} is refused: {exc}; nothing was changed") from None
        return record


class Foreign(StateError):
    """A journal, lock or temporary file at rewardpatch's names that is not this machine's
    interrupted run: committed, another user's or another tree's, a link."""

    def __init__(self, name: str, reason: str):
        self.name = name
        self.reason = reason
        what = "is not an interrupted run of" if name == JOURNAL_NAME else "was not left by"
        super().__init__(
            f"{name} {what} rewardpatch on this machine ({reason}); it was left as it is: if the tree "
            f"is yours, remove it ({'git rm' if 'git tracks' in reason else 'rm'} {name}) and rerun"
        )


def _tracked(root: Path, names: list[str]) -> set[str]:
    from . import gitstate

    return gitstate.tracked(root, names)


def _vouch(root: Path, name: str, info: os.stat_result) -> None:
    """Refuse (Foreign) the file at `name` (its lstat `info`) unless rewardpatch on this machine could
    have left it: a regular file of this user that git does not track."""
    if stat.S_ISLNK(info.st_mode):
        raise Foreign(name, "a symlink")
    if not stat.S_ISREG(info.st_mode):
        raise Foreign(name, "not a regular file")
    if info.st_uid != os.geteuid():
        raise Foreign(name, f"owned by user {info.st_uid}, not by this user")
    if name in _tracked(root, [name]):
        raise Foreign(name, "git tracks it: it was committed to the tree")


def record(root: Path, journal: Record, key: bytes) -> None:
    """Put the journal in place, durably, in one rename: from here on the run can be rolled back."""
    faults.step("write", "journal")
    treefs.unlink(root, JOURNAL_TEMP)  # ours: the writer vouched for it under the lock
    treefs.write_new(root, JOURNAL_TEMP, journal.to_bytes(key), 0o644)
    treefs.replace(root, JOURNAL_TEMP, JOURNAL_NAME)
    treefs.fsync_folder(root)


def complete(root: Path) -> None:
    """The commit point: without its journal the run is complete (or was rolled back in full)."""
    treefs.unlink(root, JOURNAL_NAME)
    treefs.unlink(root, JOURNAL_TEMP)  # a journal that could not be recorded in full
    treefs.fsync_folder(root)


def restored(journal: Record) -> dict[str, bytes | None]:
    """{path: bytes} the tree holds at each of the journal's paths once it is rolled back (None: absent)."""
    return {entry.path: entry.before_bytes() for entry in journal.entries}


def roll_back(root: Path, journal: Record, phase: str) -> list[str]:
    """Give every file of the journal its bytes from before; the paths put back or removed.

    Idempotent: it only ever moves a file towards its recorded state. A file holding bytes
    the journal knows neither as before nor as after (edited after the crash) is kept under
    RECOVERY_COPIES_DIR first. No link is followed on the way to any path (treefs).
    """
    touched = []
    for entry in reversed(journal.entries):
        if entry.temp:
            faults.step(phase, f"remove {entry.temp}")
            treefs.unlink(root, entry.temp)
        before = entry.before_bytes()
        current = treefs.read(root, entry.path, limit=None)
        if current != before:
            if current is not None and not _known(current, entry):
                _keep_aside(root, entry.path, current)
            faults.step(phase, f"restore {entry.path}")
            if before is None:
                treefs.unlink(root, entry.path)
            else:
                folder = entry.path.rpartition("/")[0]
                with treefs.folder_of(root, f"{folder}/x" if folder else "x", make=True):
                    pass
                temp = treefs.fresh_name(root, entry.path, TEMP_SUFFIX)
                treefs.write_new(root, temp, before, entry.mode if entry.mode is not None else 0o644)
                treefs.replace(root, temp, entry.path)
            touched.append(entry.path)
        for folder in reversed(entry.dirs):
            treefs.rmdir(root, folder)  # not if not empty (another entry's file, or the user's), or gone
    for folder in sorted({e.path.rpartition("/")[0] for e in journal.entries}):
        if folder == "" or treefs.lstat(root, folder) is not None:
            treefs.fsync_folder(root, folder)
    return touched


def _known(current: bytes, entry: Entry) -> bool:
    return hashlib.sha256(current).hexdigest() == entry.after_sha256


def _keep_aside(root: Path, relative: str, data: bytes) -> None:
    kept = f"{RECOVERY_COPIES_DIR}/{relative}"
    folder = kept.rpartition("/")[0]
    with treefs.folder_of(root, f"{folder}/x", make=True):
        pass
    name, n = kept, 1
    while treefs.lstat(root, name) is not None:  # an earlier recovery's copy: keep both
        n += 1
        name = f"{kept}.{n}"
    treefs.write_new(root, name, data, 0o644)
    warn(f"{relative} held bytes the interrupted run did not write: kept at {name}")


# -- the lock -------------------------------------------------------------------------------------


def _pid_in(fd: int) -> str | None:
    try:
        data = os.pread(fd, 32, 0).decode("ascii").split()
    except (OSError, UnicodeDecodeError):
        return None
    return data[0] if data and data[0].isdigit() else None


def _holder(pid: str | None) -> str:
    return f"another rewardpatch process (pid {pid})" if pid else "another rewardpatch process"


def lock_holder(root: Path) -> str | None:
    """Who holds the tree's lock now, or None when nobody does (a reader's question; it
    opens the lock file read-only, never through a link, and writes nothing)."""
    try:
        fd = os.open(root / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(_pid_in(fd))
    except OSError:
        return None
    finally:
        os.close(fd)
    return None


@contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold the tree's lock, or refuse at once naming whoever holds it. A lock file that a
    dead holder left is taken over, and said so; one rewardpatch cannot have left (a link, a
    committed file, another user's) is refused, untouched (Foreign)."""
    path = root / LOCK_NAME
    while True:
        existing = treefs.lstat(root, LOCK_NAME)
        if existing is not None:
            _vouch(root, LOCK_NAME, existing)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise Foreign(LOCK_NAME, "a symlink") from None
            raise StateError(f"cannot lock {root}: {exc.strerror} ({LOCK_NAME})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _pid_in(fd)
            os.close(fd)
            raise StateError(
                f"{_holder(pid)} is changing {root} now; wait for it to finish (lock: {LOCK_NAME})"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # its holder removed the file as we opened it: take the new one
    try:
        if existing is not None and existing.st_ino == os.fstat(fd).st_ino:
            pid = _pid_in(fd)
            warn(f"took over {LOCK_NAME}, left by {'pid ' + pid if pid else 'a process'} that is no longer running")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        yield
    finally:
        try:
            faults.begin("unlock")
            faults.step("unlock", "remove the lock")
            os.unlink(path)  # before letting go: whoever opens it next makes a new one
        except OSError as exc:
            warn(f"could not remove {LOCK_NAME} ({exc.strerror or exc}); the next apply or revert clears it")
        os.close(fd)


# -- what a run left: readers look, writers roll back ---------------------------------------------


@dataclass(frozen=True)
class Recovery:
    verb: str
    pid: int
    files: list[str]

    @property
    def message(self) -> str:
        count = len(self.files)
        if not count:
            return (
                f"an interrupted {self.verb} (pid {self.pid}) had not changed the tree yet: removed its temporary files"
            )
        return (f"an interrupted {self.verb} (pid {self.pid}) had left the tree half-written: "
                f"rolled back {count} file{'s' if count != 1 else ''}")


@dataclass(frozen=True)
class Leftovers:
    """What a reader finds of a run that did not complete, changing nothing."""

    record: Record | None = None  # an interrupted run of this machine, the next writer rolls it back
    files: tuple[str, ...] = ()  # the paths that rollback would change
    foreign: tuple[Foreign, ...] = ()  # files at rewardpatch's names it will not touch
    stale_lock: str | None = None  # "pid N" of a dead holder whose lock file stayed

    @property
    def interrupted(self) -> bool:
        """Whether a run had begun changing the tree (its journal was in place)."""
        return self.record is not None and self.record.verb != _RECORDING

    @property
    def restores(self) -> dict[str, bytes | None]:
        """{path: bytes} the tree holds after the rollback, to read the tree as it will be."""
        return restored(self.record) if self.record else {}

    def run_message(self) -> str | None:
        """What the run left and what the next writer does about it."""
        if self.record is None:
            return None
        if not self.interrupted:
            return (f"a run stopped while recording its journal left {JOURNAL_TEMP}: the next apply or revert "
                    "removes it; nothing was changed")
        count = len(self.files)
        what = (f"rolls back {count} file{'s' if count != 1 else ''} ({', '.join(self.files)})" if count
                else "removes its temporary files")
        return (f"an interrupted {self.record.verb} (pid {self.record.pid}) left {JOURNAL_NAME}: "
                f"the next apply or revert {what}; shown as it will leave the tree, nothing was changed")

    def foreign_messages(self) -> list[str]:
        return [f"ignored {f.name}: {f.reason}; apply and revert refuse until it is removed" for f in self.foreign]

    def lock_message(self) -> str | None:
        if not self.stale_lock:
            return None
        return f"{LOCK_NAME} was left by {self.stale_lock}, no longer running; the next apply or revert clears it"

    def messages(self) -> list[str]:
        return [m for m in (self.run_message(), *self.foreign_messages(), self.lock_message()) if m]


def look(root: Path) -> Leftovers | None:
    """For a reader: the leftovers of an unfinished run, if any, without changing anything.
    While a live writer holds the lock, a reader goes on unless the writer has begun changing
    the tree (its journal exists): then it refuses (StateError) naming the holder."""
    present = {name: treefs.lstat(root, name) for name in RESERVED}
    if not any(present.values()):
        return None
    holder = lock_holder(root)
    if holder and present[JOURNAL_NAME] is not None:
        raise StateError(f"{holder} is changing {root} now; wait for it to finish (lock: {LOCK_NAME})")
    if holder:
        return None
    foreign: list[Foreign] = []
    for name, info in present.items():
        if info is None:
            continue
        try:
            _vouch(root, name, info)
        except Foreign as exc:
            foreign.append(exc)
        except StateError as exc:  # git could not say whether it tracks the file
            foreign.append(Foreign(name, f"cannot tell whether git tracks it: {exc}"))
    refused = {f.name for f in foreign}
    record: Record | None = None
    files: tuple[str, ...] = ()
    if present[JOURNAL_NAME] is not None and JOURNAL_NAME not in refused:
        try:
            data = treefs.read(root, JOURNAL_NAME, limit=MAX_JOURNAL_BYTES) or b""
            record = Record.from_bytes(data, _key(create=False), root)
        except Foreign as exc:
            foreign.append(exc)
        except (StateError, InputError) as exc:  # damaged, refused, or over MAX_JOURNAL_BYTES
            foreign.append(Foreign(JOURNAL_NAME, str(exc)))
        else:
            files = tuple(path for path, data in restored(record).items() if _current(root, path) != data)
    elif present[JOURNAL_TEMP] is not None and JOURNAL_TEMP not in refused:
        record = Record(_RECORDING, 0, [])  # stopped while recording its journal: nothing was changed
    stale = None
    if present[LOCK_NAME] is not None and LOCK_NAME not in refused:
        with open(root / LOCK_NAME, "rb", opener=_no_follow) as handle:
            pid = _pid_in(handle.fileno())
        stale = f"pid {pid}" if pid else "a process"
    return Leftovers(record, files, tuple(foreign), stale)


def _no_follow(path, flags):
    return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK)


def _current(root: Path, path: str) -> bytes | None:
    try:
        return treefs.read(root, path, limit=None)
    except (OSError, StateError):
        return b""  # unreadable: it differs from what the rollback writes


def _refuse_links(root: Path, journal: Record) -> None:
    """Every path of the journal walked before anything is rolled back: a link on the way to any
    of them (treefs.Unsafe) stops the recovery before its first step, not half-way."""
    for entry in journal.entries:
        for path in (entry.path, entry.temp, *entry.dirs):
            info = treefs.lstat(root, path) if path else None
            if info is not None and stat.S_ISLNK(info.st_mode):
                raise treefs.Unsafe(f"{JOURNAL_NAME} names {path}, which is a symlink; nothing was changed")
        treefs.lstat(root, f"{RECOVERY_COPIES_DIR}/{entry.path}")  # where an edit would be kept: no link on the way


def recover(root: Path, key: bytes) -> Recovery | None:
    """Roll back the run a journal describes, if any (the caller holds the lock and vouched
    for the files at the reserved names)."""
    faults.begin("recover")
    if treefs.lstat(root, JOURNAL_NAME) is None:
        if treefs.lstat(root, JOURNAL_TEMP) is not None:  # stopped while recording: nothing was changed yet
            treefs.unlink(root, JOURNAL_TEMP)
        return None
    try:
        data = treefs.read(root, JOURNAL_NAME, limit=MAX_JOURNAL_BYTES) or b""
    except treefs.TooLarge as exc:
        raise Foreign(JOURNAL_NAME, exc.why) from None
    except OSError as exc:
        raise StateError(f"cannot read {JOURNAL_NAME}: {exc.strerror}") from None
    journal = Record.from_bytes(data, key, root)
    _refuse_links(root, journal)
    files = roll_back(root, journal, "recover")
    faults.step("recover", "commit")
    complete(root)
    return Recovery(journal.verb, journal.pid, files)


@contextmanager
def exclusive(root: Path) -> Iterator[Recovery | None]:
    """Hold the lock for a writer; an unfinished run is rolled back first (and said). A file at
    rewardpatch's names that this machine's rewardpatch did not leave is refused, untouched."""
    key = writer_key()
    with locked(root):
        for name in (JOURNAL_NAME, JOURNAL_TEMP):
            info = treefs.lstat(root, name)
            if info is not None:
                _vouch(root, name, info)
        recovery = _recover_saying(root, key)
        yield recovery


def writer_key() -> bytes:
    """The key a writer signs its journal with (made once per user)."""
    key = _key(create=True)
    assert key is not None
    return key


def _recover_saying(root: Path, key: bytes) -> Recovery | None:
    try:
        recovery = recover(root, key)
    except OSError as exc:
        raise StateError(
            f"could not roll back the interrupted run recorded in {JOURNAL_NAME}: {exc.strerror}"
            f"{': ' + str(exc.filename) if exc.filename else ''}; free the cause and rerun"
        ) from None
    if recovery:
        warn(recovery.message)
    return recovery


def settled(root: Path, verb: str) -> None:
    """For `verb` (config, verify: they run the tree's code), which reads the tree as it is on
    disk: refuse a tree an interrupted run left half-written, warn of any other leftovers."""
    leftovers = look(root)
    if leftovers is None:
        return
    if leftovers.interrupted and leftovers.files:
        assert leftovers.record is not None  # `interrupted` says there is one
        raise StateError(
            f"an interrupted {leftovers.record.verb} (pid {leftovers.record.pid}) left {root} half-written "
            f"({JOURNAL_NAME}); {verb} reads it as it is: run `rewardpatch apply` or `rewardpatch revert` "
            "first, which roll it back"
        )
    for message in leftovers.messages():
        warn(message)
