"""MMSegmentation's generations (1.x, ...) as patches/ describes them: what goes where in a tree.

Named after MMSeg's generations, not after code generation: nothing here writes code.

The data files travel with the package (see setup.cfg); in a source checkout
they sit beside the package instead.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from .dialects import DIALECTS, Dialect
from .errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # its backport (setup.cfg)
    import tomli as tomllib

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """templates/ or patches/, installed inside the package or beside it."""
    for candidate in (_PACKAGE_DIR / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"rewardpatch is installed without its {name}/ directory")


def is_release(version: str) -> bool:
    """Whether `version` is a release, spelled as MMSeg spells one: '1.2.2' or a release
    candidate such as '1.0.0rc4' (MMSeg 1.0.0rc0 to rc6 were published and trained on), not
    'v1.2.2', '1.2.2 ', '1.2', '1.0.0-rc4', '1.3.0.dev0', '1.2.2.post1' or '1.2.2+fork'.

    Only such a string can be matched against the releases patches/ was tested with;
    anything looser would let an unreleased or renamed tree pass as a release.
    """
    try:
        parsed = Version(version)
    except InvalidVersion:
        return False
    # str() normalises the spelling; dev, post and local parts mark what was never published
    return (
        version == str(parsed) and len(parsed.release) == 3 and (parsed.pre is None or parsed.pre[0] == "rc")
        and parsed.dev is None and parsed.post is None and parsed.local is None
    )


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
    (see head_api.py): `pixel_weight` is the reward's name for per-pixel weights, and
    `parameters` says what each extra parameter is by name (PARAMETER_KINDS).
    """

    template: str
    base: str
    loss_method: str
    pixel_weight: str
    parameters: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        wrong = sorted(f"{name} = {kind!r}" for name, kind in self.parameters.items() if kind not in PARAMETER_KINDS)
        if wrong:
            raise ValueError(f"[adapter.parameters] {', '.join(wrong)}: a kind is one of {', '.join(PARAMETER_KINDS)}")


# What an extra parameter of a tree's loss method can be to the reward (patches/common.toml).
PARAMETER_KINDS = ("pixel_weight", "context", "unsupported")


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
class VerifyStack:
    """The stack a verify worker needs to import a generation's MMSeg."""

    mmcv_major: int
    needs: str  # in words: "mmcv-full 1.x"
    setup: str  # how to get an environment that has it: "a 0.x environment (make setup0)"


@dataclass(frozen=True)
class VerifySpec:
    """A typed view of a generation's [verify] table (patches/), kept in `data` as TOML gives it:
    the stack its worker needs, and stage 1's small constructor arguments and inputs, the
    defaults (`args`, `inputs`) and each head's own entry (`heads`)."""

    data: dict

    @property
    def stack(self) -> VerifyStack:
        return VerifyStack(**self.data["stack"])

    @property
    def heads(self) -> dict[str, dict]:
        """{head name: its own entry}: `args` on top of the defaults, `inputs`, `tokens`, `cascade`."""
        return self.data.get("heads", {})

    @property
    def args(self) -> dict:
        return self.data["args"]

    @property
    def inputs(self) -> list[list[int]]:
        return self.data["inputs"]

    @property
    def batch(self) -> int:
        return self.data["batch"]

    @property
    def num_classes(self) -> int:
        return self.data["num_classes"]

    @property
    def label_size(self) -> int:
        return self.data["label_size"]


