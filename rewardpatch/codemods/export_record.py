"""What `add_exports` added to an `__init__.py`, and whether the file still has it.

Kept apart from the libcst transforms: reading a record and checking a file with ast
does not pay for importing libcst (check and list-heads stay fast).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass


@dataclass(frozen=True)
class ExportRecord:
    """What `add_exports` added to one file: the statements verbatim, and the names.

    `rewrapped`: the last original `__all__` element moved to a new line, because the
    comma it gained did not fit on its own (the inverse moves it back).
    """

    imports: tuple[str, ...]
    names: tuple[str, ...]
    rewrapped: bool = False

    def as_json(self) -> dict:
        data: dict[str, list[str] | bool] = {"imports": list(self.imports), "names": list(self.names)}
        if self.rewrapped:
            data["rewrapped"] = True
        return data

    @classmethod
    def from_json(cls, data: dict) -> "ExportRecord":
        return cls(tuple(data.get("imports", ())), tuple(data.get("names", ())), bool(data.get("rewrapped", False)))


def missing_exports(source: str, record: ExportRecord) -> list[str]:
    """What of `record` the file no longer has (read with ast: no libcst needed)."""
    tree = ast.parse(source)
    imported: set[tuple[str, str]] = set()
    exported: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            imported.update((node.module or "", a.asname or a.name) for a in node.names)
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            if isinstance(node.value, (ast.List, ast.Tuple)):
                exported.update(
                    e.value for e in node.value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)
                )
    missing = []
    for line in record.imports:
        statement = ast.parse(line).body[0]
        # a record's import lines are each one `from .module import ...` (Manifest.load checks them)
        assert isinstance(statement, ast.ImportFrom)
        for alias in statement.names:
            if (statement.module or "", alias.asname or alias.name) not in imported:
                missing.append(f"import of {alias.name} from .{statement.module}")
    missing += [f"{name} in __all__" for name in record.names if name not in exported]
    return missing
