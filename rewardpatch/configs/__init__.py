"""`rewardpatch config`: turn a cross-entropy config into a reward fine-tune config.

The source config is loaded with mmengine (inheritance resolved) and rewritten as plain
data in small steps, each noting why it changed: the decode heads and their losses
(head_swap.py), the schedule in the keys of the tree's MMSeg generation (schedule.py; a 0.x
lr_config's end LR in lr_config.py), the checkpoint (finetune_plan.start_from), with `--reward`
checked by the tree's own code (reward_cfg.py). The output inherits the source
through `_base_` and holds only the difference that mmengine has to merge onto it
(diff.py); before it replaces OUT, the written file is loaded again and must give exactly
the rewritten config (render.py). command.py composes the steps.

torch and mmengine are imported inside the functions that need them, so that
`rewardpatch --help` stays fast.
"""
