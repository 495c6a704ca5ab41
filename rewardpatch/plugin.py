"""Plugin mode: `custom_imports = dict(imports=['rewardpatch.plugin'], allow_failed_imports=False)`.

Importing this module registers, in the registries of the MMSegmentation that `import mmseg`
finds (a pip-installed 1.x or 0.x), what `rewardpatch apply` would add to that tree:
CrossEntropyRewardLoss, IoUMetricLoss, the reward estimator, RewardDecodeHead and
Reward<X> for every head `list-heads` calls compatible there. Their code is the very text
apply would write (planning.created_texts: the templates/ files and the codemod's head
copies), planned on the installed package without writing anything, and executed from
memory as the modules apply would create (mmseg.models.decode_heads.reward_fcn_head,
...). Planning is deterministic, so every rank of a distributed run registers the same
classes.

A project's own heads get reward versions too: those registered before this import (their
module listed earlier in `custom_imports`) found in the registry, and any named with
`add_heads` (registered later, or in a registry of the project's own). Their module is
planned as if it were a file of MMSeg's heads package, its relative imports made absolute.

Nothing is written: not the installed package, not a cache, no bytecode.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .errors import RewardpatchError

if TYPE_CHECKING:  # imported when a plugin is opened, not with this module
    from .tree import MMSegTree

# The scheme of the (absent) files the modules read as: tracebacks and inspect.getsource
# get their lines from the loader.
ORIGIN = "rewardpatch-plugin://"
# The stem a project's head module is planned under, in the heads package: plugin_<its dotted name>
PROJECT_STEM = "plugin_"


class PluginError(ImportError):
    """Plugin mode cannot register what was asked (one line; an ImportError, so that a config's
    custom_imports reports it as the import's failure)."""

    def __init__(self, message: str):
        super().__init__(message)  # the traceback's last line: rewardpatch.plugin.PluginError: <message>


class _Loader(importlib.abc.Loader):
    """Executes a planned module's text; its relative imports resolve against the installed mmseg."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}
        self.paths: dict[str, str] = {}

    def create_module(self, spec):
        return None  # the default module

    def exec_module(self, module) -> None:
        name = module.__spec__.name
        exec(compile(self.texts[name], module.__spec__.origin, "exec", dont_inherit=True), module.__dict__)

    def get_source(self, fullname: str) -> str:
        return self.texts[fullname]


class _Finder(importlib.abc.MetaPathFinder):
    """Finds the planned modules by their full names, and nothing else."""

    def __init__(self, loader: _Loader):
        self.loader = loader

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.loader.texts:
            return None
        spec = importlib.util.spec_from_loader(
            fullname, self.loader, origin=ORIGIN + self.loader.paths[fullname], is_package=False
        )
        spec.has_location = True  # __file__ = origin, for tracebacks and inspect
        return spec


@dataclass(frozen=True)
class ProjectModule:
    """A project's module of heads, as the planner reads it (HeadIndex `extra`)."""

    stem: str  # PROJECT_STEM + its dotted name, in the heads package
    file: str  # its file, for messages
    source: str  # its text, relative imports made absolute
    module: ModuleType  # the imported module: the reward copy imports its names from it


@dataclass
class _Plugin:
    """What the import planned and executed, for add_heads to extend."""

    tree: MMSegTree  # of the installed package
    registry: Any  # its MODELS registry (the dialect's: Any)
    package: str  # the heads package, mmseg.models.decode_heads
    loader: _Loader
    planned: dict[str, str]  # created_texts of the tree alone, as _open planned it
    project: dict[str, ProjectModule] = field(default_factory=dict)
    registered: tuple[str, ...] = ()


def _module_name(path: str) -> str:
    return (path[: -len(".py")] if path.endswith(".py") else path).replace("/", ".")


def _registries(registry):
    """The registry and its children (a project's `Registry(..., parent=MODELS)`), depth first."""
    yield registry
    for child in list(getattr(registry, "children", {}).values()):
        yield from _registries(child)


def absolute_imports(source: str, package: str) -> str:
    """`source` with its relative imports made absolute against `package` (the module's
    __package__): planned inside mmseg's heads package, they would resolve there."""
    import libcst as cst
    from libcst.helpers import get_absolute_module_from_package_for_import

    class Absolute(cst.CSTTransformer):
        def leave_ImportFrom(self, original, updated):
            if not updated.relative:
                return updated
            absolute = get_absolute_module_from_package_for_import(package, original)
            if absolute is None:
                raise PluginError(f"a relative import in package {package} goes above its top level")
            return updated.with_changes(relative=(), module=cst.parse_expression(absolute))

    return cst.parse_module(source).visit(Absolute()).code


def project_module(module: ModuleType) -> ProjectModule:
    """The planner's view of a project's head module; PluginError when its source cannot be read."""
    name = module.__name__
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        raise PluginError(f"no source for {name}: its heads cannot get reward versions") from None
    if module.__spec__ is not None and module.__spec__.origin and module.__spec__.origin.startswith(ORIGIN):
        raise PluginError(f"{name} is a module rewardpatch.plugin made")
    package = module.__package__ or name.rpartition(".")[0]
    return ProjectModule(
        PROJECT_STEM + name.replace(".", "_"), getattr(module, "__file__", None) or name,
        absolute_imports(source, package) if package else source, module,
    )


def _is_mmseg(module_name: str) -> bool:
    return module_name == "mmseg" or module_name.startswith("mmseg.")


def _registered_project_heads(registry, base) -> list[ModuleType]:
    """The modules outside mmseg whose registered classes derive from the decode-head base:
    heads a project registered before this import, in mmseg's registry or a child of it."""
    modules: dict[str, ModuleType] = {}
    for each in _registries(registry):
        for cls in list(each.module_dict.values()):
            name = getattr(cls, "__module__", "") or ""
            if inspect.isclass(cls) and issubclass(cls, base) and not _is_mmseg(name) and name in sys.modules:
                if not (getattr(sys.modules[name], "__file__", "") or "").startswith(ORIGIN):
                    modules.setdefault(name, sys.modules[name])
    return list(modules.values())


def _extra(project: dict[str, ProjectModule]) -> dict[str, tuple[str, str]]:
    return {stem: (each.file, each.source) for stem, each in project.items()}


def _verdicts(plugin: _Plugin, project: dict[str, ProjectModule]):
    """list-heads' verdicts for the heads of `project`'s modules."""
    from .manifest import Manifest
    from .notice import Notices
    from .planning import load_state

    # the tree's own warnings were printed when _open planned it; these would repeat them
    state = load_state(plugin.tree, Manifest.load(plugin.tree), extra=_extra({**plugin.project, **project}),
                       notices=Notices())
    files = {each.file for each in project.values()}
    return [head for head in state.index.heads() if head.file in files]


def _run(plugin: _Plugin, project: dict[str, ProjectModule]) -> tuple[str, ...]:
    """Plan with `project` added and execute the modules not executed yet; the names registered."""
    from .notice import Notices
    from .planning import created_texts

    every = {**plugin.project, **project}
    if every:  # planned again with the project's modules; the tree's warnings were printed by _open
        try:
            texts = created_texts(plugin.tree, _extra(every), Notices())
        except RewardpatchError as exc:
            raise PluginError(f"{plugin.tree.root}/mmseg: {exc}") from None
    else:  # the plan _open made
        texts = plugin.planned
    fresh = {_module_name(path): (path, text) for path, text in texts.items()
             if _module_name(path) not in plugin.loader.texts}
    taken = [name for name in fresh if name in sys.modules]
    if taken:
        raise PluginError(f"{taken[0]} is imported already, not from rewardpatch.plugin")
    for name, (path, text) in fresh.items():
        plugin.loader.texts[name], plugin.loader.paths[name] = text, path
    for stem, each in project.items():  # the copy imports its source's names from `.<stem>`
        sys.modules[f"{plugin.package}.{stem}"] = each.module
    plugin.project = every
    before = set().union(*(r.module_dict for r in _registries(plugin.registry)))
    for name in fresh:  # templates first (the estimator and losses before the heads), then heads
        importlib.import_module(name)
    after = set().union(*(r.module_dict for r in _registries(plugin.registry)))
    plugin.registered = tuple(sorted({*plugin.registered, *(after - before)}))
    return tuple(sorted(after - before))


def _warn_incompatible(plugin: _Plugin, project: dict[str, ProjectModule]) -> None:
    """One warning for each project head that gets no reward version, saying why (list-heads' reason)."""
    from .head_index import INCOMPATIBLE
    from .notice import warn

    for head in _verdicts(plugin, project):
        if head.status == INCOMPATIBLE:
            warn(f"plugin mode: {head.name} ({head.file}) gets no reward version: {head.reason}")


def _open() -> _Plugin | None:
    """The installed mmseg, planned; None for a tree `apply` patched (its own modules register)."""
    try:
        import mmseg
    except Exception as exc:  # noqa: BLE001 - any failure: MMSeg cannot be used
        raise PluginError(f"MMSegmentation is not importable ({type(exc).__name__}: {exc})") from None
    from .mmseg_generations import shown, supported_versions, supporting_generation
    from .notice import deferred_warnings
    from .planning import created_texts
    from .tree import MANIFEST_NAME, MMSegTree

    root = Path(mmseg.__file__).resolve().parent.parent
    version = getattr(mmseg, "__version__", None)
    if not isinstance(version, str) or supporting_generation(version) is None:
        raise PluginError(
            f"MMSegmentation {shown(str(version))} at {root}/mmseg is not supported (supported: {supported_versions()})"
        )
    import mmseg.models  # noqa: F401 - the registries as the installed package fills them

    try:
        tree = MMSegTree.open(root, version)
        registry = tree.generation.dialect.models()
        with deferred_warnings() as notices:
            texts = created_texts(tree, notices=notices)
    except RewardpatchError as exc:
        raise PluginError(f"{root}/mmseg: {exc}") from None
    if (root / MANIFEST_NAME).is_file() or any((root / path).is_file() for path in texts):
        # a tree `rewardpatch apply` patched (or one patched by hand): its own modules register
        if "CrossEntropyRewardLoss" not in registry.module_dict:
            raise PluginError(f"{root}/mmseg holds reward files but registers no CrossEntropyRewardLoss")
        return None
    loader = _Loader()
    sys.meta_path.insert(0, _Finder(loader))
    return _Plugin(tree, registry, tree.generation.heads_dir.replace("/", "."), loader, texts)


def _project(modules) -> dict[str, ProjectModule]:
    found: dict[str, ProjectModule] = {}
    for module in modules:
        each = project_module(module)
        found.setdefault(each.stem, each)
    return found


def register() -> tuple[str, ...]:
    """Plan on the installed mmseg and execute the planned modules; the names registered."""
    global _PLUGIN
    _PLUGIN = _open()
    if _PLUGIN is None:
        return ()
    base = importlib.import_module(f"{_PLUGIN.package}.decode_head").BaseDecodeHead
    project = {}
    from .notice import warn

    for module in _registered_project_heads(_PLUGIN.registry, base):
        try:
            project.update(_project([module]))
        except PluginError as exc:
            warn(f"plugin mode: {exc}")
    if project:
        _warn_incompatible(_PLUGIN, project)
    return _run(_PLUGIN, project)


def _resolve(head) -> tuple[ModuleType, str | None]:
    """(module, class name, or None for each of its heads) of a class, a module or a dotted name of either."""
    if inspect.isclass(head):
        return sys.modules[head.__module__], head.__name__
    if isinstance(head, ModuleType):
        return head, None
    if not isinstance(head, str) or not head:
        raise PluginError(f"add_heads takes classes, modules or dotted names, not {head!r}")
    try:
        return importlib.import_module(head), None
    except ModuleNotFoundError as exc:
        if exc.name != head:  # a module it imports is missing: that is the error
            raise
    module_name, _, class_name = head.rpartition(".")
    try:
        module = importlib.import_module(module_name) if module_name else None
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        module = None
    if module is None:
        raise PluginError(f"{head}: no such module, nor a class of one")
    if not inspect.isclass(getattr(module, class_name, None)):
        raise PluginError(f"{head}: no such module, and {module_name} has no class {class_name}")
    return module, class_name


def add_heads(*heads) -> tuple[str, ...]:
    """Reward versions of a project's heads, named explicitly: classes, modules (each of their
    heads) or dotted names of either ('myproj.heads', 'myproj.heads.MyHead'). For heads the
    import did not find: registered after it, or in a registry of the project's own. Their
    modules are planned as the import plans those it finds. A named class that cannot get a
    reward version raises PluginError with list-heads' reason, and nothing is registered; the
    heads of a named module that cannot are warned about. Returns the reward class names of the
    named heads, registered now or before. Every rank of a distributed run calls it alike.
    """
    from .head_index import INCOMPATIBLE
    from .notice import warn

    if _PLUGIN is None:
        raise PluginError("this MMSegmentation is patched: its own modules register the reward heads")
    wanted = [_resolve(head) for head in heads]
    modules = _project(module for module, _ in wanted)
    verdicts = _verdicts(_PLUGIN, modules)
    named: list[str] = []
    for module, class_name in wanted:
        file = next(each.file for each in modules.values() if each.module is module)
        here = [head for head in verdicts if head.file == file]
        if class_name is None:
            for head in here:
                if head.status == INCOMPATIBLE:
                    warn(f"plugin mode: {head.name} ({file}) gets no reward version: {head.reason}")
                else:
                    named.append(head.reward_name)
            continue
        head = next((h for h in here if h.name == class_name), None)
        if head is None:
            raise PluginError(f"{module.__name__}.{class_name} is not a decode head (no BaseDecodeHead in its bases)")
        if head.status == INCOMPATIBLE:
            raise PluginError(f"{head.name} ({file}) cannot get a reward version: {head.reason}")
        named.append(head.reward_name)
    fresh = {stem: each for stem, each in modules.items() if stem not in _PLUGIN.project}
    if fresh:
        _run(_PLUGIN, fresh)
    return tuple(dict.fromkeys(named))


def registered() -> tuple[str, ...]:
    """Every name plugin mode registered so far: the import's (REGISTERED) and add_heads'."""
    return _PLUGIN.registered if _PLUGIN is not None else ()


def report() -> dict:
    """What plugin mode did in this process, as JSON (`list-heads --installed --import`, `verify`
    and `config --plugin` read it from a probe process): the MMSeg it planned on, every name
    registered, and list-heads' verdicts for the project heads it found or was given."""
    import mmseg

    heads = []
    if _PLUGIN is not None and _PLUGIN.project:
        heads = [head.as_json() for head in _verdicts(_PLUGIN, _PLUGIN.project)]
    return {
        "mmseg": str(Path(mmseg.__file__).resolve().parent),
        "mmseg_version": mmseg.__version__,
        "patched": _PLUGIN is None,
        "registered": list(registered()),
        "project_heads": heads,
    }


_PLUGIN: _Plugin | None = None
REGISTERED = register()
