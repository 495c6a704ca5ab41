"""What a module binds at top level, and what a package's files import from each other.

Read with the standard library's ast, never by importing: the head index uses it to tell
which files a package's `__init__` reaches, and apply and check use it to make sure every
name an `__init__` imports from a module rewardpatch writes is defined there.
"""

from __future__ import annotations

import ast
import sys
from pathlib import PurePosixPath

from .errors import InputError

# How deeply a module read from a tree may nest (syntax-tree levels). MMSeg's deepest module
# nests 25 levels; Python's own recursion limit, and libcst's rewrites (about 300 levels),
# give out far beyond this. A deeper file is refused, or skipped when nothing imports it.
MAX_NESTING = 100


class TooDeep(InputError):
    """A module nested past MAX_NESTING."""

    def __init__(self, file: str):
        self.why = f"nested more than {MAX_NESTING} levels deep"
        super().__init__(f"{file}: {self.why}")


def bounded_parse(source: str, file: str) -> ast.Module:
    """ast.parse, bounded: a SyntaxError as ast raises it, or TooDeep when the module nests past
    MAX_NESTING (counted without recursion, so that no depth can exhaust the stack here)."""
    try:
        module = ast.parse(source, filename=file)
    except (RecursionError, MemoryError):  # the parser's own guard, on a far deeper file
        raise TooDeep(file) from None
    stack: list[tuple[ast.AST, int]] = [(module, 1)]
    push, pop, node_type = stack.append, stack.pop, ast.AST
    while stack:  # ast.iter_child_nodes, unrolled: ten times faster on a large module
        node, depth = pop()
        if depth > MAX_NESTING:
            raise TooDeep(file)
        for name in node._fields:
            value = getattr(node, name, None)
            if isinstance(value, node_type):
                push((value, depth + 1))
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, node_type):
                        push((item, depth + 1))
    return module


def nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of `tree` (ast.walk's, in another order), gathered without a generator per node."""
    found: list[ast.AST] = []
    stack = [tree]
    push, pop, node_type = stack.append, stack.pop, ast.AST
    while stack:
        node = pop()
        found.append(node)
        for name in node._fields:
            value = getattr(node, name, None)
            if isinstance(value, node_type):
                push(value)
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, node_type):
                        push(item)
    return found


def parse_python(source: str, file: str) -> ast.Module:
    """The module's syntax tree; a file that does not parse, or nests past MAX_NESTING, is an
    input error naming it (file:line when it does not parse)."""
    try:
        return bounded_parse(source, file)
    except SyntaxError as exc:
        raise InputError(f"{file}:{exc.lineno}: cannot parse: {exc.msg}") from None


def expression_text(node: ast.expr, source: str) -> str:
    """`node`, an expression of the module `source`, written out as ast.unparse writes it.

    Python 3.8 has no ast.unparse: there it is the expression as `source` spells it, its lines
    joined into one, which may differ in spacing, parentheses and numbers (`1e-3` for 0.001).
    """
    if sys.version_info >= (3, 9):
        return ast.unparse(node)
    return " ".join(line.strip() for line in ast.get_source_segment(source, node).splitlines())


def package_of(init: str) -> str:
    """'mmseg/models/losses/__init__.py' -> 'mmseg.models.losses'."""
    return ".".join(PurePosixPath(init).parent.parts)


def module_stem(path: str) -> str:
    """'mmseg/models/decode_heads/fcn_head.py' -> 'fcn_head'."""
    name = path.rsplit("/", 1)[1]
    return name[: -len(".py")] if name.endswith(".py") else name


def sibling_path(init: str, stem: str) -> str:
    """The file of module `stem` in the package whose `__init__.py` is `init`."""
    return (PurePosixPath(init).parent / f"{stem}.py").as_posix()


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


