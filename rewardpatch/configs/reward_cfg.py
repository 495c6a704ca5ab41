"""`--reward KEY=VALUE`, checked by the tree's own `check_reward_cfg` without importing torch."""

from __future__ import annotations

import ast
import builtins
from typing import Callable

from ..errors import InputError, StateError


def _module_of(tree, template: str, texts: dict[str, str] | None) -> ast.Module:
    spec = next((t for t in tree.generation.templates if t.source == template), None)
    text = None if spec is None else texts.get(spec.target) if texts is not None else tree.read(spec.target)
    if text is None:
        raise StateError(f"{tree.root}: {template} is missing; run `rewardpatch check {tree.root}`")
    return ast.parse(text)


def _literal_constants(module: ast.Module) -> dict:
    """Every module-level `NAME = <literal>` (dict(...) calls of literals included)."""
    constants = {}
    for node in module.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        try:
            constants[node.targets[0].id] = eval(
                compile(ast.Expression(node.value), node.targets[0].id, "eval"), {"__builtins__": {"dict": dict}}
            )
        except Exception:  # noqa: BLE001 - not a literal: the checker cannot use it
            continue
    return constants


def reward_cfg_checker(tree, texts: dict[str, str] | None = None) -> Callable[[dict], dict]:
    """The tree's `check_reward_cfg`, run without importing torch; from `texts` {path: text}
    instead of the tree's files when given (plugin mode: planner.created_texts).

    The inserted reward_estimator.py imports torch; its validation reads only the
    module's literal constants (modes, scopes, defaults). Those are evaluated from the
    syntax tree and the function is compiled alone, so `config` checks what the tree's
    own code will check when the model is built.
    """
    module = _module_of(tree, "reward_estimator.py", texts)
    function = next((n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == "check_reward_cfg"), None)
    if function is None:
        raise StateError(f"{tree.root}: reward_estimator.py defines no check_reward_cfg; run `rewardpatch apply`")
    namespace = {"__builtins__": builtins, **_literal_constants(module)}
    exec(compile(ast.Module(body=[function], type_ignores=[]), "check_reward_cfg", "exec"), namespace)
    return namespace["check_reward_cfg"]


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
