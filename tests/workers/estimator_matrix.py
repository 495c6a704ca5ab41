"""The inserted loss files run by one interpreter of the torch matrix (test_torch_matrix.py).

Python 3.7 and torch 1.7 at the oldest run this file: nothing newer in it.

argv: ROOT CASES OUT. ROOT holds the package the test lays out as apply would: a stand-in
`mmseg` (its registry's register_module returns the class unchanged) whose models/losses/
holds the templates beside MMSeg's own cross_entropy_loss.py and utils.py. CASES (JSON,
written by the test process) holds the input tensors, by name, and the cases. OUT (JSON)
gets, per case, every loss value, statistic and gradient on the logits as float64 numbers
(each float32, float16 and bfloat16 number is one exactly), or the error it raised.
"""
import json
import sys
import traceback

root, cases_path, out_path = sys.argv[1:4]
sys.path.insert(0, root)

import torch  # noqa: E402

from mmseg.models.losses import reward_device, reward_estimator, reward_head  # noqa: E402
from mmseg.models.losses.cross_entropy_reward_loss import CrossEntropyRewardLoss  # noqa: E402
from mmseg.models.losses.iou_metric_loss import IoUMetricLoss  # noqa: E402

# one thread: the tensors are small, and a loaded machine slows spinning threads
torch.set_num_threads(1)

DTYPES = dict(
    float32=torch.float32, float16=torch.float16, bfloat16=torch.bfloat16)


def cpu_bfloat16():
    """Whether this torch reduces bfloat16 on the CPU (amax: torch >= 1.9)."""
    try:
        torch.zeros(2, 2, dtype=torch.bfloat16).amax(1)
    except RuntimeError:
        return False
    return True


def cpu_max(dtype):
    """Whether this torch has `max(1)` (values and indices) of `dtype` on the
    CPU, which the GPU policy forced on the CPU calls (torch 1.7 has none for
    float16)."""
    try:
        torch.zeros(2, 2, dtype=dtype).max(1)
    except RuntimeError:
        return False
    return True


def numbers(value):
    return value.detach().double().flatten().tolist()


def run_estimator(case, tensors, classes, ignore_index, policy='cpu'):
    dtype = DTYPES[case['dtype']]
    loss_module = CrossEntropyRewardLoss(**case['loss'])
    estimator = reward_estimator.RewardEstimator(case['reward_cfg'], classes,
                                                 ignore_index)
    steps = []
    for index, step in enumerate(case['steps']):
        logits = tensors[step['logits']].to(dtype, copy=True).requires_grad_()
        weight = tensors[step['seg_weight']] if step['seg_weight'] else None
        torch.manual_seed(100 + index)  # the label samples
        with reward_head._autocast_off('cpu'):
            with reward_device.device_policy(policy):
                loss, stats = estimator(logits, tensors[step['labels']],
                                        loss_module, weight)
                loss.backward()
        steps.append(
            dict(
                loss=numbers(loss),
                stats={key: numbers(value)
                       for key, value in sorted(stats.items())},
                grad=numbers(logits.grad),
                grad_dtype=str(logits.grad.dtype)))
    return dict(steps=steps, history=numbers(estimator.history))


def run_estimator_gpu_policy(case, tensors, classes, ignore_index):
    """run_estimator under the GPU policy (forced on the CPU)."""
    if not cpu_max(DTYPES[case['dtype']]):
        return dict(skipped='this torch has no %s max(1) on the CPU' %
                    case['dtype'])
    return run_estimator(case, tensors, classes, ignore_index, 'gpu')


def run_loss(case, tensors, classes, ignore_index):
    dtype = DTYPES[case['dtype']]
    call = case['call']
    if case['kind'] == 'iou':
        loss = IoUMetricLoss(classes, ignore_index, case['reward'])
        pred = tensors[call['pred']]
        if pred.is_floating_point():
            pred = pred.to(dtype)
        return dict(value=numbers(loss(pred, tensors[call['labels']])))
    loss = CrossEntropyRewardLoss(**case['loss'])
    logits = tensors[call['logits']].to(dtype, copy=True).requires_grad_()
    reward = call['reward']
    if isinstance(reward, str):
        reward = tensors[reward]
    value = loss(
        logits,
        tensors[call['labels']],
        reward=reward,
        weight=tensors[call['weight']] if call['weight'] else None,
        ignore_index=ignore_index,
        ground_truth=tensors[call['ground_truth']]
        if call['ground_truth'] else None)
    value.backward()
    return dict(
        value=numbers(value),
        grad=numbers(logits.grad),
        grad_dtype=str(logits.grad.dtype))


def run(case, runner, tensors, classes, ignore_index, bfloat16):
    if case['dtype'] == 'bfloat16' and not bfloat16:
        return dict(skipped='this torch has no bfloat16 amax on the CPU')
    try:
        return runner(case, tensors, classes, ignore_index)
    except Exception:  # noqa: BLE001 - every failure is reported by name
        return dict(error=traceback.format_exc())


def main():
    with open(cases_path) as f:
        spec = json.load(f)
    tensors = {
        name: torch.tensor(t['values'], dtype=getattr(torch,
                                                      t['dtype'])).view(
                                                          t['shape'])
        for name, t in spec['tensors'].items()
    }
    classes, ignore_index = spec['classes'], spec['ignore_index']
    bfloat16 = cpu_bfloat16()
    contexts = {}
    for device in ('cpu', 'cuda'):
        try:
            with reward_head._autocast_off(device):
                pass
            contexts[device] = 'ok'
        except Exception:  # noqa: BLE001
            contexts[device] = traceback.format_exc()
    result = dict(
        python='.'.join(map(str, sys.version_info[:3])),
        torch=torch.__version__,
        cpu_bfloat16=bfloat16,
        cpu_max={name: cpu_max(dtype)
                 for name, dtype in DTYPES.items()},
        autocast_off=contexts,
        estimator={
            case['name']: run(case, run_estimator, tensors, classes,
                              ignore_index, bfloat16)
            for case in spec['estimator']
        },
        estimator_gpu_policy={
            case['name']: run(case, run_estimator_gpu_policy, tensors,
                              classes, ignore_index, bfloat16)
            for case in spec['estimator']
        },
        losses={
            case['name']: run(case, run_loss, tensors, classes, ignore_index,
                              bfloat16)
            for case in spec['losses']
        })
    with open(out_path, 'w') as f:
        json.dump(result, f)


main()
