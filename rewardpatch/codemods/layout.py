"""Lay out the lines a renamed `super(X, self)` lengthens as the tree's yapf would.

Renaming `super(DAHead, self)` to `super(RewardDAHead, self)` moves everything after it
on that line six columns right. Two things then differ from what MMSeg's pinned yapf
(pep8 base, 79 columns) writes, and a fork's pre-commit hook would rewrite the file:

- continuation lines aligned with a bracket opened after the rename stay where they
  were: they move with their bracket, as yapf aligns them;
- a line may pass the column limit: it is split after the commas of its outermost
  bracket that has any, filling each line as far as it goes, the continuation aligned
  with that bracket (or, for a bracket opened on an earlier line, with the line itself),
  which is how yapf splits such a line. A line it cannot split so is left as it is.

rewardpatch does not run yapf; tests/test_fork_hooks.py checks the result against
the pinned yapf of both MMSeg generations.
"""

from __future__ import annotations

import io
import re
import tokenize

COLUMN_LIMIT = 79
OPENING, CLOSING = "([{", ")]}"


def fit_renamed_super_lines(text: str, renames: dict[str, str], limit: int = COLUMN_LIMIT) -> str:
    """`text` with the lines `renames` ({reward name: name}) lengthened laid out again."""
    pattern = re.compile(r"\bsuper\((%s)\s*," % "|".join(map(re.escape, renames))) if renames else None
    if pattern is None or not pattern.search(text):
        return text
    lines = io.StringIO(text).readlines()  # the rows tokenize counts: "\n" ends a line, nothing else
    renamed: dict[int, list[tuple[int, int]]] = {}  # line -> [(column after the name, delta)]
    for number, line in enumerate(lines, 1):
        for match in pattern.finditer(line):
            name = match.group(1)
            renamed.setdefault(number, []).append((match.end(1), len(name) - len(renames[name])))
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return text
    shifts = _realign(tokens, renamed)
    for number, shift in shifts.items():
        lines[number - 1] = " " * shift + lines[number - 1]
    text = "".join(lines)
    touched = set(renamed) | set(shifts)
    if all(len(lines[n - 1].rstrip("\r\n")) <= limit for n in touched):
        return text
    return _split_long_lines(text, touched, limit)


def _realign(tokens, renamed) -> dict[int, int]:
    """{line: spaces to add} for continuation lines aligned with a bracket that moved."""
    shifts: dict[int, int] = {}
    stack: list[tuple[int, int]] = []  # (column continuation lines align with, its shift)
    last_line = 0
    for token in tokens:
        row, col = token.start
        if token.type in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            continue
        if row > last_line and stack:  # the first token of a continuation line
            aligned, shift = stack[-1]
            if shift and col == aligned:
                shifts[row] = shifts.get(row, 0) + shift
        last_line = token.end[0]
        if token.type == tokenize.OP and token.string in OPENING:
            # columns are this text's: the renames are in it, the shifts are not yet
            before = sum(delta for end, delta in renamed.get(row, ()) if end <= col)
            stack.append((col + 1 - before, before + shifts.get(row, 0)))
        elif token.type == tokenize.OP and token.string in CLOSING and stack:
            stack.pop()
    return shifts


def _split_long_lines(text: str, touched: set[int], limit: int) -> str:
    lines = io.StringIO(text).readlines()  # the rows tokenize counts: "\n" ends a line, nothing else
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return text
    for number in sorted(touched, reverse=True):
        line = lines[number - 1]
        if len(line.rstrip("\r\n")) <= limit:
            continue
        split = _split(line, number, tokens, limit)
        if split is not None:
            lines[number - 1] = split
    return "".join(lines)


def _split(line: str, number: int, tokens, limit: int) -> str | None:
    """`line` split after the commas of its outermost bracket that has any; None: cannot."""
    body = line.rstrip("\r\n")
    ending = line[len(body):]
    indent = len(body) - len(body.lstrip(" "))
    stack: list[tuple[int, int]] = []  # (row, column) of each open bracket
    commas: dict[tuple[int, int], list[int]] = {}  # bracket -> columns of its commas on this line
    depth: dict[tuple[int, int], int] = {}
    for token in tokens:
        row, col = token.start
        if row > number:
            break
        if token.type == tokenize.COMMENT and row == number:
            return None
        if token.type != tokenize.OP:
            continue
        if token.string in OPENING:
            stack.append((row, col))
        elif token.string in CLOSING and stack:
            stack.pop()
        elif token.string == "," and row == number and stack:
            commas.setdefault(stack[-1], []).append(col)
            depth[stack[-1]] = len(stack)
    if not commas:
        return None
    least = min(depth.values())
    bracket = max(b for b in commas if depth[b] == least)  # the last of the outermost
    row, col = bracket
    align = col + 1 if row == number else indent
    cuts = commas[bracket]
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(body[start:cut + 1])
        start = cut + 1
    pieces.append(body[start:])
    out, current = [], pieces[0]
    for piece in pieces[1:]:
        if len(current) + len(piece) <= limit:
            current += piece
        else:
            out.append(current.rstrip())
            current = " " * align + piece.lstrip()
    out.append(current)
    if len(out) == 1 or any(len(part) > limit for part in out):
        return None
    return (ending or "\n").join(out) + ending
