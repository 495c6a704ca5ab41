"""What differs between MMSeg generations at run time, by the runner their configs are written
for (patches/mmseg-*.toml `runner`): one table, DIALECTS, read by plugin mode (the registry),
verify's worker (the config loader, the head check, the fine-tune) and `config` (the seed; how
configs spell the schedule is keyed by these dialects in configs/schedule.py).

Imported by verify's worker and by plugin mode inside the user's training environment
(Python 3.8, 3.7 for the templates): nothing here imports more than the standard library
until a dialect's registry or config loader is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


def _mmengine_models():
    from mmseg.registry import MODELS

    return MODELS


def _mmcv_models():
    from mmseg.models.builder import MODELS

    return MODELS


def _mmengine_config():
    from mmengine.config import Config

    return Config


def _mmcv_config():
    from mmcv import Config

    return Config


@dataclass(frozen=True)
class Dialect:
    """How one runner's MMSeg registers, loads configs, is verified and seeded."""

    runner: str  # the patches/ value it is keyed by
    # mmengine's or mmcv's (Any: the MMSeg stack is not installed where mypy runs)
    models: Callable[[], Any]  # the MODELS registry the heads register in
    config: Callable[[], Any]  # the Config class that loads a config as training does
    check_head: str  # verify's stage 1, in verify/head_checks.py
    finetune_module: str  # verify's stage 2, a module of rewardpatch.verify with its finetune()
    register_all_modules: bool  # mmseg.utils.register_all_modules() before building
    # whether the config carries the run's seed (randomness.seed); MMSeg 0.x's tools/train.py
    # seeds from its --seed argument and overwrites cfg.seed
    config_seed: bool


# MMSeg 1.x: mmengine's registries, Config and Runner
MMENGINE = Dialect("mmengine", _mmengine_models, _mmengine_config, "check_head", "finetune",
                   register_all_modules=True, config_seed=True)
# MMSeg 0.x: mmcv-full 1.x's registries, Config and runner
MMCV = Dialect("mmcv", _mmcv_models, _mmcv_config, "check_head_0x", "finetune_0x",
               register_all_modules=False, config_seed=False)

# by the runner a generation's configs are written for (patches/mmseg-*.toml `runner`)
DIALECTS = {dialect.runner: dialect for dialect in (MMENGINE, MMCV)}
