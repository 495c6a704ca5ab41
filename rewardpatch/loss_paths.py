"""On which paths a head's loss method reaches its base's loss, and so the reward.

MaskCLIP's ATMHead hands its labels to the base only on one branch:

    def losses(self, seg_logit, seg_label):
        if self.CE_loss:
            return super().losses(seg_logit, seg_label)
        ...  # its own loss

A delegating call exists, yet with `CE_loss=False` (its default) the reward never runs.
This module follows a loss method's `if` statements and conditional expressions path by
path, with ast, and says under which condition the delegating call runs: always, never,
or a `Condition` written as the tests read (`self.CE_loss`). Loops, `with` and `try`
bodies are followed as if they ran; a method with more than MAX_PATHS paths is not
analysed (a hostile tree must not cost more than that), and reads as delegating always.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Union

from .import_graph import expression_text

if TYPE_CHECKING:  # typing has TypeGuard from Python 3.10; only mypy reads it here
    from typing_extensions import TypeGuard

MAX_PATHS = 64


@dataclass(frozen=True)
class Literal:
    """A test on a path, as written, and whether it holds there."""

    test: str
    holds: bool
    attribute: str | None = None  # X when the test is `self.X` or `self.X == <literal>`: what a constructor may set
    compared: tuple = ()  # (the literal,) when the test is `self.X == <literal>` or `self.X is <literal>`

    def __str__(self) -> str:
        return self.test if self.holds else f"not {self.test}"

    def setting(self) -> tuple:
        """(the value of `attribute` that makes this literal hold,), or () when no one value does."""
        if self.attribute is None:
            return ()
        if not self.compared:
            return (self.holds,)
        return self.compared if self.holds else ()


@dataclass(frozen=True)
class Condition:
    """Any of `terms` holds, each term all of its literals."""

    terms: tuple[tuple[Literal, ...], ...]

    def __str__(self) -> str:
        return " or ".join(" and ".join(map(str, term)) for term in self.terms)

    def both(self, other: "Condition") -> "Condition":
        return Condition(_simplified([a + b for a in self.terms for b in other.terms]))


ALWAYS = "always"
NEVER = "never"
Reach = Union[str, Condition]  # ALWAYS, NEVER or the condition


class _TooManyPaths(Exception):
    pass


def reaching_condition(function: ast.FunctionDef, delegates: Callable[[ast.AST], bool], source: str) -> Reach:
    """When `function` (of the module `source`) runs a call for which `delegates` holds."""
    walk = _Walk(delegates, source)
    try:
        fell_through = walk.block(function.body, [()])
    except _TooManyPaths:
        return ALWAYS if any(delegates(node) for node in ast.walk(function)) else NEVER
    if not walk.delegated:
        return NEVER
    if not walk.escaped and not fell_through:
        return ALWAYS
    terms = _simplified(walk.delegated)
    return ALWAYS if () in terms else Condition(terms)


Path = tuple  # the literals met so far, in order


class _Walk:
    def __init__(self, delegates: Callable[[ast.AST], bool], source: str):
        self.delegates = delegates
        self.source = source
        self.delegated: list[Path] = []
        self.escaped: list[Path] = []

    def _reaches(self, node: ast.AST) -> bool:
        return any(self.delegates(child) for child in ast.walk(node))

    def block(self, statements: list[ast.stmt], paths: list[Path]) -> list[Path]:
        """The paths still running after `statements`, not having delegated."""
        for statement in statements:
            paths = [after for path in paths for after in self.statement(statement, path)]
            if len(paths) > MAX_PATHS:
                raise _TooManyPaths
            if not paths:
                break
        return paths

    def statement(self, node: ast.stmt, path: Path) -> list[Path]:
        if isinstance(node, ast.If) and not self._reaches(node.test):
            return [
                *self.branch(node.test, True, path, lambda taken: self.block(node.body, [taken])),
                *self.branch(node.test, False, path, lambda taken: self.block(node.orelse, [taken])),
            ]
        if isinstance(node, (ast.With, ast.AsyncWith, ast.For, ast.AsyncFor, ast.While)):
            return self.block(node.body, [path])
        if isinstance(node, ast.Try):
            return self.block(node.body + node.finalbody, [path])
        value = getattr(node, "value", None)
        if isinstance(value, ast.IfExp) and not self._reaches(value.test):
            ends = isinstance(node, ast.Return)
            return [
                *self.branch(value.test, True, path, lambda taken: self.expression(value.body, taken, ends)),
                *self.branch(value.test, False, path, lambda taken: self.expression(value.orelse, taken, ends)),
            ]
        if self._reaches(node):
            self.delegated.append(path)
            return []
        if isinstance(node, (ast.Return, ast.Raise)):
            self.escaped.append(path)
            return []
        return [path]

    def expression(self, node: ast.expr, path: Path, ends: bool) -> list[Path]:
        if self._reaches(node):
            self.delegated.append(path)
            return []
        if ends:
            self.escaped.append(path)
            return []
        return [path]

    def branch(self, test: ast.expr, holds: bool, path: Path, follow) -> list[Path]:
        literal = _literal(test, holds, self.source)
        known = next((lit.holds for lit in path if lit.test == literal.test), None)
        if known is None:
            return follow(path + (literal,))
        return follow(path) if known == literal.holds else []


def _literal(test: ast.expr, holds: bool, source: str) -> Literal:
    while isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        test, holds = test.operand, not holds
    text = expression_text(test, source)
    if _self_attribute(test):
        return Literal(text, holds, test.attr)
    if (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], (ast.Eq, ast.Is))
            and _self_attribute(test.left) and isinstance(test.comparators[0], ast.Constant)):
        return Literal(text, holds, test.left.attr, (test.comparators[0].value,))
    return Literal(text, holds)


def _self_attribute(node: ast.expr) -> TypeGuard[ast.Attribute]:
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"


def _simplified(terms: list[Path]) -> tuple[Path, ...]:
    """The terms without repeats, merged where two differ in one literal's truth only
    (a and b or a and not b: a), and without a term another's literals all imply."""
    current = {tuple(dict.fromkeys(term)) for term in terms}
    changed = True
    while changed:
        changed = False
        for a in sorted(current, key=str):
            for b in sorted(current, key=str):
                merged = _merge(a, b)
                if merged is not None:
                    current -= {a, b}
                    current.add(merged)
                    changed = True
                    break
            if changed:
                break
    kept = [t for t in current if not any(o != t and set(o) <= set(t) for o in current)]
    return tuple(sorted(kept, key=lambda t: (len(t), str(t))))


def _merge(a: Path, b: Path) -> Path | None:
    if len(a) != len(b) or set(a) == set(b):
        return None
    only_a, only_b = set(a) - set(b), set(b) - set(a)
    if len(only_a) == 1 and len(only_b) == 1:
        x, y = only_a.pop(), only_b.pop()
        if x.test == y.test and x.holds != y.holds:
            return tuple(lit for lit in a if lit != x)
    return None
