"""Warnings for the user: one line each on stderr; the command goes on.

Code that reads a tree does not print: it collects its warnings in a `Notices`, as a libcst
`CodemodContext` collects a codemod's, and the verb prints them (`printed`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


def warn(message: str) -> None:
    # sys.stderr is looked up at each call, so a test's capture or click's runner sees it
    print(f"rewardpatch: warning: {message}", file=sys.stderr)


@dataclass
class Notices:
    """The warnings collected while a tree was read, in the order they were found."""

    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        self.warnings.append(message)


@contextmanager
def deferred_warnings() -> Iterator[Notices]:
    """Notices whose warnings are printed (`warn`) when the block ends, however it ends: a
    warning found before an error is shown before the error's line."""
    notices = Notices()
    try:
        yield notices
    finally:
        for message in notices.warnings:
            warn(message)
