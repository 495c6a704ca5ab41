"""The files of templates/ imported as the package apply inserts them into, without MMSeg.

The mathematics (reward_schema.py and the reward modules, REWARD_MODULES) needs nothing but
torch: imported as modules of a package whose directory is templates/, their relative imports
(`from .reward_schema import ...`) find the templates beside them.
"""

import importlib
import sys
import types
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
PACKAGE = "rewardpatch_templates"


def template_module(stem: str) -> types.ModuleType:
    """templates/<stem>.py, imported once per process."""
    if PACKAGE not in sys.modules:
        package = types.ModuleType(PACKAGE)
        package.__path__ = [str(TEMPLATES)]
        sys.modules[PACKAGE] = package
    return importlib.import_module(f"{PACKAGE}.{stem}")


# The modules the reward heads' mathematics and shared part are split into (reward_estimator.py
# held them all before), the one that reads the others first.
REWARD_MODULES = ("reward_estimator", "reward_head", "reward_sampling", "reward_counts", "reward_device")


class Modules:
    """Modules read as one namespace: a name is the first module's that has it.

    For reading only: a name a test replaces must be replaced in the module that reads it
    (the one that defines it, or the one that imported it to call it), so setting one here
    is refused, naming the modules that hold it.
    """

    def __init__(self, modules):
        object.__setattr__(self, "modules", tuple(modules))

    def __getattr__(self, name: str):
        for module in self.modules:
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"none of {', '.join(m.__name__ for m in self.modules)} has {name}")

    def __setattr__(self, name: str, value) -> None:
        holders = ", ".join(m.__name__ for m in self.modules if hasattr(m, name)) or "none"
        raise AttributeError(f"set {name} in the module that reads it ({holders}), not in Modules")


def reward_modules() -> Modules:
    """The reward modules of templates/ (REWARD_MODULES), read as one namespace."""
    return Modules(template_module(stem) for stem in REWARD_MODULES)


# The table every consumer reads; the tests of each reward are parametrised over it. The
# schema imports nothing, so reading it here costs no torch at collection time.
REWARD_NAMES = tuple(template_module("reward_schema").REWARDS)
