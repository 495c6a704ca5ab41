"""Add names to a package `__init__.py`, and take exactly those away again.

`add_exports` inserts `from .module import Name` lines where isort would put them and
appends the names to a list or tuple `__all__`, mimicking its layout. `remove_exports`
is its inverse: on a file nobody touched since, it gives back the original bytes, and
edits made to other parts of the file in the meantime survive it.

The one piece of state the inverse needs is kept in the file itself: the comma that the
last original `__all__` element carried moves to the last appended element, so removing
the appended run from the end hands that comma back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import libcst as cst

from .export_record import ExportRecord
from .imports import (
    LINE_WIDTH,
    Statement,
    bound_name,
    code,
    imports_of_line,
    insert_relative_import,
    is_import_line,
    relative_import,
)

if TYPE_CHECKING:  # typing has TypeGuard from Python 3.10; only mypy reads it here
    from typing_extensions import TypeGuard


def _statement_code(statement: cst.BaseStatement) -> str:
    return code(statement.with_changes(leading_lines=[]))


def _bound_names(module: cst.Module) -> set[str]:
    bound: set[str] = set()
    for statement in module.body:
        if is_import_line(statement):
            for small in imports_of_line(statement):
                if not isinstance(small.names, cst.ImportStar):
                    bound.update(bound_name(alias) for alias in small.names)
    return bound


def _find_all(body: list[Statement]) -> tuple[int, cst.List | cst.Tuple] | None:
    for index, statement in enumerate(body):
        if not isinstance(statement, cst.SimpleStatementLine) or len(statement.body) != 1:
            continue
        small = statement.body[0]
        if (
            isinstance(small, cst.Assign)
            and len(small.targets) == 1
            and isinstance(small.targets[0].target, cst.Name)
            and small.targets[0].target.value == "__all__"
            and isinstance(small.value, (cst.List, cst.Tuple))
        ):
            return index, small.value
    return None


def _with_all(body: list[Statement], index: int, value: cst.List | cst.Tuple) -> None:
    statement = body[index]
    assert isinstance(statement, cst.SimpleStatementLine)  # `index` is _find_all's: `__all__ = ...`
    assign = statement.body[0].with_changes(value=value)
    body[index] = statement.with_changes(body=[assign])


def _string_value(element: cst.BaseElement) -> str | None:
    if isinstance(element, cst.Element) and isinstance(element.value, cst.SimpleString):
        value = element.value.evaluated_value
        return value if isinstance(value, str) else None
    return None


def _newline_indent(value: cst.List | cst.Tuple) -> cst.ParenthesizedWhitespace | None:
    """The line break + indentation the literal already uses between its items, if any."""
    candidates = []
    opening = value.lbracket if isinstance(value, cst.List) else (value.lpar[0] if value.lpar else None)
    if opening is not None:
        candidates.append(opening.whitespace_after)
    candidates += [e.comma.whitespace_after for e in value.elements if isinstance(e.comma, cst.Comma)]
    breaks = [c for c in candidates if isinstance(c, cst.ParenthesizedWhitespace)]
    if not breaks:
        return None
    last = breaks[-1]
    return cst.ParenthesizedWhitespace(
        first_line=cst.TrailingWhitespace(), empty_lines=[], indent=last.indent, last_line=last.last_line
    )


def _closing_whitespace(value: cst.List | cst.Tuple):
    if isinstance(value, cst.List):
        return value.rbracket.whitespace_before
    return value.rpar[0].whitespace_before if value.rpar else None


def _end_column(statement: cst.SimpleStatementLine, value: cst.List | cst.Tuple) -> int:
    """The column where the last element of `__all__` ends (its comma excluded)."""
    last = value.elements[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
    closed = value.with_changes(elements=[*value.elements[:-1], last])
    if isinstance(closed, cst.List):
        closed = closed.with_changes(rbracket=cst.RightSquareBracket())
    elif closed.rpar:
        closed = closed.with_changes(rpar=[cst.RightParen()])
    else:
        return len(_statement_code(statement).splitlines()[-1])
    text = _statement_code(statement.with_changes(body=[statement.body[0].with_changes(value=closed)]))
    return len(text.rstrip("\n").splitlines()[-1]) - 1


def _append_names(
    statement: cst.SimpleStatementLine, value: cst.List | cst.Tuple, names: Sequence[str]
) -> tuple[cst.List | cst.Tuple, bool]:
    """`value` with `names` appended, and whether its last element moved to a new line."""
    elements = list(value.elements)
    quote = "'"
    for element in elements:
        if isinstance(element, cst.Element) and isinstance(element.value, cst.SimpleString):
            quote = element.value.quote[-1]
            break
    new = [cst.Element(cst.SimpleString(f"{quote}{name}{quote}")) for name in names]
    if not elements:
        for i in range(len(new) - 1):
            new[i] = new[i].with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
        return value.with_changes(elements=new), False

    last = elements[-1]
    original_comma = last.comma
    line_break = _newline_indent(value)
    same_line = cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
    rewrapped = False
    if line_break is None:
        separators = [same_line] * len(new)
    elif isinstance(original_comma, cst.Comma):
        # a magic trailing comma: one item per line, as black writes it
        separators = [cst.Comma(whitespace_after=line_break)] * len(new)
    else:
        column = _end_column(statement, value)
        before = elements[-2].comma if len(elements) > 1 else None
        if column + 1 > LINE_WIDTH and isinstance(before, cst.Comma) and before.deep_equals(same_line):
            # its new comma does not fit: yapf would move the element to the next line
            elements[-2] = elements[-2].with_changes(comma=cst.Comma(whitespace_after=line_break))
            column = len(line_break.last_line.value) + len(code(last.value))
            rewrapped = True
        closing_here = not isinstance(_closing_whitespace(value), cst.ParenthesizedWhitespace)
        separators = _packed_separators(line_break, column, [quote + n + quote for n in names], same_line,
                                        closing_here)
    elements[-1] = last.with_changes(comma=separators[0])
    for i in range(len(new) - 1):
        new[i] = new[i].with_changes(comma=separators[i + 1])
    new[-1] = new[-1].with_changes(comma=original_comma)
    return value.with_changes(elements=elements + new), rewrapped


def _packed_separators(
    line_break: cst.ParenthesizedWhitespace, column: int, items: list[str], same_line: cst.Comma,
    closing_here: bool,
) -> list[cst.Comma]:
    """The separator before each item: fill lines up to LINE_WIDTH as yapf does.

    `column` is where the line before the first item ends; every item but the last needs
    room for its comma, the last for the closing bracket when that stays on its line.
    """
    indent = len(line_break.last_line.value)
    separators = []
    column += 1  # the comma after the element before the first item
    for position, item in enumerate(items):
        tail = 1 if position < len(items) - 1 or closing_here else 0
        if column + 1 + len(item) + tail > LINE_WIDTH:
            separators.append(cst.Comma(whitespace_after=line_break))
            column = indent + len(item) + 1
        else:
            separators.append(same_line)
            column += 1 + len(item) + 1
    return separators


def add_exports(
    source: str, imports: Sequence[tuple[str, Sequence[str]]], names: Sequence[str]
) -> tuple[str, ExportRecord]:
    """Insert `from .<module> import <names>` lines and append `names` to `__all__`."""
    module = cst.parse_module(source)
    body = list(module.body)
    bound = _bound_names(module)
    added_imports: list[str] = []
    for stem, import_names in imports:
        fresh = [n for n in import_names if n not in bound]
        if not fresh:
            continue
        statement = relative_import(stem, fresh)
        insert_relative_import(body, statement, stem)
        added_imports.append(_statement_code(statement))
        bound.update(fresh)

    added_names: list[str] = []
    rewrapped = False
    found = _find_all(body)
    if found is not None:
        index, value = found
        present = {_string_value(e) for e in value.elements}
        added_names = [n for n in dict.fromkeys(names) if n not in present]
        if added_names:
            statement_all = body[index]
            assert isinstance(statement_all, cst.SimpleStatementLine)  # _find_all's: `__all__ = ...`
            appended, rewrapped = _append_names(statement_all, value, added_names)
            _with_all(body, index, appended)
    return module.with_changes(body=body).code, ExportRecord(tuple(added_imports), tuple(added_names), rewrapped)


def _drop_statement(body: list[Statement], index: int) -> None:
    """Delete body[index], handing its leading blank lines to the statement after it."""
    statement = body.pop(index)
    if statement.leading_lines and index < len(body):
        follower = body[index]
        body[index] = follower.with_changes(leading_lines=[*statement.leading_lines, *follower.leading_lines])


def _drop_all_names(body: list[Statement], names: set[str]) -> bool:
    """Take every occurrence of `names` out of `__all__`; whether one was there."""
    found = _find_all(body)
    if found is None or not names:
        return False
    position, value = found
    elements = list(value.elements)
    dropped = False
    for i in range(len(elements) - 1, -1, -1):
        if _string_value(elements[i]) not in names:
            continue
        if i == len(elements) - 1 and i > 0:
            elements[i - 1] = elements[i - 1].with_changes(comma=elements[i].comma)
        del elements[i]
        dropped = True
    _with_all(body, position, value.with_changes(elements=elements))
    return dropped


def remove_exports(source: str, record: ExportRecord) -> str:
    """The inverse of `add_exports` for what `record` says it added."""
    module = cst.parse_module(source)
    body = list(module.body)
    wanted = set(record.imports)
    ours = _recorded_imports(record)
    index = 0
    while index < len(body):
        statement = body[index]
        if is_import_line(statement) and _statement_code(statement) in wanted:
            _drop_statement(body, index)
            continue
        if isinstance(statement, cst.SimpleStatementLine) and ours:
            kept = [small for small in statement.body if not _is_ours(small, ours)]
            if not kept:  # ours with a comment added, rewrapped, or several joined with `;`
                _drop_statement(body, index)
                continue
            if len(kept) < len(statement.body):  # ours joined with `;` to statements of yours
                kept[-1] = kept[-1].with_changes(semicolon=cst.MaybeSentinel.DEFAULT)
                body[index] = statement.with_changes(body=kept)
        index += 1

    _drop_all_names(body, set(record.names))
    found = _find_all(body)
    if found is not None and record.names and record.rewrapped:
        position, value = found
        elements = list(value.elements)
        if len(elements) > 1:
            elements[-2] = elements[-2].with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
            _with_all(body, position, value.with_changes(elements=elements))
    return module.with_changes(body=body).code


def _recorded_imports(record: ExportRecord) -> dict[str, set[str]]:
    """{module stem: names} of the import lines `record` says add_exports wrote."""
    ours: dict[str, set[str]] = {}
    for line in record.imports:
        statement = cst.parse_statement(line)
        # a record's import lines are each one `from .module import ...` (Manifest.load checks them)
        assert isinstance(statement, cst.SimpleStatementLine)
        for small in statement.body:
            if isinstance(small, cst.ImportFrom) and small.module is not None and not isinstance(
                small.names, cst.ImportStar
            ):
                ours.setdefault(code(small.module), set()).update(code(a.name) for a in small.names)
    return ours


def _is_ours(small: cst.BaseSmallStatement, ours: dict[str, set[str]]) -> bool:
    """Whether `small` is `from .<module> import <names>` for one of our modules and only
    names add_exports imported from it, unaliased: however it is spelt or commented, it
    is an import apply added, and nothing of the user's."""
    if not (
        isinstance(small, cst.ImportFrom)
        and len(small.relative) == 1
        and small.module is not None
        and not isinstance(small.names, cst.ImportStar)
    ):
        return False
    names = ours.get(code(small.module))
    if not names:
        return False
    return all(a.asname is None and code(a.name) in names for a in small.names)


