"""Plugin mode: `custom_imports = dict(imports=['rewardpatch.plugin'], allow_failed_imports=False)`.

Importing this module registers, in the registries of the MMSegmentation that `import mmseg`
finds (a pip-installed 1.x or 0.x), what `rewardpatch apply` would add to that tree:
CrossEntropyRewardLoss, IoUMetricLoss, the reward estimator, RewardDecodeHead and
Reward<X> for every head `list-heads` calls compatible there. Their code is the very text
apply would write (planner.created_texts: the templates/ files and the codemod's head
copies), planned on the installed package without writing anything, and executed from
memory as the modules apply would create (mmseg.models.losses.reward_estimator,
mmseg.models.decode_heads.reward_fcn_head, ...). Planning is deterministic, so every rank
of a distributed run registers the same classes.

Nothing is written: not the installed package, not a cache, no bytecode.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from pathlib import Path

from .errors import RewardpatchError

# The scheme of the (absent) files the modules read as: tracebacks and inspect.getsource
# get their lines from the loader.
ORIGIN = "rewardpatch-plugin://"


class _Loader(importlib.abc.Loader):
    """Executes a planned module's text; its relative imports resolve against the installed mmseg."""

    def __init__(self, texts: dict[str, str], paths: dict[str, str]):
        self.texts = texts
        self.paths = paths

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


def _module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def _refuse(message: str) -> ImportError:
    return ImportError(f"rewardpatch.plugin: {message}")


def _registry(runner: str):
    if runner == "mmengine":
        from mmseg.registry import MODELS
    else:
        from mmseg.models.builder import MODELS
    return MODELS


# The stem a project's head module is planned under, in the heads package: plugin_<its dotted name>
PROJECT_STEM = "plugin_"


def _project_heads(registry, package: str) -> dict[str, tuple[str, str, object]]:
    """{stem: (file, source, module)} of the modules outside mmseg whose registered classes
    derive from the decode-head base: heads a project registered before this import.

    Planned as if they were in the heads package (HeadIndex `extra`), under
    PROJECT_STEM + their dotted name, so that the same verdicts and codemod apply; one with
    relative imports is left out with a warning (they would resolve against mmseg's package).
    """
    import ast
    import inspect

    from .notice import warn

    base = importlib.import_module(f"{package}.decode_head").BaseDecodeHead
    found: dict[str, tuple[str, str, object]] = {}
    for cls in list(registry.module_dict.values()):
        name = getattr(cls, "__module__", "") or ""
        if not (inspect.isclass(cls) and issubclass(cls, base)) or name == "mmseg" or name.startswith("mmseg."):
            continue
        module = sys.modules.get(name)
        stem = PROJECT_STEM + name.replace(".", "_")
        if module is None or stem in found:
            continue
        try:
            source = inspect.getsource(module)
        except (OSError, TypeError):
            warn(f"plugin mode: no source for {name}: {cls.__name__} gets no reward version")
            continue
        if any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(ast.parse(source))):
            warn(f"plugin mode: {name} uses relative imports: its heads get no reward version yet")
            continue
        found[stem] = (getattr(module, "__file__", None) or name, source, module)
    return found


def _warn_incompatible(tree, extra: dict[str, tuple[str, str, object]]) -> None:
    """One warning for each project head that gets no reward version, saying why (list-heads' reason)."""
    from .heads import INCOMPATIBLE
    from .notice import warn
    from .planner import load_state

    _, index = load_state(tree, extra={stem: (file, source) for stem, (file, source, _) in extra.items()})
    files = {file for file, _, _ in extra.values()}
    for head in index.heads():
        if head.file in files and head.status == INCOMPATIBLE:
            warn(f"plugin mode: {head.name} ({head.file}) gets no reward version: {head.reason}")


def register() -> tuple[str, ...]:
    """Plan on the installed mmseg and execute the planned modules; the names registered."""
    try:
        import mmseg
    except Exception as exc:  # noqa: BLE001 - any failure: MMSeg cannot be used
        raise _refuse(f"MMSegmentation is not importable ({type(exc).__name__}: {exc})") from None
    from .mmseg_generations import shown, supported_versions, supporting_generation
    from .planner import created_texts
    from .tree import MANIFEST_NAME, MMSegTree

    root = Path(mmseg.__file__).resolve().parent.parent
    version = getattr(mmseg, "__version__", None)
    if not isinstance(version, str) or supporting_generation(version) is None:
        raise _refuse(
            f"MMSegmentation {shown(str(version))} at {root}/mmseg is not supported (supported: {supported_versions()})"
        )
    import mmseg.models  # noqa: F401 - the registries as the installed package fills them

    try:
        tree = MMSegTree.open(root, version)
        registry = _registry(tree.generation.runner)
        extra = _project_heads(registry, tree.generation.heads_dir.replace("/", "."))
        texts = created_texts(tree, {stem: (file, source) for stem, (file, source, _) in extra.items()})
    except RewardpatchError as exc:
        raise _refuse(f"{root}/mmseg: {exc}") from None
    if (root / MANIFEST_NAME).is_file() or any((root / path).is_file() for path in texts):
        # a tree `rewardpatch apply` patched (or one patched by hand): its own modules register
        if "CrossEntropyRewardLoss" not in registry.module_dict:
            raise _refuse(f"{root}/mmseg holds reward files but registers no CrossEntropyRewardLoss")
        return ()
    if extra:
        _warn_incompatible(tree, extra)
    modules = {_module_name(path): text for path, text in texts.items()}
    paths = {_module_name(path): path for path in texts}
    taken = [name for name in modules if name in sys.modules]
    if taken:
        raise _refuse(f"{taken[0]} is imported already, not from rewardpatch.plugin")
    before = set(registry.module_dict)
    package = tree.generation.heads_dir.replace("/", ".")
    for stem, (_, _, module) in extra.items():  # the copy imports its source's names from `.<stem>`
        sys.modules[f"{package}.{stem}"] = module
    sys.meta_path.insert(0, _Finder(_Loader(modules, paths)))
    for name in modules:  # templates first (the estimator and losses before the heads), then heads
        importlib.import_module(name)
    return tuple(sorted(set(registry.module_dict) - before))


REGISTERED = register()
