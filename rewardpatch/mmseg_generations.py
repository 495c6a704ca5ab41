"""MMSegmentation's generations (1.x, ...) as patches/ describes them: what goes where in a tree.

Named after MMSeg's generations, not after code generation: nothing here writes code.

The data files travel with the package (see setup.cfg); in a source checkout
they sit beside the package instead.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .errors import InputError

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """templates/ or patches/, installed inside the package or beside it."""
    for candidate in (_PACKAGE_DIR / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"rewardpatch is installed without its {name}/ directory")


def version_tuple(version: str) -> tuple[int, ...]:
    """'1.2.2' -> (1, 2, 2); pre-release suffixes ('1.0.0rc4') keep their number."""
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(ch for ch in piece.split("rc")[0] if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


@dataclass(frozen=True)
class BaseSpec:
    """A decode-head base class of MMSeg and the reward base that replaces it."""

    name: str
    module: str
    reward: str
    reward_module: str


@dataclass(frozen=True)
class TemplateSpec:
    """A file of templates/ copied into the tree, and what its package exports."""

    source: str
    target: str
    init: str
    exports: tuple[str, ...]

    @property
    def text(self) -> str:
        return (data_dir("templates") / self.source).read_text(encoding="utf-8")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Generation:
    name: str
    min_version: tuple[int, ...]
    max_version: tuple[int, ...]
    heads_dir: str
    heads_init: str
    loss_methods: tuple[str, ...]
    data_samples_param: str
    bases: dict[str, BaseSpec]
    templates: tuple[TemplateSpec, ...]
    verify: dict  # stage-1 facts of `rewardpatch verify`: default and per-head arguments

    def supports(self, version: str) -> bool:
        return self.min_version <= version_tuple(version) < self.max_version

    @property
    def reward_base_names(self) -> set[str]:
        return {spec.reward for spec in self.bases.values()}


def _load(path: Path) -> Generation:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return Generation(
        name=data["name"],
        min_version=version_tuple(data["min_version"]),
        max_version=version_tuple(data["max_version"]),
        heads_dir=data["heads_dir"],
        heads_init=data["heads_init"],
        loss_methods=tuple(data["loss_methods"]),
        data_samples_param=data["data_samples_param"],
        bases={name: BaseSpec(name=name, **spec) for name, spec in data["bases"].items()},
        templates=tuple(
            TemplateSpec(t["source"], t["target"], t["init"], tuple(t["exports"]))
            for t in data["templates"]
        ),
        verify=data.get("verify", {}),
    )


@cache
def generations() -> tuple[Generation, ...]:
    return tuple(_load(p) for p in sorted(data_dir("patches").glob("*.toml")))


def generation_for(version: str) -> Generation:
    for generation in generations():
        if generation.supports(version):
            return generation
    if version_tuple(version) < (1,):
        raise InputError(f"MMSegmentation {version} (0.x) is not supported yet")
    raise InputError(f"MMSegmentation {version} is not supported by rewardpatch")
