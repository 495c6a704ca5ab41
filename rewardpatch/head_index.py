"""Static analysis of a tree's decode heads: which can get a reward version, and why not.

Reading is done with the standard library's ast: it never imports the sources (no torch,
no MMSeg install needed) and parses a whole heads package in tens of milliseconds, where
importing libcst alone costs half a second. Every rewrite goes through libcst instead
(see codemods/), which keeps the bytes it does not change.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Union

from .errors import InputError
from .head_api import HeadAPI, read_head_api
from .import_graph import defined_names, expression_text, module_level_statements, package_imports, parse_python
from .loss_paths import NEVER, Condition, Reach, reaching_condition
from .mmseg_generations import Generation
from .naming import is_generated, reward_name
from .notice import Notices
from .tree import MMSegTree, NotText
from .treefs import TooLarge, Unsafe

# What a heads package's files may hold in all: 8 MiB, 33 times MMSeg 1.2.2's 0.24 MB. Past it
# (a fork's stray data or generated files), the rest are skipped, or refused when imported.
MAX_PACKAGE_BYTES = 8 << 20


class HeadStatus(str, Enum):
    """A head's verdict. Its value is what list-heads prints and its JSON holds: a member prints,
    formats and serialises as that string, and equals it."""

    COMPATIBLE = "compatible"
    CONDITIONAL = "conditional"  # reaches the reward only on a condition (loss_paths.py); apply copies it
    PATCHED = "patched"
    INCOMPATIBLE = "incompatible"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


# The members by their own names, as the verbs compare verdicts with them.
COMPATIBLE = HeadStatus.COMPATIBLE
CONDITIONAL = HeadStatus.CONDITIONAL
PATCHED = HeadStatus.PATCHED
INCOMPATIBLE = HeadStatus.INCOMPATIBLE


@dataclass(frozen=True)
class ImportedName:
    """Where a module-level name comes from: a module of the heads package, or elsewhere."""

    module: str  # heads-package module stem ('fcn_head') or dotted path ('torch.nn')
    name: str | None  # None for `import x as y`
    in_heads_package: bool


@dataclass(frozen=True)
class ExternalBase:
    """A base imported from outside the heads package: `torch.nn.Module`, an mmdet head."""

    origin: str  # dotted: 'mmdet.models.dense_heads.MaskFormerHead'

    @property
    def package(self) -> str:
        return self.origin.split(".")[0]


@dataclass(frozen=True)
class UnresolvedBase:
    """A base expression that names nothing the module defines or imports."""

    expression: str

    def __str__(self) -> str:
        return f"unresolved base {self.expression}"


# Where a base chain ends that reaches no head base: outside the package, nowhere, or (a
# str) "cyclic base X" / "no base class"; the head base's own name when it reaches one.
# typing.Union: Python 3.8 and 3.9 cannot write `str | X` outside annotations.
Root = Union[str, ExternalBase, UnresolvedBase]


@dataclass(eq=False)
class ClassInfo:
    """A top-level class of a module in the heads package."""

    name: str
    module: str
    file: str
    bases: list[str]
    registered: bool
    node: ast.ClassDef
    # loss method -> None when it hands its ground truth on, else why it does not
    loss_overrides: dict[str, str | None] = field(default_factory=dict)
    # loss method -> when it hands its ground truth on, where only some paths do (loss_paths.py)
    loss_conditions: dict[str, Condition] = field(default_factory=dict)
    # attribute -> (the __init__ argument stored in it as it is, that argument's default as written)
    constructor_flags: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    # register_module(name=...) when it is not the class name; the copy registers them Reward-prefixed
    registry_names: tuple[str, ...] = ()
    registry_force: str | None = None  # register_module(force=...) as written; the copy drops it
    registry_problem: str | None = None  # why the copy's registered name cannot be known

    @cached_property
    def _references(self) -> tuple[frozenset[str], bool]:
        names: list[ast.Name] = []
        own_super_args: set[int] = set()
        # bases are left out: the rewrite replaces the head base with its reward version
        for part in (*self.node.decorator_list, *self.node.keywords, *self.node.body):
            for child in ast.walk(part):
                if isinstance(child, ast.Name):
                    names.append(child)
                elif isinstance(child, ast.Call) and child.args and _is_super_call(child, self.name):
                    own_super_args.add(id(child.args[0]))
        return frozenset(n.id for n in names if id(n) not in own_super_args), bool(own_super_args)

    @property
    def used_names(self) -> frozenset[str]:
        """Names the class reads, bar its own name in super(Cls, self)."""
        return self._references[0]

    @property
    def explicit_super(self) -> bool:
        """Whether it calls super(Cls, self) with its own name."""
        return self._references[1]


@dataclass
class ModuleInfo:
    stem: str
    file: str
    source: str
    imports: dict[str, ImportedName]
    classes: dict[str, ClassInfo]
    defined: set[str]  # names bound at top level by anything but imports


@dataclass(frozen=True)
class HeadInfo:
    """A registered class of the heads package and its reward verdict."""

    name: str
    file: str
    chain: tuple[str, ...]  # ancestors, nearest first, ending at the root reached
    status: HeadStatus
    reason: str | None
    reward_name: str | None
    registered_as: tuple[str, ...] = ()  # the registry names, when not the class name
    notes: tuple[str, ...] = ()  # how the reward version registers differently from a plain copy
    # where its loss reaches the reward only on a condition: the condition as the tests read, and
    # the constructor arguments that make it hold ((name, value), ...), None when none can
    condition: str | None = None
    condition_args: tuple[tuple[str, object], ...] | None = None

    @property
    def base(self) -> str | None:
        return self.chain[0] if self.chain else None

    def as_json(self) -> dict:
        return {
            "name": self.name,
            "file": self.file,
            "base": self.base,
            "chain": list(self.chain),
            "status": str(self.status),
            "reason": self.reason,
            "reward_name": self.reward_name,
            "registered_as": list(self.registered_as),
            "notes": list(self.notes),
            "condition": self.condition,
            "condition_args": None if self.condition_args is None else dict(self.condition_args),
        }

    @classmethod
    def from_json(cls, data: dict) -> "HeadInfo":
        """as_json() read back (plugin mode's probe reports its verdicts so)."""
        args = data.get("condition_args")
        return cls(
            data["name"], data["file"], tuple(data["chain"]), HeadStatus(data["status"]), data["reason"],
            data["reward_name"],
            tuple(data["registered_as"]), tuple(data["notes"]), data.get("condition"),
            None if args is None else tuple(args.items()),
        )


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else None
    return None


def _is_register_decorator(node: ast.expr) -> bool:
    target = node.func if isinstance(node, ast.Call) else node
    return isinstance(target, ast.Attribute) and target.attr == "register_module"


def _registry_arguments(info: ClassInfo, source: str) -> None:
    """Read register_module's name and force (mmcv and mmengine: name, force, module) into `info`,
    a class of the module `source`.

    The copy registers Reward<name> for each literal name, and never force: a reward head
    must not replace the head it copies. A name that is not a literal cannot be renamed.
    """
    for decorator in info.node.decorator_list:
        if not (isinstance(decorator, ast.Call) and _is_register_decorator(decorator)):
            continue
        arguments = dict(zip(("name", "force"), decorator.args))
        for keyword in decorator.keywords:
            if keyword.arg is None:
                info.registry_problem = (
                    f"registers with {expression_text(decorator, source)}: **-arguments hide its name"
                )
                return
            arguments.setdefault(keyword.arg, keyword.value)
        if any(isinstance(a, ast.Starred) for a in decorator.args):
            info.registry_problem = f"registers with {expression_text(decorator, source)}: *-arguments hide its name"
            return
        if "force" in arguments:
            info.registry_force = expression_text(arguments["force"], source)
        names = _literal_names(arguments.get("name"))
        if names is None:
            info.registry_problem = (
                f"registers as name={expression_text(arguments['name'], source)}, not a literal string: "
                f"what {reward_name(info.name)} would register as is not known statically"
            )
            return
        if names and names != (info.name,):
            info.registry_names += names


def _literal_names(node: ast.expr | None) -> tuple[str, ...] | None:
    """() for no name (or None), the names of a literal string or list/tuple of them, else None."""
    if node is None or (isinstance(node, ast.Constant) and node.value is None):
        return ()
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return (node.value,)
    if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
        names = [_literal_names(e) for e in node.elts]
        singles = [n[0] for n in names if n is not None and len(n) == 1]
        if len(singles) == len(names):
            return tuple(singles)
    return None


def _module_imports(
    tree: ast.Module, package: str, exported: dict[str, str] | None = None
) -> dict[str, ImportedName]:
    """Names bound by imports at module level (try/except fallbacks included). `exported`
    {name: stem}, for a module outside the package (HeadIndex `extra`): `from <package> import
    name` reads as the import from the module of the package that defines it."""
    imports: dict[str, ImportedName] = {}
    exported = exported or {}
    for node in module_level_statements(tree.body):
        if isinstance(node, ast.Import):
            for alias in node.names:
                bound = alias.asname or alias.name.split(".")[0]
                imports.setdefault(bound, ImportedName(alias.name, None, False))
        elif isinstance(node, ast.ImportFrom):
            dotted = node.module or ""
            in_package = node.level == 1 and "." not in dotted
            if node.level == 0 and dotted.startswith(package + "."):
                rest = dotted[len(package) + 1 :]
                in_package = "." not in rest
                dotted = rest if in_package else dotted
            for alias in node.names:
                if node.level == 0 and dotted == package and alias.name in exported:
                    imports.setdefault(alias.asname or alias.name, ImportedName(exported[alias.name], alias.name, True))
                elif alias.name != "*":
                    imports.setdefault(
                        alias.asname or alias.name, ImportedName(dotted, alias.name, in_package)
                    )
    return imports


def _exported(init: ast.Module) -> dict[str, str]:
    """{name: stem} of what a package's __init__ imports from its own modules (`from .stem import name`)."""
    return {
        alias.asname or alias.name: node.module
        for node in module_level_statements(init.body)
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module and "." not in node.module
        for alias in node.names
    }


def _is_super_call(node: ast.expr, class_name: str) -> bool:
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"):
        return False
    if not node.args:
        return True
    return (
        len(node.args) == 2
        and isinstance(node.args[0], ast.Name)
        and node.args[0].id == class_name
        and isinstance(node.args[1], ast.Name)
        and node.args[1].id == "self"
    )


def _delegation(function: ast.FunctionDef, class_name: str, gen: Generation, source: str) -> Reach:
    """When the override passes its data samples on to the loss path of its base: always,
    never, or on a condition (loss_paths.py).

    Accepts super().<loss method>(..., batch_data_samples) or super(Cls, self)..., and
    self.loss_by_feat(..., batch_data_samples) from an overridden `loss` (0.x:
    gt_semantic_seg from `forward_train`, seg_label from `losses`; see patches/).
    """
    arguments = function.args
    params = {a.arg for a in arguments.posonlyargs + arguments.args + arguments.kwonlyargs}
    param = gen.loss_methods[function.name]
    if param not in params:
        return NEVER

    def delegates(node: ast.AST) -> bool:
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            return False
        method = node.func.attr
        if method not in gen.loss_methods:
            return False
        owner = node.func.value
        via_super = _is_super_call(owner, class_name)
        via_self = isinstance(owner, ast.Name) and owner.id == "self" and method != function.name
        values = list(node.args) + [k.value for k in node.keywords]
        return (via_super or via_self) and any(isinstance(v, ast.Name) and v.id == param for v in values)

    return reaching_condition(function, delegates, source)


def _class_info(node: ast.ClassDef, stem: str, file: str, source: str, gen: Generation) -> ClassInfo:
    info = ClassInfo(
        name=node.name,
        module=stem,
        file=file,
        bases=[_dotted(b) or expression_text(b, source) for b in node.bases],
        registered=any(_is_register_decorator(d) for d in node.decorator_list),
        node=node,
    )
    _registry_arguments(info, source)
    for statement in node.body:
        if isinstance(statement, ast.FunctionDef) and statement.name in gen.loss_methods:
            method = statement.name
            reach = _delegation(statement, info.name, gen, source)
            info.loss_overrides[method] = None if reach != NEVER else (
                f"{info.name}.{method} computes its own loss without handing {gen.loss_methods[method]} to super()"
            )
            if isinstance(reach, Condition):
                info.loss_conditions[method] = reach
        elif isinstance(statement, ast.FunctionDef) and statement.name == "__init__":
            info.constructor_flags = _constructor_flags(statement, source)
    return info


def _constructor_flags(init: ast.FunctionDef, source: str) -> dict[str, tuple[str, str | None]]:
    """{attribute: (constructor argument, its default as written)} for each `self.X = arg`
    in `__init__` that stores an argument as it is: the flags a config can set."""
    arguments = init.args
    named = arguments.posonlyargs + arguments.args
    defaults = dict(zip([a.arg for a in named][len(named) - len(arguments.defaults):], arguments.defaults))
    defaults.update((a.arg, d) for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults) if d is not None)
    parameters = {a.arg for a in named[1:] + arguments.kwonlyargs}
    flags = {}
    for statement in init.body:
        targets = getattr(statement, "targets", None) or [getattr(statement, "target", None)]
        if not (isinstance(statement, (ast.Assign, ast.AnnAssign)) and isinstance(statement.value, ast.Name)):
            continue
        argument = statement.value.id
        if argument not in parameters:
            continue
        for target in targets:
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
                default = defaults.get(argument)
                flags[target.attr] = (argument, None if default is None else expression_text(default, source))
    return flags


