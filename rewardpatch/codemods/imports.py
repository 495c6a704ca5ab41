"""Import lines the way isort writes them, placed where isort would put them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

import libcst as cst

if TYPE_CHECKING:  # typing has TypeGuard from Python 3.10; only mypy reads it here
    from typing_extensions import TypeGuard

LINE_WIDTH = 79

# A statement of a module's body, as libcst types cst.Module.body: a line of simple
# statements, or a compound statement (def, class, if, try, ...).
Statement = Union[cst.SimpleStatementLine, cst.BaseCompoundStatement]


def wrap_import(line: str, width: int = LINE_WIDTH) -> str:
    """`from .x import A, B` in isort's grid style when it is longer than `width`."""
    if len(line) <= width or " import " not in line:
        return line
    head, names = line.split(" import ", 1)
    prefix = f"{head} import ("
    items = names.split(", ")
    lines, current = [], prefix
    for i, name in enumerate(items):
        piece = name + (")" if i == len(items) - 1 else ",")
        if current == prefix:
            current += piece
        elif len(current) + 1 + len(piece) > width:
            lines.append(current)
            current = " " * len(prefix) + piece
        else:
            current += " " + piece
    lines.append(current)
    return "\n".join(lines)


def isort_key(name: str) -> tuple[int, str]:
    """isort's default order within an import: CONSTANTS, then Classes, then functions."""
    kind = 0 if name.isupper() and len(name) > 1 else 1 if name[:1].isupper() else 2
    return kind, name


def relative_import(module: str, names: list[str]) -> cst.SimpleStatementLine:
    ordered = sorted(names, key=isort_key)
    statement = cst.parse_statement(wrap_import(f"from .{module} import {', '.join(ordered)}") + "\n")
    assert isinstance(statement, cst.SimpleStatementLine)  # an import is a simple statement
    return statement


def code(node: cst.CSTNode) -> str:
    return cst.Module([]).code_for_node(node)


def bound_name(alias: cst.ImportAlias) -> str:
    """The name an import alias binds: `import a.b` binds a, `import a as b` binds b."""
    if alias.asname is not None:
        return code(alias.asname.name)
    return code(alias.name).split(".")[0]


def is_import_line(statement: cst.BaseStatement) -> TypeGuard[cst.SimpleStatementLine]:
    return isinstance(statement, cst.SimpleStatementLine) and all(
        isinstance(s, (cst.Import, cst.ImportFrom)) for s in statement.body
    )


def imports_of_line(statement: cst.SimpleStatementLine) -> list[cst.Import | cst.ImportFrom]:
    """The statements of an import line (`is_import_line`): all of them, each an import."""
    return [small for small in statement.body if isinstance(small, (cst.Import, cst.ImportFrom))]


def _relative_module(statement: cst.BaseStatement) -> str | None:
    if isinstance(statement, cst.SimpleStatementLine):
        first = statement.body[0]
        if isinstance(first, cst.ImportFrom) and len(first.relative) == 1 and first.module:
            return code(first.module)
    return None


def _after_docstring(body: list[Statement]) -> int:
    if body and isinstance(body[0], cst.SimpleStatementLine):
        first = body[0].body[0]
        if isinstance(first, cst.Expr) and isinstance(first.value, (cst.SimpleString, cst.ConcatenatedString)):
            return 1
    return 0


def insert_relative_import(body: list[Statement], statement: Statement, module: str) -> None:
    """Insert `statement` among the module's `from .x import` lines, in module order."""
    key = module.lower()
    after = first_relative = last_import = None
    for index, existing in enumerate(body):
        existing_module = _relative_module(existing)
        if existing_module is not None:
            first_relative = index if first_relative is None else first_relative
            if existing_module.lower() <= key:
                after = index
        if is_import_line(existing):
            last_import = index
    if after is not None:
        position = after + 1
    elif first_relative is not None:
        position = first_relative
    elif last_import is not None:
        position = last_import + 1
    else:
        position = _after_docstring(body)
    body.insert(position, statement)