def defined_names(node: ast.stmt) -> set[str]:
    """The names a def, class or assignment statement binds (imports are not definitions)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return {n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name)}
    return set()


def bound_names(tree: ast.Module) -> set[str] | None:
    """Every name `from module import name` finds, or None when that is not known statically.

    A star import or a module-level `__getattr__` can provide any name: such a module is
    taken on trust rather than refused.
    """
    names: set[str] = set()
    for node in module_level_statements(tree.body):
        names |= defined_names(node)
        if isinstance(node, ast.Import):
            names.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if any(alias.name == "*" for alias in node.names):
                return None
            names.update(alias.asname or alias.name for alias in node.names)
    return None if "__getattr__" in names else names


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
    for node in nodes(tree):
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


def unbound_imports(init: str, init_source: str, module_source) -> list[tuple[str, list[str]]]:
    """(module stem, names) for each module whose names the `__init__` imports and it lacks.

    `module_source(path)` gives a module's text, or None for modules not in question.
    """
    imports = package_imports(parse_python(init_source, init), package_of(init))
    unbound = []
    for stem, names in sorted(imports.items()):
        path = sibling_path(init, stem)
        source = module_source(path) if names else None
        if source is None:
            continue
        defined = bound_names(parse_python(source, path))
        missing = sorted(names - defined) if defined is not None else []
        if missing:
            unbound.append((stem, missing))
    return unbound


def unresolved_imports(path: str, source: str, module_source) -> list[str]:
    """What the file `path` imports from its own tree and the tree lacks, one line each.

    `module_source(relative path)` gives a file's text or None when it does not exist
    (the tree as a patch would leave it). Only modules of the file's top-level package
    are looked at: torch, mmcv and the rest are the environment's, not the tree's.
    """
    package = package_of(path)
    top = package.split(".")[0]

    def module_file(dotted: str) -> tuple[str, str] | None:
        base = dotted.replace(".", "/")
        for candidate in (f"{base}.py", f"{base}/__init__.py"):
            text = module_source(candidate)
            if text is not None:
                return candidate, text
        return None

    problems = []
    for node in ast.walk(parse_python(source, path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == top and module_file(alias.name) is None:
                    problems.append(f"{path}:{node.lineno}: imports {alias.name}, which the tree does not have")
        elif isinstance(node, ast.ImportFrom):
            dotted = _absolute(node, package)
            if dotted is None or dotted.split(".")[0] != top:
                continue
            found = module_file(dotted)
            if found is None:
                problems.append(f"{path}:{node.lineno}: imports from {dotted}, which the tree does not have")
                continue
            bound = bound_names(parse_python(found[1], found[0]))
            for alias in node.names:
                if alias.name == "*" or bound is None or alias.name in bound:
                    continue
                if module_file(f"{dotted}.{alias.name}") is None:
                    problems.append(
                        f"{path}:{node.lineno}: imports {alias.name} from {dotted}, which does not define it"
                    )
    return problems


def imports_of_files(path: str, source: str, files: set[str]) -> list[tuple[int, str]]:
    """(line, file) for each import in the file `path` that reads one of `files` (paths
    relative to the tree root, such as the modules a revert removes)."""
    package = package_of(path)
    found = []

    def hit(lineno: int, dotted: str) -> None:
        for candidate in (f"{dotted.replace('.', '/')}.py", f"{dotted.replace('.', '/')}/__init__.py"):
            if candidate in files:
                found.append((lineno, candidate))
                return

    for node in ast.walk(parse_python(source, path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                for end in range(1, len(parts) + 1):
                    hit(node.lineno, ".".join(parts[:end]))
        elif isinstance(node, ast.ImportFrom):
            dotted = _absolute(node, package)
            if not dotted:
                continue
            parts = dotted.split(".")
            for end in range(1, len(parts) + 1):
                hit(node.lineno, ".".join(parts[:end]))
            for alias in node.names:
                if alias.name != "*":
                    hit(node.lineno, f"{dotted}.{alias.name}")
    return sorted(set(found))
