"""SIGINT, SIGTERM and SIGHUP: one way to stop rewardpatch, and held off while it writes.

`install` makes SIGTERM and SIGHUP raise `Signalled` (a KeyboardInterrupt) as Ctrl-C
raises KeyboardInterrupt, so every path that rolls back after Ctrl-C rolls back after a
`kill`, a CI timeout or a closed terminal too. `held` blocks the three while the writer
changes the disk: a signal then waits, pending, until the writer looks between two steps
(`pending`), rolls back and consumes it (`consume`). No sequence of signals can stop a
rollback half-way; SIGKILL and power loss are the journal's business.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Signalled(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C would raise KeyboardInterrupt."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signum_of(interrupt: KeyboardInterrupt) -> int:
    return getattr(interrupt, "signum", signal.SIGINT)


def name(signum: int) -> str:
    return signal.Signals(signum).name


def _raise(signum, frame):
    raise Signalled(signum)


def install() -> None:
    """SIGTERM and SIGHUP raise Signalled, unless the process was started ignoring them
    (`nohup` ignores SIGHUP: that choice stays)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) == signal.SIG_DFL:
            signal.signal(signum, _raise)
    if signal.getsignal(signal.SIGINT) == signal.SIG_DFL:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def held() -> Iterator[None]:
    """Block SIGINT, SIGTERM and SIGHUP; on leaving, those still pending are delivered."""
    if not _in_main_thread():  # only the main thread runs Python's handlers
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOPPING)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def pending() -> int | None:
    """The first stopping signal waiting to be delivered, if any (inside `held`)."""
    waiting = signal.sigpending() if _in_main_thread() else set()
    return next((s for s in STOPPING if s in waiting), None)


def consume(signum: int) -> None:
    """Take the pending `signum` off the queue: it has been dealt with."""
    signal.sigtimedwait([signum], 0)
