"""The MMSegmentation this interpreter imports, for plugin mode's verbs (`list-heads --installed`,
`config --plugin`, `verify --installed`).

It is found as `import mmseg` finds it (site-packages, an editable install, PYTHONPATH), minus
the current directory: the training process runs a script, not `python -c` from here. Its
verdicts are read off the files without importing it; what plugin mode registers once a
project's modules are imported comes from a probe: a fresh interpreter that imports them and
`rewardpatch.plugin`, as a config's custom_imports does, and reports (plugin.report()).
"""

from __future__ import annotations

import importlib.util
import json
import os
import site
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .dependencies import python_without_cwd
from .errors import InputError
from .notice import Notices
from .tree import MMSegTree

PLUGIN_MODULE = "rewardpatch.plugin"


@contextmanager
def _without_cwd():
    here = {"", ".", os.getcwd()}
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if p not in here]
    try:
        yield
    finally:
        sys.path[:] = saved


def installed_root() -> Path:
    """The folder holding the `mmseg` package this interpreter imports, found without importing it."""
    loaded = getattr(sys.modules["mmseg"], "__file__", None) if "mmseg" in sys.modules else None
    if loaded:
        return Path(loaded).resolve().parent.parent
    with _without_cwd():
        try:
            spec = importlib.util.find_spec("mmseg")
        except (ImportError, ValueError):
            spec = None
    if spec is None or not spec.origin or not spec.origin.endswith("__init__.py"):
        raise InputError(
            f"no MMSegmentation is importable by this interpreter ({sys.executable}): plugin mode works with "
            "the rewardpatch installed beside your MMSeg (pip install it into that environment)"
        )
    return Path(spec.origin).resolve().parent.parent


def installed_tree(mmseg_version: str | None = None) -> MMSegTree:
    """The installed MMSeg as a tree to read (never written)."""
    return MMSegTree.open(installed_root(), mmseg_version)


def package_path() -> list[str]:
    """Where this rewardpatch is imported from, unless the interpreter finds it there anyway
    (site-packages): a child process must run this command's rewardpatch."""
    parent = Path(__file__).resolve().parents[1]
    known = {Path(p).resolve() for p in [*site.getsitepackages(), site.getusersitepackages()]}
    return [] if parent in known else [str(parent)]


def child_env() -> dict[str, str]:
    """The environment of a child that imports the installed MMSeg: the user's PYTHONPATH (their
    project's modules, made absolute: the child may start elsewhere), then this rewardpatch."""
    path = [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p] + package_path()
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), "PYTHONUNBUFFERED": "1"}


PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
import rewardpatch.plugin as plugin
print(json.dumps(plugin.report()))
"""


def probe(imports: list[str]) -> dict:
    """plugin.report() of a fresh interpreter that imported `imports`, then rewardpatch.plugin.
    InputError with the import's last line when that fails."""
    command = [*python_without_cwd(), "-c", PROBE, *[name for name in imports if name != PLUGIN_MODULE]]
    # its warnings (a project head that gets no reward version) are not repeated: the report's
    # verdicts hold them, and the caller shows those
    with tempfile.TemporaryDirectory() as empty:  # the current directory of a Python without -P
        result = subprocess.run(command, env=child_env(), capture_output=True, text=True, cwd=empty)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit code {result.returncode}"
        names = ", ".join([*imports, PLUGIN_MODULE])
        raise InputError(f"importing {names} failed: {last}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def plugin_verdicts(tree: MMSegTree, imports: list[str], notices: Notices):
    """list-heads' verdicts in plugin mode: the installed `tree`'s heads, read off its files, then
    those of the project's `imports` (a probe imports them; none when there are none). The
    files it skips are warnings in `notices`."""
    from .head_index import HeadInfo
    from .planning import list_heads

    heads = list_heads(tree, notices)
    if imports:
        heads += [HeadInfo.from_json(h) for h in probe(imports)["project_heads"]]
    return heads


def list_heads_hint(imports: list[str]) -> str:
    """The command that shows plugin mode's verdicts with these project modules."""
    return "rewardpatch list-heads --installed" + "".join(f" --import {name}" for name in imports)
