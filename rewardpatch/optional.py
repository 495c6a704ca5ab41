"""Optional dependencies of the analysis verbs (stats, plot): numpy, Pillow, matplotlib."""

from __future__ import annotations

import importlib

from .errors import InputError


def require(module: str, package: str):
    """Import an optional dependency, or fail with the line that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(
            f"this command needs {package}: pip install {package} (or pip install 'rewardpatch[analysis]')"
        ) from None
