"""Warnings for the user: one line each on stderr; the command goes on."""

from __future__ import annotations

import sys


def warn(message: str) -> None:
    # sys.stderr is looked up at each call, so a test's capture or click's runner sees it
    print(f"rewardpatch: warning: {message}", file=sys.stderr)
