"""The `rewardpatch` script and `python -m rewardpatch`: the signal handlers first, then the CLI.

The handlers go in before the CLI's imports (click, libcst, gitpython: a noticeable part
of a second), so that a signal while they load ends in one line and its exit code too.
"""

from .signals import STOPPING, install, signum_of  # imports `signal` alone

install()  # first: at import, before run() and before the CLI's imports

import signal  # noqa: E402 - loaded already; after the handlers on purpose
import sys  # noqa: E402


def _decided() -> None:
    """The outcome is decided: a late signal must not print a traceback on the way out."""
    for signum in STOPPING:
        signal.signal(signum, signal.SIG_IGN)


def run() -> None:
    install()
    try:
        from .cli import main

        code = main()
        _decided()
    except KeyboardInterrupt as exc:  # while the CLI was being imported: nothing was read or written
        _decided()
        print("rewardpatch: error: interrupted", file=sys.stderr)
        code = 128 + signum_of(exc)
    sys.exit(code)


if __name__ == "__main__":
    run()
