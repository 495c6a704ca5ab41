"""What `pip install .` ships: every package of rewardpatch/, not only those the tests import
from the working tree (an editable install hides a package left out of setup.cfg)."""

import configparser

from conftest import REPO


def test_every_package_of_the_tool_is_listed_in_setup_cfg():
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg", encoding="utf-8")
    listed = {line.strip() for line in setup["options"]["packages"].splitlines() if line.strip()}
    packages = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "rewardpatch").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert packages <= listed, sorted(packages - listed)