class HeadIndex:
    """Every module of a tree's heads package, parsed once, with base chains resolved."""

    def __init__(
        self,
        tree: MMSegTree,
        skip_files: frozenset[str] | set[str] = frozenset(),
        extra: dict[str, tuple[str, str]] | None = None,
        notices: Notices | None = None,
    ):
        """`extra` {stem: (file, source)}: modules read as if they were in the heads package
        and imported by its __init__ (plugin mode: heads a project registers itself).
        Files it skips are warnings in `notices` (its own when not given), for the caller to print."""
        self.tree = tree
        self.notices = notices if notices is not None else Notices()
        self.gen = tree.generation
        heads_dir = tree.path(self.gen.heads_dir)
        if not heads_dir.is_dir():
            raise InputError(f"{tree.root}: not an MMSegmentation tree (no {self.gen.heads_dir}/)")
        package = self.gen.heads_dir.replace("/", ".")
        self.modules: dict[str, ModuleInfo] = {}
        parsed: dict[str, set[str]] = {}  # stem -> the package's modules it imports
        unparsable: dict[str, str] = {}  # stem -> "file:line: cannot parse: why", or why it is not text
        extra = extra or {}
        budget = MAX_PACKAGE_BYTES
        found = [
            (f.rsplit("/", 1)[1][:-3], f, f.rsplit("/", 1)[1]) for f in tree.files(self.gen.heads_dir, "*.py")
        ]
        entries: dict[str, tuple[str, str | None]] = {  # stem -> (file, its name; None: from `extra`)
            stem: (file, filename) for stem, file, filename in found
            if stem not in extra and filename != "__init__.py" and file not in skip_files
        }
        entries.update((stem, (file, None)) for stem, (file, _) in sorted(extra.items()))

        def read(stem: str) -> None:
            nonlocal budget
            file, filename = entries[stem]
            try:
                source = tree.read(file) if filename else extra[stem][1]
                if filename and source is not None:
                    budget -= len(source)
                    if budget < 0:
                        raise TooLarge(file, len(source), f"the package's files hold more than {MAX_PACKAGE_BYTES} "
                                       "bytes with it")
            except (NotText, TooLarge, Unsafe) as exc:  # skipped, or refused when the package imports it
                unparsable[stem] = str(exc)
                return
            if source is None or is_generated(source):
                return
            try:
                module = parse_python(source, file)
            except InputError as exc:  # does not parse, or nests too deep
                unparsable[stem] = str(exc)
                return
            parsed[stem] = set(package_imports(module, package))  # the module's syntax tree is let go
            classes = {
                n.name: _class_info(n, stem, file, source, self.gen)
                for n in module.body
                if isinstance(n, ast.ClassDef)
            }
            exported = None
            if not filename:
                exported = _exported(parse_python(tree.read(self.gen.heads_init) or "", self.gen.heads_init))
            self.modules[stem] = ModuleInfo(
                stem, file, source, _module_imports(module, package, exported), classes,
                {name for node in module.body for name in defined_names(node)},
            )

        # The modules `import mmseg.models` runs first, so that stray files cannot use up the
        # package's budget (MAX_PACKAGE_BYTES) before them; then the rest, in name order.
        init_file = self.gen.heads_init
        queue = sorted(package_imports(parse_python(tree.read(init_file) or "", init_file), package)) + sorted(extra)
        done: set[str] = set()
        while queue:
            stem = queue.pop(0)
            if stem in done or stem not in entries:
                continue
            done.add(stem)
            read(stem)
            queue += sorted(parsed.get(stem, ()))
        for stem in entries:
            if stem not in done:
                read(stem)
        order = list(entries)
        self.modules = dict(sorted(self.modules.items(), key=lambda item: order.index(item[0])))
        self.reached = self._reached(unparsable, parsed, package) | set(extra)
        for stem in sorted(unparsable):
            self.notices.warn(f"skipped {unparsable[stem]} (no __init__ of {package} imports it)")
        self._warn_unreached_heads()

    def _reached(self, unparsable: dict[str, str], parsed: dict[str, set[str]], package: str) -> set[str]:
        """The stems of the package's modules that its `__init__` imports, directly or through others.

        Only their classes are heads: a stray copy of a head beside the real one is not. A file
        that does not parse and that the package never imports (a stray backup or scratch
        file) must not stop every verb; one that `import mmseg.models` would execute is an
        error, as it breaks the tree too.
        """
        init_file = self.gen.heads_init
        frontier = [set(package_imports(parse_python(self.tree.read(init_file) or "", init_file), package))]
        reached: set[str] = set()
        while frontier:
            for stem in sorted(frontier.pop()):
                if stem in reached:
                    continue
                reached.add(stem)
                if stem in unparsable:
                    raise InputError(unparsable[stem])
                if stem in parsed:
                    frontier.append(parsed[stem])
        return reached

    def _warn_unreached_heads(self) -> None:
        """One warning (in `notices`) for each registered class of a module the package never imports."""
        init_file = self.gen.heads_init
        for stem, module in sorted(self.modules.items()):
            if stem in self.reached:
                continue
            for cls in module.classes.values():
                if not cls.registered:
                    continue
                message = f"skipped {cls.name} in {module.file}: {init_file} never imports it"
                twin = self.find(cls.name)
                if twin is not None:
                    message += f"; the head is {twin.file}'s"
                self.notices.warn(message)

    @cached_property
    def api(self) -> HeadAPI:
        """What the tree's own decode-head bases ask of the reward bases (head_api.py)."""
        classes = {(stem, name): c.node for stem, m in self.modules.items() for name, c in m.classes.items()}
        return read_head_api(self.gen, classes, {stem: m.source for stem, m in self.modules.items()})

    def is_base(self, cls: ClassInfo) -> bool:
        spec = self.gen.bases.get(cls.name)
        return spec is not None and spec.module == cls.module

    def resolve_base(self, cls: ClassInfo, base: str) -> ClassInfo | ExternalBase | UnresolvedBase:
        """The class a base expression names in this package, or what else it is."""
        module = self.modules[cls.module]
        head, _, rest = base.partition(".")
        if not rest and head in module.classes and head != cls.name:
            return module.classes[head]
        imported = module.imports.get(head)
        if imported is None:
            return UnresolvedBase(base)
        if imported.in_heads_package and not rest:
            target = self.modules.get(imported.module)
            if target and imported.name in target.classes:
                return target.classes[imported.name]
            return UnresolvedBase(base)
        return ExternalBase(".".join(p for p in (imported.module, imported.name, rest) if p))

    def lineage(self, cls: ClassInfo) -> tuple[list[ClassInfo], str | None, Root]:
        """(cls and its ancestors below the head base, that base or None, the root reached)."""
        chain = [cls]
        current = cls
        while True:
            fallback = None
            for base in current.bases:
                resolved = self.resolve_base(current, base)
                if isinstance(resolved, ClassInfo):
                    if self.is_base(resolved):
                        return chain, resolved.name, resolved.name
                    if resolved in chain:
                        return chain, None, f"cyclic base {resolved.name}"
                    break
                fallback = fallback or resolved
            else:
                return chain, None, fallback or "no base class"
            chain.append(resolved)
            current = resolved

    def registered_classes(self) -> list[ClassInfo]:
        return sorted(
            (c for mod in self._reached_modules() for c in mod.classes.values() if c.registered),
            key=lambda c: c.name,
        )

    def _reached_modules(self) -> list[ModuleInfo]:
        return [m for stem, m in self.modules.items() if stem in self.reached]

    def find(self, name: str) -> ClassInfo | None:
        """The registered class `name` of a module the package imports, or None."""
        for module in self._reached_modules():
            if name in module.classes and module.classes[name].registered:
                return module.classes[name]
        return None

    def verdict(self, cls: ClassInfo, patched: frozenset[str] | set[str] = frozenset()) -> HeadInfo:
        chain, base, root = self.lineage(cls)
        names = tuple(c.name for c in chain[1:]) + (_root_name(root),)
        if base is None:
            return HeadInfo(cls.name, cls.file, names, INCOMPATIBLE, self._not_a_head(root), None)
        if self.api.problem:
            return HeadInfo(cls.name, cls.file, names, INCOMPATIBLE, self.api.problem, None)
        for member in chain:
            if member.registry_problem is not None:
                reason = f"{member.name} {member.registry_problem}"
                if member is not cls:
                    reason = f"inherits from {member.name}: {reason} (its reward version is generated too)"
                return HeadInfo(cls.name, cls.file, names, INCOMPATIBLE, reason, None, cls.registry_names)
        for member in chain:
            for override in member.loss_overrides.values():
                if override is not None:
                    reason = override
                    if member is not cls:
                        reason = f"inherits from {member.name}: {reason}"
                    return HeadInfo(
                        cls.name, cls.file, names, INCOMPATIBLE,
                        f"{reason}: the reward loss would never run", None,
                    )
        notes = _registry_notes(cls)
        conditional = [(member, method, c) for member in chain for method, c in member.loss_conditions.items()]
        if not conditional:
            status = PATCHED if reward_name(cls.name) in patched else COMPATIBLE
            return HeadInfo(cls.name, cls.file, names, status, None, reward_name(cls.name), cls.registry_names, notes)
        condition = functools.reduce(Condition.both, [c for _, _, c in conditional])
        args = _condition_arguments(condition, chain)
        where = " and ".join(f"{member.name}.{method}" for member, method, _ in conditional)
        reason = f"{where} reaches the reward loss only when {condition}: " + (
            f"`rewardpatch config` sets {_arguments_text(args)}" if args is not None
            else "no constructor argument sets that, and `rewardpatch config` refuses the head"
        )
        if reward_name(cls.name) in patched:
            return HeadInfo(cls.name, cls.file, names, PATCHED, None, reward_name(cls.name), cls.registry_names,
                            (reason, *notes), str(condition), args)
        return HeadInfo(cls.name, cls.file, names, CONDITIONAL, reason, reward_name(cls.name), cls.registry_names,
                        notes, str(condition), args)

    def _not_a_head(self, root: Root) -> str:
        bases = " or ".join(self.gen.bases)
        if isinstance(root, ExternalBase):
            if root.package in {"torch", "mmengine", "mmcv"}:
                return f"not a decode head: derives from {root.origin}, not {bases}"
            return f"derives from {root.origin}, a head of another package ({root.package}), not {bases}"
        return f"not a decode head: {root}"

    def heads(self, patched: frozenset[str] | set[str] = frozenset()) -> list[HeadInfo]:
        return [self.verdict(c, patched) for c in self.registered_classes()]


