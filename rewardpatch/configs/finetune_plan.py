"""The fine-tune config being written: the source, the rewrite, and why each change was made.

Each step of the rewrite (head_swap.py, schedule.py, start_from) edits `FinetunePlan.target`
and notes why; the differences and the override to write follow from source and target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..dialects import DIALECTS
from .diff import UNSET, Change, leaf_changes, merge_override, same

DEFAULT_ITERS = 2000
# A fine-tune resumes nothing: 1.x's resume flag, 0.x's resume_from checkpoint, and their off values.
NO_RESUME = {"resume": False, "resume_from": None}


@dataclass
class FinetuneOptions:
    """What the user asked for on the command line."""

    reward_classes: set[str]
    tree: str
    runner: str  # the tree's generation's (patches/): whose config keys the schedule is in
    lr: float | None = None
    iters: int = DEFAULT_ITERS
    schedule: str = "poly"
    aux: bool = False
    reward_cfg: dict = field(default_factory=dict)
    check_reward_cfg: Callable[[dict], dict] = lambda reward_cfg: reward_cfg
    # plugin mode (--plugin): the project modules to import before rewardpatch.plugin (None for a
    # patched tree), why each head that gets no reward version gets none, and the list-heads
    # command that shows the verdicts
    plugin_imports: list[str] | None = None
    plugin_reasons: dict[str, str] = field(default_factory=dict)
    plugin_list_heads: str = ""
    # heads whose loss reaches the reward only on a condition (list-heads' `conditional`):
    # name -> (the condition, the constructor arguments that make it hold or None)
    conditions: dict[str, tuple[str, tuple[tuple[str, object], ...] | None]] = field(default_factory=dict)


@dataclass
class FinetunePlan:
    """The source config, the fine-tune config, and why each difference was made."""

    source: dict
    target: dict
    notes: dict[str, str] = field(default_factory=dict)  # path prefix -> why

    def note(self, path: str, why: str) -> None:
        self.notes[path] = why

    @property
    def changes(self) -> list[Change]:
        changes, pending = [], dict(self.notes)
        for change in leaf_changes(self.source, self.target):
            prefix = next((p for p in pending if within(change.path, p) or within(p, change.path)), None)
            note = pending.pop(prefix) if prefix is not None else None
            changes.append(Change(change.path, change.before, change.after, note))
        return changes

    @property
    def overrides(self) -> dict:
        return {
            key: merge_override(self.source.get(key, UNSET), value)
            for key, value in self.target.items()
            if not same(self.source.get(key, UNSET), value)
        }


def within(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".") or path.startswith(prefix + "[")


def as_list(value) -> tuple[list, bool]:
    return (value, True) if isinstance(value, list) else ([value], False)


def start_from(plan: FinetunePlan, checkpoint: str | None, why: str | None = None) -> None:
    """load_from is the checkpoint (absolute: mmengine resolves it from the working directory)."""
    if checkpoint is not None:
        plan.target["load_from"] = checkpoint
        if why:
            plan.note("load_from", why)
    for key, off in NO_RESUME.items():
        if plan.target.get(key):
            plan.target[key] = off
            plan.note(key, "a fine-tune starts a new schedule; it does not resume the old one")


# A/B (`config --baseline`): the seed both runs share where the source sets none.
AB_SEED = 0


def same_seed(plan: FinetunePlan, runner: str) -> bool:
    """1.x: randomness.seed, AB_SEED where the source sets none; False where the config has no seed (0.x)."""
    if not DIALECTS[runner].config_seed:
        return False  # MMSeg 0.x's tools/train.py seeds from its --seed argument and overwrites cfg.seed
    randomness = plan.target.get("randomness")
    if not isinstance(randomness, dict):
        randomness = plan.target["randomness"] = {}
    if randomness.get("seed") is None:
        randomness["seed"] = AB_SEED
        plan.note("randomness", "the source sets no seed: both A/B runs get the same one")
    return True


def own_work_dir(plan: FinetunePlan, out_stem: str) -> None:
    """work_dir as tools/train.py derives it from the config's name, written out so that A and B never share one."""
    plan.target["work_dir"] = f"./work_dirs/{out_stem}"
    plan.note("work_dir", "a work_dir of its own for each A/B run")
