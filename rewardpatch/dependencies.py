"""Optional dependencies: numpy, Pillow, matplotlib for stats and plot; torch and mmengine
(the verification stack) for config and verify."""

from __future__ import annotations

import importlib
import importlib.util
import sys

from .errors import InputError


def require(module: str, package: str):
    """Import an optional dependency, or fail with the line that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(
            f"this command needs {package}: pip install {package} (or pip install 'rewardpatch[analysis]')"
        ) from None


def require_stack(verb: str, modules: tuple[str, ...]) -> None:
    """Before `verb` starts, fail with one line naming the first of `modules` not installed.

    Looked up, not imported: verify imports them only in its worker, where a missing one
    would end in a traceback in a log file.
    """
    for needed in modules:
        if all(_missing(module) for module in needed.split("|")):
            module = " or ".join(needed.split("|"))
            raise InputError(
                f"{verb} needs {module}, which cannot be imported here: "
                "`make setup` installs the verification stack (README, Set-up)"
            )


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ValueError:  # in sys.modules without a spec: importable all the same
        return False


def python_without_cwd() -> list[str]:
    """This interpreter, started so that its current directory is not put on sys.path: `-P`
    from Python 3.11. Below 3.11 there is no such flag: the callers start it in a folder of
    their own (verify: its workdir; the plugin probe: an empty temporary folder), never in
    the user's current directory, which may be a fork's root."""
    return [sys.executable, "-P"] if sys.version_info >= (3, 11) else [sys.executable]