def _condition_arguments(condition: Condition, chain: list[ClassInfo]) -> tuple[tuple[str, object], ...] | None:
    """The constructor arguments that make `condition` hold: those of its first term whose tests
    all read an attribute an `__init__` of the chain stores as given (`self.CE_loss = CE_loss`),
    as a flag (`self.CE_loss`) or against a literal (`self.loss_type == 'ce'`)."""
    for term in condition.terms:
        settings: dict[str, object] = {}
        for literal in term:
            flag = next((m.constructor_flags[literal.attribute] for m in chain
                         if literal.attribute in m.constructor_flags), None)
            value = literal.setting()
            if flag is None or not value or settings.get(flag[0], value[0]) != value[0]:
                break
            settings[flag[0]] = value[0]
        else:
            return tuple(settings.items())
    return None


def _arguments_text(args: tuple[tuple[str, object], ...]) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in args)


def _registry_notes(cls: ClassInfo) -> tuple[str, ...]:
    """How the reward version registers where a plain copy of the decorator would not."""
    notes = []
    if cls.registry_names:
        given = ", ".join(repr(n) for n in cls.registry_names)
        rewarded = ", ".join(repr(reward_name(n)) for n in cls.registry_names)
        notes.append(f"registered as {given}: the reward version registers as {rewarded}")
    if cls.registry_force is not None:
        notes.append(
            f"force={cls.registry_force} not copied: {reward_name(cls.name)} never replaces a registered head"
        )
    return tuple(notes)


def _root_name(root: Root) -> str:
    """How a base chain shows where it ends."""
    if isinstance(root, ExternalBase):
        return root.origin
    if isinstance(root, UnresolvedBase):
        return root.expression
    return root