@dataclass(frozen=True)
class Generation:
    name: str
    releases: SpecifierSet  # the releases this data was written and tested for: ">=0.6.0,<=0.30.0"
    heads_dir: str
    heads_init: str
    # loss method -> its ground-truth parameter, which an override must hand on
    loss_methods: dict[str, str]
    bases: dict[str, BaseSpec]
    adapter: AdapterSpec
    templates: tuple[TemplateSpec, ...]
    verify: VerifySpec  # what `rewardpatch verify` needs: its stack, stage 1's arguments and inputs
    # the runner its configs are written for and verify trains with: a key of dialects.DIALECTS
    runner: str

    def supports(self, version: str) -> bool:
        if not (is_release(version) and version in self.releases):
            return False
        # release candidates count only where the range starts at them (1.0.0rc0 ...): those were
        # published; a 1.2.2rc1 never was
        return not Version(version).is_prerelease or Version(version).release == self.lowest.release

    @property
    def lowest(self) -> Version:
        return _bound(self.releases, ">=")

    @property
    def releases_in_words(self) -> str:
        """'0.6.0 to 0.30.0', read off the specifier."""
        return f"{self.lowest} to {_bound(self.releases, '<=')}"

    @property
    def reward_base_names(self) -> set[str]:
        return {spec.reward for spec in self.bases.values()}

    @property
    def dialect(self) -> Dialect:
        """What differs at run time with its runner: registry, config loader, verify's code (dialects.py)."""
        return DIALECTS[self.runner]


def _bound(releases: SpecifierSet, operator: str) -> Version:
    return Version(next(s.version for s in releases if s.operator == operator))


def _releases(path: Path, rule: str) -> SpecifierSet:
    """The `releases` rule of a patches/ file: one inclusive lowest and one inclusive highest
    release, so that the supported releases can be named from it."""
    releases = SpecifierSet(rule)
    operators = sorted(s.operator for s in releases)
    if operators != ["<=", ">="] or not all(is_release(s.version) for s in releases):
        raise ValueError(f"{path.name}: releases = {rule!r} must read '>=X.Y.Z,<=X.Y.Z'")
    return releases


# What every generation shares, beside the patches/mmseg-*.toml that say what differs.
COMMON = "common.toml"


def _merged(common: dict, own: dict) -> dict:
    """`common` with `own` on top, tables merged key by key."""
    merged = dict(common)
    for key, value in own.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = _merged(merged[key], value)
        merged[key] = value
    return merged


def _load(path: Path, common: dict) -> Generation:
    data = _merged(common, tomllib.loads(path.read_text(encoding="utf-8")))
    return Generation(
        name=data["name"],
        releases=_releases(path, data["releases"]),
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
        verify=VerifySpec(data.get("verify", {})),
        runner=data["runner"],
    )


@lru_cache(maxsize=None)  # functools.cache, which Python 3.8 lacks
def generations() -> tuple[Generation, ...]:
    patches = data_dir("patches")
    common = tomllib.loads((patches / COMMON).read_text(encoding="utf-8"))
    return tuple(_load(p, common) for p in sorted(patches.glob("mmseg-*.toml")))


def supporting_generation(version: str) -> Generation | None:
    return next((g for g in generations() if g.supports(version)), None)


def generation_for(version: str) -> Generation:
    """The generation whose `releases` hold `version`, else an InputError naming them all."""
    generation = supporting_generation(version)
    if generation is None:
        raise InputError(
            f"MMSegmentation {shown(version)} is not supported by rewardpatch (supported: {supported_versions()}; "
            "a fork can state the release it is based on with --mmseg-version)"
        )
    return generation


def declared_generation(version: str) -> Generation:
    """The generation of a release given as `--mmseg-version`, which must be supported itself."""
    generation = supporting_generation(version)
    if generation is None:
        raise InputError(
            f"--mmseg-version {shown(version)}: not a supported MMSegmentation release "
            f"(supported: {supported_versions()})"
        )
    return generation


def shown(version: str) -> str:
    """`version` as a message shows it: quoted when blanks would hide in the line."""
    return version if version and version == version.strip() else repr(version)


def supported_versions() -> str:
    """'0.6.0 to 0.30.0, 1.0.0rc0 to 1.2.2': every generation's releases, oldest first."""
    return ", ".join(g.releases_in_words for g in sorted(generations(), key=lambda g: g.lowest))
