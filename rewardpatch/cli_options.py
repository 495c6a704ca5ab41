"""Options shared by the verbs of cli.py and those in their own modules (verify, config)."""

from __future__ import annotations

import click

from .mmseg_generations import supported_versions

MMSEG_VERSION_HELP = (
    f"The MMSegmentation release TREE is based on ({supported_versions()}). It wins over what "
    "mmseg/version.py says (a fork's unreleased or computed version, a merge conflict), with a warning."
)


def mmseg_version_option(function):
    """--mmseg-version X.Y.Z, handed to MMSegTree.open (which checks it)."""
    return click.option("--mmseg-version", "mmseg_version", metavar="X.Y.Z", help=MMSEG_VERSION_HELP)(function)


def tree_or_installed(tree: str | None, installed: bool, imports) -> None:
    """TREE, or --installed (plugin mode) with its --import modules: exactly one."""
    if installed == (tree is not None):
        raise click.UsageError("give TREE or --installed" if tree is None else "give TREE or --installed, not both")
    if imports and not installed:
        raise click.UsageError("--import goes with --installed (a tree's own heads are read from its files)")
