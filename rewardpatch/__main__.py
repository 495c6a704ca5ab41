"""The `rewardpatch` script and `python -m rewardpatch`: the signal handlers first, then the CLI.

The handlers go in before the CLI's imports (click, libcst, gitpython: a noticeable part
of a second), so that a signal while they load ends in one line and its exit code too.
"""

import signal
import sys

from .signals import STOPPING, install, signum_of


def run() -> None:
    install()
    try:
        from .cli import main

        code = main()
    except KeyboardInterrupt as exc:  # while the CLI was being imported: nothing was read or written
        print("rewardpatch: error: interrupted", file=sys.stderr)
        code = 128 + signum_of(exc)
    for signum in STOPPING:  # the outcome is decided: a late signal must not print a traceback on the way out
        signal.signal(signum, signal.SIG_IGN)
    sys.exit(code)


if __name__ == "__main__":
    run()
