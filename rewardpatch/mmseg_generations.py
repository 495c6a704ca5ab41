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
class AdapterSpec:
    """The template whose classes replace the bases, and the loss method it overrides.

    Its override takes the extra parameters the tree's own `base.loss_method` takes
    (see head_api.py): `pixel_weight` names the one that weights pixels.
    """

    template: str
    base: str
    loss_method: str
    pixel_weight: str


@dataclass(frozen=True)
class TemplateSpec:
    """A file of templates/ copied into the tree, and what its package exports.

    `replace` holds (old, new) line pairs that adapt a shared template to a generation,
    e.g. the registry a loss registers with: data, so that no generation keeps a copy.
    """

    source: str
    target: str
    init: str
    exports: tuple[str, ...]
    replace: tuple[tuple[str, str], ...] = ()

    @property
    def text(self) -> str:
        text = (data_dir("templates") / self.source).read_text(encoding="utf-8")
        for old, new in self.replace:
            if f"\n{old}\n" not in f"\n{text}":
                raise FileNotFoundError(f"templates/{self.source} has no line {old!r} to replace")
            text = f"\n{text}".replace(f"\n{old}\n", f"\n{new}\n")[1:]
        return text

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Generation:
    name: str
    versions: str  # the releases this data was written and tested for, in words
    min_version: tuple[int, ...]
    max_version: tuple[int, ...]
    heads_dir: str
    heads_init: str
    # loss method -> its ground-truth parameter, which an override must hand on
    loss_methods: dict[str, str]
    bases: dict[str, BaseSpec]
    adapter: AdapterSpec
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
        versions=data["versions"],
        min_version=version_tuple(data["min_version"]),
        max_version=version_tuple(data["max_version"]),
        heads_dir=data["heads_dir"],
        heads_init=data["heads_init"],
        loss_methods=dict(data["loss_methods"]),
        bases={name: BaseSpec(name=name, **spec) for name, spec in data["bases"].items()},
        adapter=AdapterSpec(**data["adapter"]),
        templates=tuple(
            TemplateSpec(
                t["source"], t["target"], t["init"], tuple(t["exports"]),
                tuple((old, new) for old, new in t.get("replace", [])),
            )
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
    raise InputError(f"MMSegmentation {version} is not supported by rewardpatch (supported: {supported_versions()})")


def supported_versions() -> str:
    """'0.24.1 to 0.30.0, 1.0.0 to 1.2.2': every generation's releases, oldest first."""
    return ", ".join(g.versions for g in sorted(generations(), key=lambda g: g.min_version))
