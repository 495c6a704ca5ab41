"""`--reward KEY=VALUE`, checked by the tree's own `check_reward_cfg` without importing torch."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path
from typing import Callable

from ..errors import InputError, StateError
from ..mmseg_generations import data_dir

# The inserted module that holds the `reward_cfg` schema: it imports nothing, torch included.
SCHEMA_TEMPLATE = "reward_schema.py"


def _schema_path(tree, plugin: bool) -> Path:
    spec = next((t for t in tree.generation.templates if t.source == SCHEMA_TEMPLATE), None)
    if spec is not None and plugin:
        return data_dir("templates") / spec.source
    path = None if spec is None else tree.root / spec.target
    if path is None or not path.is_file():
        raise StateError(f"{tree.root}: {SCHEMA_TEMPLATE} is missing; run `rewardpatch check {tree.root}`")
    return path


def reward_cfg_checker(tree, plugin: bool = False) -> Callable[[dict], dict]:
    """The `check_reward_cfg` of the tree's reward_schema.py, imported by path; with `plugin`,
    of rewardpatch's own template, the module rewardpatch.plugin registers from.

    The schema module imports nothing (torch included), so `config` checks what the tree's
    own code will check when the model is built. It is loaded under a private name and
    left out of sys.modules: it is the tree's file, not a module of rewardpatch.
    """
    path = _schema_path(tree, plugin)
    spec = importlib.util.spec_from_file_location(f"rewardpatch_tree_{path.stem}", path)
    assert spec is not None and spec.loader is not None  # a .py file's: the source file loader
    module = importlib.util.module_from_spec(spec)
    writes_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # no __pycache__ of ours in the user's tree
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the tree's file: whatever it raises is the tree's state
        raise StateError(
            f"{path}: does not import ({type(exc).__name__}: {exc}); run `rewardpatch check {tree.root}`"
        ) from None
    finally:
        sys.dont_write_bytecode = writes_bytecode
    check = getattr(module, "check_reward_cfg", None)
    if check is None:
        raise StateError(f"{tree.root}: {SCHEMA_TEMPLATE} defines no check_reward_cfg; run `rewardpatch apply`")
    return check


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        lowered = text.strip().lower()
        return {"true": True, "false": False, "none": None}.get(lowered, text.strip())


def parse_reward_options(values: tuple[str, ...]) -> dict:
    """['mode=weighted_ce', 'num_samples=4,temperature=0.5'] -> {'mode': 'weighted_ce', ...}."""
    reward_cfg = {}
    for value in values:
        for item in value.split(","):
            key, sep, text = item.partition("=")
            if not sep or not key.strip() or not text.strip():
                raise InputError(f"--reward expects KEY=VALUE, got {item!r}")
            reward_cfg[key.strip()] = _literal(text)
    return reward_cfg
