"""What apply, revert and check mean for a tree, computed as a PatchPlan or a problem list.

desired.py: what apply writes; apply.py: apply's steps and refusals; revert.py: revert's,
mirroring them; copies.py: the backup copies both keep and put back; check.py: check's
problems; state.py: what they read of a tree. Nothing here writes: the CLI prints a plan
(dry run), engine.py executes it.
"""

from .apply import ApplyOptions, Purpose, plan_apply
from .check import Problem, check_tree
from .copies import REVERT_COPIES_DIR
from .desired import DERIVED_COPYRIGHT, TEMPLATE_COPYRIGHT, created_texts
from .revert import plan_revert
from .state import TreeState, list_heads, load_state

__all__ = [
    "ApplyOptions", "DERIVED_COPYRIGHT", "REVERT_COPIES_DIR", "Problem", "Purpose", "TEMPLATE_COPYRIGHT", "TreeState",
    "check_tree", "created_texts", "list_heads", "load_state", "plan_apply", "plan_revert",
]
