"""SIGINT, SIGTERM and SIGHUP: one way to stop rewardpatch, and held off while it writes.

`install` makes SIGTERM and SIGHUP raise `Signalled` (a KeyboardInterrupt) as Ctrl-C
raises KeyboardInterrupt, so every path that rolls back after Ctrl-C rolls back after a
`kill`, a CI timeout or a closed terminal too. `held` blocks the three while the writer
changes the disk: a signal then waits, pending, until the writer looks between two steps
(`pending`), rolls back and consumes it (`consume`). No sequence of signals can stop a
rollback half-way; SIGKILL and power loss are the journal's business.
"""

from __future__ import annotations

# The interpreter's builtin signal module, loaded with it, and nothing else at the top: the
# `rewardpatch` script installs the handlers before anything else loads (__main__.py), so
# that a signal during start-up ends in one line too. `signal` (its enums) comes later.
import _signal

STOPPING = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)
NAMES = {_signal.SIGINT: "SIGINT", _signal.SIGTERM: "SIGTERM", _signal.SIGHUP: "SIGHUP"}


class Signalled(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C would raise KeyboardInterrupt."""

    def __init__(self, signum: int):
        super().__init__(name(signum))
        self.signum = signum


def signum_of(interrupt: KeyboardInterrupt) -> int:
    return getattr(interrupt, "signum", _signal.SIGINT)


def name(signum: int) -> str:
    return NAMES.get(signum, f"signal {signum}")


def _raise(signum, frame):
    raise Signalled(signum)


def install() -> None:
    """SIGTERM and SIGHUP raise Signalled, unless the process was started ignoring them
    (`nohup` ignores SIGHUP: that choice stays)."""
    try:
        for signum in (_signal.SIGTERM, _signal.SIGHUP):
            if _signal.getsignal(signum) == _signal.SIG_DFL:
                _signal.signal(signum, _raise)
        if _signal.getsignal(_signal.SIGINT) == _signal.SIG_DFL:
            _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    except ValueError:  # not the main thread: only the main thread's handlers run
        pass


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


class held:
    """Block SIGINT, SIGTERM and SIGHUP (a context manager); on leaving, those still pending
    are delivered. Only the main thread runs Python's handlers: elsewhere it does nothing."""

    def __enter__(self) -> None:
        self.previous = _signal.pthread_sigmask(_signal.SIG_BLOCK, STOPPING) if _in_main_thread() else None

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            _signal.pthread_sigmask(_signal.SIG_SETMASK, self.previous)


def pending() -> int | None:
    """The first stopping signal waiting to be delivered, if any (inside `held`)."""
    waiting = _signal.sigpending() if _in_main_thread() else set()
    return next((s for s in STOPPING if s in waiting), None)


def consume(signum: int) -> None:
    """Take the pending `signum` off the queue: it has been dealt with."""
    _signal.sigtimedwait([signum], 0)
