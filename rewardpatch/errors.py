"""Errors a user can cause, each carrying the exit code the CLI documents.

0 success; 1 a check failed or the tree's state refused the operation;
2 usage or input error; 74 a read-only command (list-heads, check, --dry-run) could not write
its report (stdout full or closed: sysexits.h's EX_IOERR) — a command that changed the tree
keeps its own code then; 128 + the signal's number when a signal stopped it, as shells
report it: 130 Ctrl-C (SIGINT), 143 SIGTERM, 129 SIGHUP.
"""

import signal

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_REPORT_LOST = 74
EXIT_INTERRUPTED = 130


class RewardpatchError(Exception):
    """An error the user can fix; the CLI prints its message as one line."""

    exit_code = EXIT_USAGE


class InputError(RewardpatchError):
    """Bad path, not an MMSeg tree, unknown head, unsupported version."""

    exit_code = EXIT_USAGE


class StateError(RewardpatchError):
    """The tree's state refuses the operation: dirty file, conflict, drift."""

    exit_code = EXIT_REFUSED


class Interrupted(RewardpatchError):
    """Ctrl-C, SIGTERM or SIGHUP: whatever was half written has been rolled back."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.exit_code = 128 + signum
