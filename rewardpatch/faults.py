"""The fault-injection seam of the writer: stop the process at its k-th write step.

Every step that changes the disk (the journal, each temporary file, each rename or
unlink, the commit, each step of a recovery) calls `step(phase, what)` first. With
REWARDPATCH_FAULT unset that is a dictionary lookup; with it set to `PHASE:K:MODE`
(PHASE `write` or `recover`) the K-th step of that phase, counted from 1 in each run,
does MODE instead:

    exit   os._exit(137): nothing runs after it, as after SIGKILL or a power cut
    kill   SIGKILL, SIGTERM, SIGINT or SIGHUP sent to this process (`kill`, `term`, `int`, `hup`)
    crash  raise Crash, a BaseException nothing in rewardpatch catches (the in-process stand-in for exit)
    enospc raise OSError(ENOSPC), as a full disk would

The tests run it in-process (crash, int, term, enospc) for every step of apply, revert,
--force and --adopt; benchmarks/bench_crash.py runs the real signals in child processes.
"""

from __future__ import annotations

import errno
import os
import signal

ENV = "REWARDPATCH_FAULT"
SIGNALS = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "int": signal.SIGINT, "hup": signal.SIGHUP}
_counts: dict[str, int] = {}


class Crash(BaseException):
    """The process stops here, as far as rewardpatch's own code can tell."""


def begin(phase: str) -> None:
    """A run of `phase` starts: its steps count from 1 again."""
    _counts[phase] = 0


def steps(phase: str) -> int:
    """How many steps the last run of `phase` took."""
    return _counts.get(phase, 0)


def step(phase: str, what: str) -> None:
    _counts[phase] = _counts.get(phase, 0) + 1
    spec = os.environ.get(ENV)
    if not spec:
        return
    at_phase, at, mode = (spec.split(":") + ["", ""])[:3]
    if at_phase != phase or not at.isdigit() or int(at) != _counts[phase]:
        return
    if mode == "exit":
        os._exit(137)
    if mode in SIGNALS:
        os.kill(os.getpid(), SIGNALS[mode])
        return  # blocked while writing: pending until the writer looks
    if mode == "crash":
        raise Crash(f"{phase} step {at}: {what}")
    if mode == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), what)
    raise ValueError(f"{ENV}={spec!r}: unknown mode {mode!r}")
