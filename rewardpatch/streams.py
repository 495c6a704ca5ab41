"""Standard output and error that cannot turn a result into a traceback or a wrong exit code.

A report is written after the work is done: `apply >/dev/full` has patched the tree before its
first line fails. `guarded` puts both streams behind a `Guard` that keeps the first error
(ENOSPC, EPIPE, EIO, a closed descriptor) instead of raising it, and drops what comes after;
the CLI then decides the exit code (cli.Verbs): a command that changed the tree, or that
failed, keeps its own code; a read-only one whose report was lost exits EXIT_REPORT_LOST.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


class Guard:
    """A text stream (sys.stdout, sys.stderr) whose write and flush never raise OSError."""

    def __init__(self, stream, name: str):
        self._stream = stream
        self.name = name
        self.failed: OSError | None = None if stream is not None else OSError(errno.EBADF, "closed")

    def write(self, text: str) -> int:
        if self.failed is None:
            try:
                return self._stream.write(text)
            except OSError as exc:
                self.failed = exc
            except ValueError as exc:  # I/O operation on a closed file
                self.failed = OSError(errno.EBADF, str(exc))
        return len(text)

    def flush(self) -> None:
        if self.failed is None:
            try:
                self._stream.flush()
            except OSError as exc:
                self.failed = exc
            except ValueError as exc:
                self.failed = OSError(errno.EBADF, str(exc))

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@dataclass
class Lost:
    """What became of the report: each stream's first error, if any."""

    stdout: OSError | None = None
    stderr: OSError | None = None

    @property
    def quiet(self) -> bool:
        """The reader went away on purpose (`| head`): nothing to say about it."""
        return self.stdout is not None and self.stdout.errno == errno.EPIPE


@contextmanager
def guarded() -> Iterator[Lost]:
    """sys.stdout and sys.stderr behind Guards for the block; afterwards `Lost` says what failed.
    A stream that failed is pointed at os.devnull, so that the interpreter's last flush at exit
    cannot fail again (Python would print "Exception ignored" and exit 120)."""
    out, err = Guard(sys.stdout, "stdout"), Guard(sys.stderr, "stderr")
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    lost = Lost()
    try:
        yield lost
    finally:
        out.flush()
        err.flush()
        sys.stdout, sys.stderr = saved
        lost.stdout, lost.stderr = out.failed, err.failed
        for guard, fd in ((out, 1), (err, 2)):
            if guard.failed is not None and guard._stream is not None:
                _silence(guard._stream, fd)


def _silence(stream, fd: int) -> None:
    try:
        if stream.fileno() != fd:
            return  # a test's capture, or click's runner: nothing of the process's own
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
        stream.flush()  # what the failed flush left in the buffer goes to devnull
    except (OSError, ValueError, AttributeError):
        pass
