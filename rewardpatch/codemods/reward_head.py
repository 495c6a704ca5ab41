"""Turn a head module into its reward module: `aspp_head.py` -> `reward_aspp_head.py`.

The selected classes are copied with their syntax tree edited in four places only: the
class name (ASPPHead -> RewardASPPHead), the head base (BaseDecodeHead -> RewardDecodeHead,
FCNHead -> RewardFCNHead), explicit `super(ASPPHead, self)` calls, and the arguments of
`register_module` (name='X' -> name='RewardX', force= dropped). Everything else the
source module defines is imported from it rather than copied, so no helper class and no
registry entry exists twice. Imports the copy no longer reads are dropped.
"""

from __future__ import annotations

import tokenize
from dataclasses import dataclass

import libcst as cst

from ..naming import REWARD_PREFIX
from .imports import (
    Statement,
    bound_name,
    code,
    imports_of_line,
    insert_relative_import,
    is_import_line,
    relative_import,
)
from .layout import fit_renamed_super_lines


@dataclass(frozen=True)
class RewardClass:
    """One class to copy: its name, the base to swap, and what replaces that base."""

    name: str
    reward_name: str
    base: str  # the base expression as written in the source ('BaseDecodeHead', 'FCNHead')
    reward_base: str  # 'RewardDecodeHead', 'RewardFCNHead'
    reward_base_module: str  # module stem the reward base is imported from
    used_names: frozenset[str]
    explicit_super: bool


class ExplicitSuperRenamer(cst.CSTTransformer):
    """super(ASPPHead, self) -> super(RewardASPPHead, self) inside the copied class."""

    def __init__(self, name: str, reward_name: str):
        super().__init__()
        self.name = name
        self.reward_name = reward_name

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.Call:
        if not (isinstance(updated.func, cst.Name) and updated.func.value == "super"):
            return updated
        if len(updated.args) != 2:
            return updated
        first = updated.args[0]
        if isinstance(first.value, cst.Name) and first.value.value == self.name:
            return updated.with_changes(
                args=[first.with_changes(value=cst.Name(self.reward_name)), *updated.args[1:]]
            )
        return updated


def _reward_names(value: cst.BaseExpression) -> cst.BaseExpression:
    """'X' -> 'RewardX' (quotes, prefixes and concatenation kept); a list or tuple of them, each."""
    if isinstance(value, cst.SimpleString):
        start = len(value.prefix) + len(value.quote)
        return value.with_changes(value=value.value[:start] + REWARD_PREFIX + value.value[start:])
    if isinstance(value, cst.ConcatenatedString):
        return value.with_changes(left=_reward_names(value.left))
    if isinstance(value, (cst.List, cst.Tuple)):
        return value.with_changes(elements=[e.with_changes(value=_reward_names(e.value)) for e in value.elements])
    return value  # None: registered under the class name, which the copy renames


def _reward_registration(decorator: cst.Decorator) -> cst.Decorator:
    """register_module(name='X', force=True) -> register_module(name='RewardX').

    mmcv and mmengine take (name, force, module): a positional name stays positional and a
    keyword stays a keyword. force is never copied, so the copy can never replace a head.
    """
    call = decorator.decorator
    if not (isinstance(call, cst.Call) and isinstance(call.func, cst.Attribute)):
        return decorator
    if call.func.attr.value != "register_module":
        return decorator
    args = []
    for position, arg in enumerate(call.args):
        keyword = arg.keyword.value if arg.keyword is not None else None
        positional = arg.keyword is None and not arg.star
        if keyword == "force" or (positional and position == 1):
            continue
        if keyword == "name" or (positional and position == 0):
            arg = arg.with_changes(value=_reward_names(arg.value))
        args.append(arg)
    if len(args) == len(call.args):
        return decorator.with_changes(decorator=call.with_changes(args=args))
    if args:
        args[-1] = args[-1].with_changes(comma=call.args[-1].comma)  # the trailing comma, as it was
        return decorator.with_changes(decorator=call.with_changes(args=args))
    return decorator.with_changes(decorator=call.with_changes(args=[], whitespace_before_args=cst.SimpleWhitespace("")))


def rewrite_class(node: cst.ClassDef, spec: RewardClass) -> cst.ClassDef:
    bases = []
    for arg in node.bases:
        if arg.keyword is None and code(arg.value) == spec.base:
            arg = arg.with_changes(value=cst.Name(spec.reward_base))
        bases.append(arg)
    decorators = [_reward_registration(d) for d in node.decorators]
    node = node.with_changes(name=cst.Name(spec.reward_name), bases=bases, decorators=decorators)
    if spec.explicit_super:
        renamed = node.visit(ExplicitSuperRenamer(spec.name, spec.reward_name))
        assert isinstance(renamed, cst.ClassDef)  # the renamer changes names inside it, never the class itself
        node = renamed
    return node


class _NameCollector(cst.CSTVisitor):
    """The names a statement mentions (`names`; None, True and False, Names to libcst, are not
    names a copy reads) and those it binds by import or assignment (`bound`)."""

    CONSTANTS = frozenset({"None", "True", "False"})

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.bound: set[str] = set()

    def visit_Name(self, node: cst.Name) -> None:
        if node.value not in self.CONSTANTS:
            self.names.add(node.value)

    def visit_ImportAlias(self, node: cst.ImportAlias) -> None:
        self.bound.add(bound_name(node))

    def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
        if isinstance(node.target, cst.Name):
            self.bound.add(node.target.value)