def _imports_from(statement: cst.BaseStatement, stems: set[str]) -> TypeGuard[cst.SimpleStatementLine]:
    """Whether `statement` is an import line made only of `from .<stem> import ...`."""
    return is_import_line(statement) and all(
        isinstance(small, cst.ImportFrom)
        and len(small.relative) == 1
        and small.module is not None
        and code(small.module) in stems
        for small in statement.body
    )


def drop_imports_from(source: str, stems: set[str]) -> str:
    """`source` without its `from .<stem> import ...` lines and the `__all__` names only they bound.

    What `apply --adopt` does to the import lines and names a hand-made patch added for the
    modules it replaces; a name `__all__` lists twice goes twice.
    """
    module = cst.parse_module(source)
    body = list(module.body)
    dropped: set[str] = set()
    index = 0
    while index < len(body):
        statement = body[index]
        if _imports_from(statement, stems):
            dropped.update(
                bound_name(alias)
                for small in imports_of_line(statement)
                if not isinstance(small.names, cst.ImportStar)
                for alias in small.names
            )
            _drop_statement(body, index)
            continue
        index += 1
    still_bound = _bound_names(module.with_changes(body=body))
    _drop_all_names(body, dropped - still_bound)
    return module.with_changes(body=body).code


def undo_unrecorded_exports(source: str, imports: Sequence[tuple[str, Sequence[str]]], names: Sequence[str]) -> str:
    """`source` before an earlier `add_exports(..., imports, names)` whose record is lost
    (its manifest deleted): the text that add_exports turns into `source` again, where one of
    the inverses finds it, so that revert gives back every byte; else `source` without those
    import lines and the names only they bound (drop_imports_from)."""
    stems = {stem for stem, _ in imports}
    module = cst.parse_module(source)
    ours = tuple(_statement_code(s) for s in module.body if _imports_from(s, stems))
    found = _find_all(list(module.body))
    present = {_string_value(e) for e in found[1].elements} if found else set()
    listed = tuple(n for n in dict.fromkeys(names) if n in present)
    for rewrapped in (True, False):  # both can be consistent: the packed layout yapf leaves first
        candidate = remove_exports(source, ExportRecord(ours, listed, rewrapped))
        text, record = add_exports(candidate, imports, names)
        if text == source and record.rewrapped == rewrapped:
            return candidate
    return drop_imports_from(source, stems)
