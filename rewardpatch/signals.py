"""SIGINT, SIGTERM and SIGHUP: one way to stop rewardpatch, and held off while it writes.

`install` makes SIGTERM and SIGHUP raise `Signalled` (a KeyboardInterrupt) as Ctrl-C
raises KeyboardInterrupt, so every path that rolls back after Ctrl-C rolls back after a
`kill`, a CI timeout or a closed terminal too. `held` holds the three off while the
writer changes the disk: a signal is then only recorded, until the writer looks between
two steps (`pending`), rolls back and consumes it (`consume`). No sequence of signals can stop a
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


# Signals `held` caught and nobody dealt with yet, in arrival order; how deeply held is entered
_caught: list[int] = []
_depth = [0]


def _record(signum, frame) -> None:
    _caught.append(signum)


class held:
    """Hold off SIGINT, SIGTERM and SIGHUP (a context manager): while inside, each is only
    recorded (`pending`); on leaving the outermost one, those not `consume`d are raised again
    for the handlers found on entering. Python handlers, not a signal mask: a process-wide
    signal may land on any thread (torch's, gitpython's), and Python's handlers always run on
    the main thread. A signal the process ignores stays ignored. Off the main thread, where
    handlers cannot be set, it does nothing."""

    def __enter__(self) -> None:
        self.previous: dict[int, object] = {}
        self.entered = False
        try:
            for signum in STOPPING:
                if _signal.getsignal(signum) not in (_signal.SIG_IGN, _record):
                    self.previous[signum] = _signal.signal(signum, _record)
        except ValueError:  # not the main thread
            self._restore()
            return
        self.entered = True
        _depth[0] += 1

    def _restore(self) -> None:
        for signum, handler in self.previous.items():
            _signal.signal(signum, handler)
        self.previous = {}

    def __exit__(self, *exc) -> None:
        if not self.entered:
            return
        self._restore()
        _depth[0] -= 1
        if _depth[0] == 0 and _caught:
            late = list(dict.fromkeys(_caught))
            _caught.clear()
            for signum in late:  # as if they came now
                _signal.raise_signal(signum)


def pending() -> int | None:
    """The first stopping signal `held` caught and nobody consumed, if any."""
    return _caught[0] if _caught else None


def consume(signum: int) -> None:
    """`signum` has been dealt with: it is not raised again on leaving `held`."""
    _caught[:] = [s for s in _caught if s != signum]


def consume_all() -> int | None:
    """Every signal `held` caught has been dealt with; the first of them, or None."""
    first = pending()
    _caught.clear()
    return first


def interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C (or SIGTERM, SIGHUP) another exception wraps, if any: Python turns one that
    lands in a class body's `__set_name__` — libcst's node classes, imported on first use —
    into a RuntimeError caused by it."""
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
