"""The files of templates/ imported as the package apply inserts them into, without MMSeg.

The mathematics (reward_schema.py, reward_estimator.py) needs nothing but torch: imported
as modules of a package whose directory is templates/, their relative imports
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


# The table every consumer reads; the tests of each reward are parametrised over it. The
# schema imports nothing, so reading it here costs no torch at collection time.
REWARD_NAMES = tuple(template_module("reward_schema").REWARDS)