def _is_import_block(statement: cst.BaseStatement) -> bool:
    """A top-level try/if made only of imports and assignments (an optional-dependency fallback)."""
    if not isinstance(statement, (cst.Try, cst.If)):
        return False
    simple = (cst.Import, cst.ImportFrom, cst.Assign, cst.Pass, cst.Expr)
    for line in _all_lines(statement):
        if not isinstance(line, cst.SimpleStatementLine):
            return False
        if not all(isinstance(small, simple) for small in line.body):
            return False
    return True


def _all_lines(statement: cst.Try | cst.If) -> list[cst.BaseStatement | cst.BaseSmallStatement]:
    """The statements of every branch of `statement`: lines, or the small statements of a
    branch written on its header's line (`if x: import y`)."""
    lines: list[cst.BaseStatement | cst.BaseSmallStatement] = list(statement.body.body)
    if isinstance(statement, cst.Try):
        for handler in statement.handlers:
            lines.extend(handler.body.body)
        for extra in (statement.orelse, statement.finalbody):
            if extra is not None:
                lines.extend(extra.body.body)
    elif statement.orelse is not None:
        orelse = statement.orelse
        if isinstance(orelse, cst.If):
            lines.extend(_all_lines(orelse))
        else:
            lines.extend(orelse.body.body)
    return lines


def _prune_import_line(statement: cst.SimpleStatementLine, used: set[str]) -> cst.SimpleStatementLine | None:
    kept_smalls: list[cst.BaseSmallStatement] = []
    for small in imports_of_line(statement):
        if isinstance(small, cst.ImportFrom) and small.module and small.module.value == "__future__":
            kept_smalls.append(small)
            continue
        if isinstance(small.names, cst.ImportStar):
            kept_smalls.append(small)
            continue
        aliases = [a for a in small.names if bound_name(a) in used]
        if not aliases:
            continue
        if len(aliases) != len(small.names):
            aliases[-1] = aliases[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
            small = small.with_changes(names=aliases)
        kept_smalls.append(small)
    if not kept_smalls:
        return None
    kept_smalls[-1] = kept_smalls[-1].with_changes(semicolon=cst.MaybeSentinel.DEFAULT)
    return statement.with_changes(body=kept_smalls)


def render_reward_module(
    source: str,
    source_stem: str,
    classes: list[RewardClass],
    defined: set[str],
    header: list[str],
) -> str:
    """The text of the reward module for `classes` of the module `source`."""
    module = cst.parse_module(source)
    selected = {c.name: c for c in classes}
    generated_here = {c.reward_name for c in classes}

    used: set[str] = set()
    for spec in classes:
        used |= spec.used_names
    imports_from_source = sorted((used & defined) - {"__all__"})

    rewritten: list[Statement] = []
    imports: list[Statement] = []  # import lines and import blocks (try/except, if), in order
    for statement in module.body:
        if isinstance(statement, cst.ClassDef) and statement.name.value in selected:
            spec = selected[statement.name.value]
            rewritten.append(rewrite_class(statement, spec))
            for arg in statement.bases:
                if arg.keyword is None and code(arg.value) != spec.base:
                    collector = _NameCollector()
                    arg.visit(collector)
                    used |= collector.names
        elif is_import_line(statement) or _is_import_block(statement):
            imports.append(statement)

    # A block stays when it binds (imports or assigns) a name the copy reads; the names it reads
    # are then read too (by the blocks after it and the import lines). An import line keeps the
    # names read.
    blocks_kept: list[bool] = []
    for statement in imports:
        if not is_import_line(statement):
            collector = _NameCollector()
            statement.visit(collector)
            blocks_kept.append(bool(collector.bound & used))
            if blocks_kept[-1]:
                used |= collector.names

    new_imports: dict[str, set[str]] = {}
    if imports_from_source:
        new_imports[source_stem] = set(imports_from_source)
    for spec in classes:
        if spec.reward_base not in generated_here:
            new_imports.setdefault(spec.reward_base_module, set()).add(spec.reward_base)

    body: list[Statement] = []
    orphaned_lines: list[cst.EmptyLine] = []  # the blank line that separated a dropped import group
    verdicts = iter(blocks_kept)
    for statement in imports:
        kept: Statement | None
        if is_import_line(statement):
            kept = _prune_import_line(statement, used)
            if kept is None:
                orphaned_lines = orphaned_lines or list(statement.leading_lines)
        else:
            kept = statement if next(verdicts) else None
        if kept is not None:
            if orphaned_lines and not kept.leading_lines and body:
                kept = kept.with_changes(leading_lines=orphaned_lines)
            orphaned_lines = []
            body.append(kept)
    for stem in sorted(new_imports):
        insert_relative_import(body, relative_import(stem, sorted(new_imports[stem])), stem)
    if body and rewritten:
        rewritten[0] = rewritten[0].with_changes(
            leading_lines=[cst.EmptyLine(), cst.EmptyLine()]
        )
    header_lines = [cst.EmptyLine(comment=cst.Comment(line)) for line in header]
    first = min(_lines_kept_first(source), len(module.header))
    new_module = module.with_changes(
        header=[*module.header[:first], *header_lines, *module.header[first:]], body=body + rewritten
    )
    renames = {c.reward_name: c.name for c in classes if c.explicit_super}
    return fit_renamed_super_lines(new_module.code, renames)


def _lines_kept_first(source: str) -> int:
    """How many lines of `source` stay above the generated header: a shebang, which must be
    line 1 (flake8 E265), and a coding line, which counts only on line 1 or 2 (PEP 263;
    matched with the pattern of tokenize, the stdlib's implementation of it)."""
    lines = source.split("\n", 2)[:2]
    first, second = lines + [""] * (2 - len(lines))
    if tokenize.cookie_re.match(first):
        return 1
    if tokenize.blank_re.match(first.encode("utf-8")) and tokenize.cookie_re.match(second):
        return 2
    return 1 if first.startswith("#!") else 0

