"""How two configs differ, leaf by leaf, and the override that mmengine merges into the one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

UNSET = object()  # a key absent from the source
REMOVED = object()  # a key absent from the fine-tune config
WHOLE_LINE = 200  # a changed-type dict this short is listed whole, a longer one key by key


@dataclass(frozen=True)
class Change:
    """One leaf that differs, as the header comment of OUT lists it."""

    path: str
    before: object
    after: object
    note: str | None = None

    def line(self) -> str:
        note = f"  ({self.note})" if self.note else ""
        return f"{self.path}: {_show(self.before)} -> {_show(self.after)}{note}"


def _show(value, top: bool = True) -> str:
    """A compact, readable form: registry dicts as Type(k=v), top-level strings bare."""
    if value is UNSET or value is REMOVED:
        return "(unset)" if value is UNSET else "(removed)"
    if isinstance(value, str):
        return value if top else repr(value)
    if isinstance(value, dict):
        items = {k: v for k, v in value.items() if k not in ("type", "_delete_")}
        body = ", ".join(f"{k}={_show(v, False)}" for k, v in items.items())
        name = value.get("type") if isinstance(value.get("type"), str) else "dict"
        return f"{name}({body})"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v, False) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(_show(v, False) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def same(a, b) -> bool:
    """Equal and of the same types all the way down (True is not 1, (1,) is not [1])."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(same, a, b))
    return a == b


def _replaced(before: dict, after: dict, path: str) -> bool:
    """A registry dict whose type changed, short enough to read on one line as a whole."""
    if before.get("type") == after.get("type"):
        return False
    return len(Change(path, before, after).line()) <= WHOLE_LINE


def leaf_changes(before, after, path: str = "") -> Iterator[Change]:
    """Every leaf of `after` that differs from `before`, dicts and equal-length lists descended."""
    if type(before) is dict and type(after) is dict and not _replaced(before, after, path):
        for key, value in after.items():
            sub = f"{path}.{key}" if path else str(key)
            yield from leaf_changes(before.get(key, UNSET), value, sub)
        for key in [k for k in before if k not in after]:
            yield Change(f"{path}.{key}" if path else str(key), before[key], REMOVED)
    elif type(before) is type(after) and isinstance(after, (list, tuple)) and len(before) == len(after):
        for index, (old, new) in enumerate(zip(before, after)):
            yield from leaf_changes(old, new, f"{path}[{index}]")
    elif not same(before, after):
        yield Change(path, before, after)


def merge_override(before, after):
    """The value that mmengine's `_base_` merge combines with `before` into `after`.

    A dict merges key by key, so only differing keys are written; a dict that loses keys,
    or replaces a non-dict, needs `_delete_=True` and its full content; anything else
    (lists included) replaces the inherited value.
    """
    if isinstance(after, dict):
        if not isinstance(before, dict) or before.keys() - after.keys():
            return {"_delete_": True, **after} if before is not UNSET else after
        return {
            key: merge_override(before.get(key, UNSET), value)
            for key, value in after.items()
            if not same(before.get(key, UNSET), value)
        }
    return after
