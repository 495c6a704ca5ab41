"""The `rewardpatch` script and `python -m rewardpatch`: the signal handlers first, then the CLI.

The handlers go in before anything else loads (signals.py imports the interpreter's builtin
`_signal` alone), so that a signal during the CLI's imports (click, libcst, gitpython: a
noticeable part of a second) ends in one line and its exit code too. What comes before —
the interpreter's own start-up, its site packages — is Python's, and prints Python's traceback.
"""

import os

from .signals import STOPPING, install, interrupt_behind, signum_of


def _reopen_closed_descriptors() -> None:
    """Descriptors 0-2 closed by whoever started us (`rewardpatch apply >&-`): os.devnull goes
    on them, so that no file rewardpatch opens (the lock, a temporary file) takes their number
    and no child (git) writes into it. Python has made sys.stdout None then: the report counts
    as lost (streams.py)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


install()  # at import: before run() is even called
_reopen_closed_descriptors()


def run() -> None:
    try:
        import sys

        from .cli import main

        code = main()
        _decided()
    except (KeyboardInterrupt, Exception) as exc:  # while the CLI was imported: nothing was read or written
        interrupt = interrupt_behind(exc)  # itself, or the one Python wrapped in another error
        if interrupt is None:
            raise
        code = _interrupted(interrupt)
    sys.exit(code)


def _interrupted(interrupt: KeyboardInterrupt) -> int:
    _decided()
    import sys

    print("rewardpatch: error: interrupted", file=sys.stderr)
    return 128 + signum_of(interrupt)


def _decided() -> None:
    """The outcome is decided: a late signal must not print a traceback on the way out."""
    import _signal

    for signum in STOPPING:
        _signal.signal(signum, _signal.SIG_IGN)


if __name__ == "__main__":
    run()
