"""What `reward_cfg` may say: its keys, their defaults and checks, and the
table of rewards it can name.

This module imports nothing, torch included: `rewardpatch config` imports
this file by path to check `--reward` options with the very
`check_reward_cfg` the heads run when the model is built, and
reward_counts.py reads its rewards from `REWARDS`.

A reward sees a label map only through three counts per class c, as MMSeg's
IoUMetric does (reward_counts.py counts them): I_c, labelled pixels
predicted c whose ground truth is c; P_c, labelled pixels predicted c; G_c,
pixels whose ground truth is c. A row of `REWARDS` maps them, tensors
[..., C], to a numerator and a denominator per class: the reward is the sum
of the numerators over the sum of the denominators (0 where that is 0).
Adding a reward is adding a row. What the estimators rely on: a row gives
the terms of class c from I_c, P_c and G_c alone (moving one pixel then
changes the terms of two classes only), and a class's denominator moves by
one at most when it loses a pixel or gains another class's, and not at all
when it gains a pixel of its own ground truth.
"""

MODES = ('local', 'reinforce', 'weighted_ce')
SCOPES = ('image', 'batch', 'dataset')
BASELINE_NAMES = ('loo', 'greedy', 'batch_mean', 'none')
DEFAULT_MODE = 'local'
# The keys each mode reads, with their defaults; `decay` belongs to
# scope='dataset' alone. The default of 'local' is what raised dataset mIoU
# most in rewardpatch's benchmark (benchmarks/results/learning.json).
REWARD_CFG_DEFAULTS = dict(
    local=dict(
        scope='dataset',
        reward='miou',
        num_samples=1,
        temperature=0.5,
        mle_weight=0.0),
    reinforce=dict(
        scope='image',
        reward='miou',
        num_samples=2,
        temperature=1.0,
        baseline='loo',
        normalize_advantage=False,
        mle_weight=0.0),
    weighted_ce=dict(scope='image', reward='miou', mle_weight=0.0))
DATASET_DECAY = 0.99
# 'local' and 'reinforce' also read `fuse` (default False): their per-pixel
# passes compiled by torch.compile (reward_device.py, `fused`).


def _class_mean(score, union):
    """Terms of the mean of score / union over the classes whose union is not
    empty, as IoUMetric averages over classes."""
    present = union > 0
    value = score / union.masked_fill(~present, 1)
    return value * present, present.to(value.dtype)


def mean_iou(intersect, predicted, truth):
    """Mean IoU over the classes predicted or in the ground truth."""
    return _class_mean(intersect, predicted + truth - intersect)


def mean_dice(intersect, predicted, truth):
    """Mean Dice (F1) over the classes predicted or in the ground truth."""
    return _class_mean(2 * intersect, predicted + truth)


def pixel_accuracy(intersect, predicted, truth):
    """Labelled pixels predicted right, over those whose ground truth is a
    class."""
    return intersect, truth


def frequency_weighted_iou(intersect, predicted, truth):
    """The IoU of each class weighted by its ground-truth pixels: sum_c G_c
    IoU_c / sum_c G_c."""
    iou, _ = _class_mean(intersect, predicted + truth - intersect)
    return truth * iou, truth


# name in reward_cfg -> (I, P, G) [..., C] -> per-class (numerator,
# denominator)
REWARDS = dict(
    miou=mean_iou,
    dice=mean_dice,
    pixel_acc=pixel_accuracy,
    fwiou=frequency_weighted_iou)
REWARD_NAMES = tuple(REWARDS)


def reward_row(reward: str):
    """The row of `REWARDS` named `reward`; a ValueError names the key."""
    if reward not in REWARDS:
        raise ValueError('reward must be one of '
                         f'{", ".join(map(repr, REWARD_NAMES))}, '
                         f'got {reward!r}')
    return REWARDS[reward]


def check_reward_cfg(reward_cfg) -> dict:
    """`reward_cfg` completed with its mode's defaults.

    A ValueError names the first bad key: unknown, not read by the chosen
    mode or scope, or of a bad value.
    """
    if reward_cfg is None:
        reward_cfg = {}
    if not isinstance(reward_cfg, dict):
        raise TypeError('reward_cfg must be a dict, got '
                        f'{type(reward_cfg).__name__}')
    known = ['mode']
    for keys in REWARD_CFG_DEFAULTS.values():
        known += [key for key in keys if key not in known]
    known += ['decay', 'fuse']
    unknown = [key for key in reward_cfg if key not in known]
    if unknown:
        raise ValueError(f'reward_cfg: unknown key {unknown[0]!r}; '
                         f'known keys: {", ".join(known)}')
    mode = reward_cfg.get('mode', DEFAULT_MODE)
    if mode not in MODES:
        raise ValueError('reward_cfg.mode must be one of '
                         f'{", ".join(map(repr, MODES))}, got {mode!r}')
    defaults = REWARD_CFG_DEFAULTS[mode]
    for key in reward_cfg:
        sampling = key == 'fuse' and mode != 'weighted_ce'
        read = key in defaults or key in ('mode', 'decay') or sampling
        if not read:
            raise ValueError(f'reward_cfg.{key} does not apply to '
                             f'mode={mode!r}')
    cfg = dict(mode=mode, **defaults)
    cfg.update(reward_cfg)

    def bad(key, expected):
        return ValueError(f'reward_cfg.{key} must be {expected}, '
                          f'got {cfg[key]!r}')

    def number(key):
        value = cfg[key]
        return not isinstance(value, bool) and isinstance(value, (int, float))

    choices = dict(scope=SCOPES, reward=REWARD_NAMES, baseline=BASELINE_NAMES)
    for key, allowed in choices.items():
        if key in cfg and cfg[key] not in allowed:
            raise bad(key, 'one of ' + ', '.join(map(repr, allowed)))
    if mode == 'weighted_ce' and cfg['scope'] != 'image':
        raise bad('scope', "'image' with mode='weighted_ce'")
    if cfg['scope'] == 'dataset' and mode != 'weighted_ce':
        cfg.setdefault('decay', DATASET_DECAY)
        if not number('decay') or not 0 <= cfg['decay'] < 1:
            raise bad('decay', 'a number in [0, 1)')
    elif 'decay' in cfg:
        raise ValueError("reward_cfg.decay applies to scope='dataset' only")
    if 'num_samples' in cfg:
        if type(cfg['num_samples']) is not int or cfg['num_samples'] < 1:
            raise bad('num_samples', 'an integer >= 1')
        if cfg.get('baseline') == 'loo' and cfg['num_samples'] < 2:
            raise bad('num_samples', ">= 2 with baseline='loo'")
    if 'temperature' in cfg and (not number('temperature')
                                 or cfg['temperature'] <= 0):
        raise bad('temperature', 'a number > 0')
    if 'normalize_advantage' in cfg and not isinstance(
            cfg['normalize_advantage'], bool):
        raise bad('normalize_advantage', 'True or False')
    if not isinstance(cfg.get('fuse', False), bool):
        raise bad('fuse', 'True or False')
    if not number('mle_weight') or cfg['mle_weight'] < 0:
        raise bad('mle_weight', 'a number >= 0')
    return cfg
