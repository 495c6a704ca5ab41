"""File operations inside a tree that is untrusted input.

A fork is cloned from somebody else: anything it holds may have been committed to turn
rewardpatch against its user — a link where rewardpatch keeps its lock or a temporary file,
a journal or manifest whose records name `../elsewhere`, `/etc/...` or `.git/hooks/...`.
Every path that comes from such a record goes through `relative` (a relative POSIX path, no
`.` or `..` component, nothing under `.git/`), and every file operation on it through the
functions below: they walk the path from the tree's root one folder at a time with
O_NOFOLLOW (openat(2) on each folder's descriptor), so that no symlink anywhere on the way,
the last component included, is followed, and create files with O_EXCL, never reusing a name
that exists. A path that fails is an `Unsafe` error (exit 1) naming it; nothing is touched.

What a tree holds is bounded too (`MAX_SOURCE_BYTES`, and import_graph.MAX_NESTING for syntax):
a file larger than that is never read into memory.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from .errors import InputError, StateError

# The largest file rewardpatch reads from a tree: 512 KiB, 6 times MMSeg 1.2.2's largest module
# (87 KB). Parsing is linear in the size (up to about 1 s and 300 MB per MiB of the most
# node-dense code, for the standard library's ast), so the bound keeps every step that holds
# off a signal (one ast.parse) under half a second.
MAX_SOURCE_BYTES = 512 << 10
GIT_DIR = ".git"
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Unsafe(StateError):
    """A path from a tree's records, or a file at one of rewardpatch's own names, that rewardpatch
    will not follow: it leaves the tree, enters .git/, or is a link."""


class TooLarge(InputError):
    """A file over MAX_SOURCE_BYTES."""

    def __init__(self, name: str, size: int, why: str | None = None):
        self.why = why or f"{size} bytes, over the {MAX_SOURCE_BYTES} bytes rewardpatch reads of a file"
        super().__init__(f"{name}: {self.why}")


def relative(value: object, what: str) -> str:
    """`value`, when it is a path a record may name: a relative POSIX path of normal components,
    none of them `.git` (in any case: git refuses those too); an Unsafe error naming `what` else."""
    if not isinstance(value, str) or not value:
        raise Unsafe(f"{what} is not a path: {value!r}")
    if "\0" in value or "\\" in value:
        raise Unsafe(f"{what} {value!r}: a NUL or backslash in a path")
    if PurePosixPath(value).is_absolute():
        raise Unsafe(f"{what} {value!r} is an absolute path, outside the tree")
    parts = value.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise Unsafe(f"{what} {value!r} is not a plain path inside the tree ('..', '.' or an empty part)")
    if any(part.lower() == GIT_DIR for part in parts):
        raise Unsafe(f"{what} {value!r} lies inside .git/, which rewardpatch never touches")
    return value


def _link_or_file(fd: int, name: str) -> str:
    try:
        mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
    except OSError:
        return "not a folder"
    return "a symlink" if stat.S_ISLNK(mode) else "not a folder"


@contextmanager
def folder_of(root: Path, rel: str, make: bool = False) -> Iterator[tuple[int | None, str]]:
    """(a descriptor of the folder holding `rel`, its last component), the folders walked from
    `root` without following any link; (None, name) when a folder on the way does not exist
    (`make`: created, 0o777 less the umask). A link or a file on the way is an Unsafe error."""
    *folders, name = relative(rel, "the path").split("/")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for depth, part in enumerate(folders):
            try:
                inner = os.open(part, _FOLDER, dir_fd=fd)
            except FileNotFoundError:
                if not make:
                    os.close(fd)
                    fd = -1
                    break
                os.mkdir(part, dir_fd=fd)
                inner = os.open(part, _FOLDER, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    where = "/".join(folders[: depth + 1])
                    what = _link_or_file(fd, part)
                    raise Unsafe(f"{rel}: {where} is {what}; rewardpatch does not follow it") from None
                raise
            os.close(fd)
            fd = inner
        yield (fd if fd >= 0 else None), name
    finally:
        if fd >= 0:
            os.close(fd)


def lstat(root: Path, rel: str) -> os.stat_result | None:
    """The file at `rel` itself (a link is not followed), or None when it does not exist."""
    with folder_of(root, rel) as (fd, name):
        if fd is None:
            return None
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None


def _open_file(fd: int, name: str, rel: str, flags: int, mode: int = 0o600) -> int:
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Unsafe(f"{rel} is a symlink; rewardpatch does not follow it") from None
        raise


def read(root: Path, rel: str, limit: int | None = MAX_SOURCE_BYTES) -> bytes | None:
    """The bytes of the regular file at `rel`, or None when nothing is there; a link, a folder
    or a device there is an Unsafe error, a file over `limit` a TooLarge one."""
    with folder_of(root, rel) as (fd, name):
        if fd is None:
            return None
        try:
            file = _open_file(fd, name, rel, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        with os.fdopen(file, "rb") as handle:
            info = os.fstat(file)
            if not stat.S_ISREG(info.st_mode):
                raise Unsafe(f"{rel} is not a regular file")
            if limit is not None and info.st_size > limit:
                raise TooLarge(rel, info.st_size)
            data = handle.read() if limit is None else handle.read(limit + 1)
        if limit is not None and len(data) > limit:
            raise TooLarge(rel, len(data))
        return data


def write_new(root: Path, rel: str, data: bytes, mode: int) -> None:
    """Create `rel` (it must not exist: O_EXCL) with `data` and permission bits `mode`, flushed
    to disk; its folders must exist."""
    with folder_of(root, rel) as (fd, name):
        if fd is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), rel)
        file = _open_file(fd, name, rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(file, view):]
            os.fchmod(file, mode & 0o777)
            os.fsync(file)
        except BaseException:
            os.close(file)
            os.unlink(name, dir_fd=fd)
            raise
        os.close(file)


def replace(root: Path, source: str, target: str) -> None:
    """Rename `source` over `target` (rename(2): a link at `target` is replaced, not followed)."""
    with folder_of(root, source) as (from_fd, from_name), folder_of(root, target) as (to_fd, to_name):
        if from_fd is None or to_fd is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), source if from_fd is None else target)
        os.replace(from_name, to_name, src_dir_fd=from_fd, dst_dir_fd=to_fd)


def unlink(root: Path, rel: str) -> bool:
    """Remove the file (or link: never its target) at `rel`; whether there was one."""
    with folder_of(root, rel) as (fd, name):
        if fd is None:
            return False
        try:
            os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            return False
        return True


def mkdir(root: Path, rel: str) -> bool:
    """Create the folder `rel` (its parent must exist); whether it was created."""
    with folder_of(root, rel) as (fd, name):
        if fd is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), rel)
        try:
            os.mkdir(name, dir_fd=fd)
        except FileExistsError:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISDIR(info.st_mode):
                what = "a symlink" if stat.S_ISLNK(info.st_mode) else "a file"
                raise Unsafe(f"{rel} is {what}, not a folder") from None
            return False
        return True


def rmdir(root: Path, rel: str) -> bool:
    """Remove the folder `rel` when it is empty; whether it was removed."""
    with folder_of(root, rel) as (fd, name):
        if fd is None:
            return False
        try:
            os.rmdir(name, dir_fd=fd)
        except OSError:
            return False  # not empty, gone, or not a folder
        return True


def is_empty_folder(root: Path, rel: str) -> bool:
    with folder_of(root, rel) as (fd, name):
        if fd is None:
            return False
        try:
            inner = os.open(name, _FOLDER, dir_fd=fd)
        except OSError:
            return False
        try:
            return not os.listdir(inner)
        finally:
            os.close(inner)


def fresh_name(root: Path, rel: str, suffix: str) -> str:
    """A name beside `rel` that nothing holds now: `.<name>.<random>.<suffix>` (a hidden
    temporary file; the random part so that no name a tree holds can be chosen for it)."""
    folder, _, name = rel.rpartition("/")
    for _ in range(100):
        candidate = f"{folder + '/' if folder else ''}.{name}.{secrets.token_hex(4)}{suffix}"
        if lstat(root, candidate) is None:
            return candidate
    raise StateError(f"no free temporary name beside {rel}")  # 100 random names taken: not by chance


def fsync_folder(root: Path, rel: str = "") -> None:
    """Flush a folder's entries (a rename, a removal) to disk; `rel` "" is the root."""
    if rel:
        with folder_of(root, f"{rel}/x") as (fd, _):
            if fd is not None:
                _fsync(fd)
        return
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _fsync(fd)
    finally:
        os.close(fd)


def _fsync(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # folders some filesystems cannot sync
            raise
