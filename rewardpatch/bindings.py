"""What a package's files import from each other, read with ast, never by importing.

The head index uses it to tell which files a package's `__init__` reaches.
"""

from __future__ import annotations

import ast

from .errors import InputError


def parse_python(source: str, file: str) -> ast.Module:
    """The module's syntax tree; a file that does not parse is an input error naming file:line."""
    try:
        return ast.parse(source, filename=file)
    except SyntaxError as exc:
        raise InputError(f"{file}:{exc.lineno}: cannot parse: {exc.msg}") from None


def module_level_statements(body: list[ast.stmt]):
    """Top-level statements, looking inside try/if blocks (optional-import fallbacks)."""
    for node in body:
        yield node
        if isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                yield from module_level_statements(block)
        elif isinstance(node, ast.If):
            yield from module_level_statements(node.body)
            yield from module_level_statements(node.orelse)


def _absolute(node: ast.ImportFrom, package: str) -> str | None:
    """The dotted module a `from ... import` reads, seen from a file of `package`."""
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    if node.level > len(parts):
        return None
    base = parts[: len(parts) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def package_imports(tree: ast.Module, package: str) -> dict[str, set[str]]:
    """{module stem of `package`: names imported from it} for a file of that package.

    Relative and absolute imports count, anywhere in the file: an import inside a function
    runs too, only later. `from . import x` and `import package.x` import the module x
    itself (an empty set of names), as does an import from a submodule of x.
    """
    prefix = package + "."
    found: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(prefix):
                    found.setdefault(alias.name[len(prefix) :].split(".")[0], set())
        elif isinstance(node, ast.ImportFrom):
            dotted = _absolute(node, package)
            if dotted == package:
                for alias in node.names:
                    if alias.name != "*":
                        found.setdefault(alias.name, set())
            elif dotted and dotted.startswith(prefix):
                stem, _, submodule = dotted[len(prefix) :].partition(".")
                names = found.setdefault(stem, set())
                if not submodule:
                    names.update(alias.name for alias in node.names if alias.name != "*")
    return found

