"""`rewardpatch verify`: prove that a patched tree trains.

The parent process (command.py) never imports the tree: it starts a worker whose import
path begins with the tree (worker.py), follows its progress through a JSON-lines events
file, and reports. Stage 1 (head_checks.py) checks each reward head on synthetic features;
stage 2 (finetune.py) runs a short CE-then-reward fine-tune with mmengine's Runner on a
synthetic dataset written to disk (synthetic.py).
"""
