"""The inserted loss files give the main stack's numbers on every Python x torch they claim.

Users train in their fork's own environment: DAFormer's family pins Python 3.8 and torch
1.7.1, MMSeg 0.x runs on Python 3.7-3.11 with torch 1.7-2.x, MMSeg 1.x on 3.8-3.12 with
torch 1.8-2.x. `make setup-torch-matrix` builds one venv per row of STACKS (each covers a
break seen there) and `make test` names their folder in REWARDPATCH_TORCH_MATRIX. Each
interpreter runs tests/workers/estimator_matrix.py on inputs made here, and its loss values
and gradients are compared with the same worker's under this interpreter (the main stack).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rewardpatch import checkout
from rewardpatch.planning import plan_apply
from rewardpatch.tree import MMSegTree
from template_modules import REWARD_NAMES, TEMPLATES

IN_CI = bool(os.environ.get("CI"))
REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).parent / "workers" / "estimator_matrix.py"

# <python>-<torch> (the venv's name) -> what it covers
STACKS = {
    "3.7-1.8.1": "Python 3.7: no math.isqrt, math.prod; torch 1.8: no CPU bfloat16 amax",
    "3.8-1.7.1": "DAFormer's stack itself (linked): torch 1.7 has no torch.aminmax (1.10)",
    "3.8-1.11.0": "torch < 1.12: torch.where(mask, int32 tensor, Python int) fails",
    "3.8-1.13.1": "the first torch that passed before the fallbacks; nvidia-* wheels",
    "3.12-2.2.2": "MMSeg 1.x's newest Python, with the first torch that has wheels for it",
}
# CPU bfloat16 amax exists from torch 1.9: below it, the bfloat16 cases are skipped
BFLOAT16_FROM = (1, 9)

# How far a stack's number may be from the main stack's: |a - b| <= ABSOLUTE[dtype] +
# RELATIVE[dtype] * |a|, by the dtype of the case's logits. float32: a sum (a reduction, a
# matrix product) may end in other bits where a build adds in another order (vector width,
# BLAS). Measured: gradients (1e-3 here) within 1e-8, most within 1e-9; loss values one ulp
# apart; the largest gradient (0.04, normalize_advantage) four ulps: 2^-21 relative. float16
# and bfloat16: the gradient is a float32 one rounded once, so two neighbours of a rounding
# boundary give neighbours; and torch 1.x rounds float16 arithmetic differently (a
# Python number times a float16 tensor: in float16 or in float32), which the loss values
# inherit: one ulp of the half-precision number (2^-10, 2^-7; float16's subnormals below
# 6e-5 have an ulp of 2^-24).
ABSOLUTE = {"float32": 1e-8, "float16": 2.0 ** -24, "bfloat16": 1e-8}
RELATIVE = {"float32": 2.0 ** -21, "float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}

CLASSES, BATCH, SIZE, IGNORE = 5, 3, 12, 255
CLASS_WEIGHT = [1.0, 2.0, 0.5, 1.0, 1.5]
DTYPES = ("float32", "float16", "bfloat16")
SCOPES = {"local": ("image", "batch", "dataset"), "reinforce": ("image", "batch", "dataset"),
          "weighted_ce": ("image",)}


# The package apply lays out, as the worker imports it: mmseg/models/losses/ holds the
# templates beside MMSeg 1.2.2's own cross_entropy_loss.py and utils.py; what those import
# from MMSeg and mmengine is stood in for.
REGISTRY = '''"""Stand-in for mmseg.registry: register_module returns the class unchanged."""


class _Registry:

    def register_module(self, *args, **kwargs):
        return lambda cls: cls


MODELS = _Registry()
'''
FILEIO = '''"""Stand-in for mmengine.fileio: the matrix passes class weights as lists."""


def load(path):
    raise NotImplementedError(path)
'''
LOSS_TEMPLATES = ("reward_schema", "reward_device", "reward_counts", "reward_sampling", "reward_estimator",
                  "reward_head", "iou_metric_loss", "cross_entropy_reward_loss")


def lay_out_losses(root: Path, mmseg_tree: Path) -> Path:
    losses = root / "mmseg" / "models" / "losses"
    losses.mkdir(parents=True)
    for package in (root / "mmseg", root / "mmseg" / "models", losses, root / "mmengine"):
        package.mkdir(exist_ok=True)
        (package / "__init__.py").write_text("")
    (root / "mmseg" / "registry.py").write_text(REGISTRY)
    (root / "mmengine" / "fileio.py").write_text(FILEIO)
    for stem in LOSS_TEMPLATES:
        shutil.copy(TEMPLATES / f"{stem}.py", losses)
    for name in ("cross_entropy_loss.py", "utils.py"):
        shutil.copy(mmseg_tree / "mmseg" / "models" / "losses" / name, losses)
    return root


def tensor_spec(tensor) -> dict:
    return dict(shape=list(tensor.shape), dtype=str(tensor.dtype).rpartition(".")[2],
                values=tensor.flatten().tolist())


def matrix_tensors() -> dict:
    """Logits, labels and pixel weights of two steps, made here once: every stack reads
    these very numbers (float32 values are exact in JSON's float64)."""
    import torch

    generator = torch.Generator().manual_seed(29)
    tensors = {}
    for step in range(2):
        shape = (BATCH, SIZE, SIZE)
        labels = torch.randint(0, CLASSES, shape, generator=generator)
        labels[:, :2] = IGNORE  # a band of ignored pixels
        labels[torch.rand(shape, generator=generator) < 0.1] = IGNORE
        if step:
            labels[-1] = IGNORE  # an image without labelled pixels
        beyond = labels.clone()
        beyond[torch.rand(shape, generator=generator) < 0.05] = CLASSES + 2  # labelled, no class
        tensors[f"logits{step}"] = torch.randn(BATCH, CLASSES, *shape[1:], generator=generator) * 2
        tensors[f"labels{step}"] = labels
        tensors[f"beyond{step}"] = beyond
        tensors[f"weight{step}"] = torch.rand(shape, generator=generator)
    full = torch.randint(0, CLASSES, (BATCH, SIZE, SIZE), generator=generator)
    sampled = torch.randint(0, CLASSES, (2, BATCH, SIZE, SIZE), generator=generator)
    tensors["full_labels"] = full
    tensors["sampled"] = sampled.masked_fill(tensors["labels0"] == IGNORE, IGNORE)
    tensors["image_reward"] = torch.rand(BATCH, generator=generator)
    tensors["sample_reward"] = torch.randn(2, BATCH, generator=generator)
    return {name: tensor_spec(t) for name, t in tensors.items()}


def estimator_case(name, dtype, reward_cfg, loss=None, seg_weight=True, labels="labels"):
    steps = [dict(logits=f"logits{s}", labels=f"{labels}{s}", seg_weight=f"weight{s}" if seg_weight else None)
             for s in range(2)]
    return dict(name=f"{name}/{dtype}", dtype=dtype, reward_cfg=reward_cfg, loss=loss or {}, steps=steps)


def estimator_cases() -> list[dict]:
    """Every mode x scope x reward in every dtype, with class weights (but where MMSeg
    1.2.2's own cross_entropy is called with the ground truth: with class weights and
    ignored pixels it raises IndexError upstream), pixel weights and ignored pixels, two
    steps; and, in float32 and float16, the other arguments that change the arithmetic."""
    cases = []
    for mode, reward, dtype in itertools.product(SCOPES, REWARD_NAMES, DTYPES):
        for scope in SCOPES[mode]:
            loss = {} if mode == "weighted_ce" else dict(class_weight=CLASS_WEIGHT)
            cases.append(estimator_case(f"{mode}-{scope}-{reward}", dtype,
                                        dict(mode=mode, scope=scope, reward=reward), loss))
    weighted = dict(class_weight=CLASS_WEIGHT)
    variants = [
        ("unweighted", dict(), None, False, "labels"),
        ("mle_weight", dict(scope="image", mle_weight=0.5), None, True, "labels"),
        ("samples", dict(scope="batch", reward="dice", num_samples=3, temperature=0.7), weighted, True, "labels"),
        ("avg_non_ignore", dict(), dict(class_weight=CLASS_WEIGHT, avg_non_ignore=True), True, "labels"),
        ("loss_weight", dict(decay=0.5), dict(loss_weight=2.0), True, "labels"),
        ("beyond_classes", dict(scope="image"), weighted, True, "beyond"),
        ("reinforce-loo-3", dict(mode="reinforce", num_samples=3, temperature=0.7), weighted, True, "labels"),
        ("reinforce-greedy", dict(mode="reinforce", scope="batch", baseline="greedy", normalize_advantage=True),
         weighted, True, "labels"),
        ("reinforce-batch_mean", dict(mode="reinforce", baseline="batch_mean", num_samples=1), weighted, True,
         "labels"),
        ("reinforce-none", dict(mode="reinforce", scope="dataset", baseline="none", decay=0.5),
         dict(class_weight=CLASS_WEIGHT, avg_non_ignore=True), True, "labels"),
        ("reinforce-beyond_classes", dict(mode="reinforce", scope="batch"), weighted, True, "beyond"),
        ("weighted_ce-mle", dict(mode="weighted_ce", reward="pixel_acc", mle_weight=1.0), None, True, "labels"),
    ]
    for (name, reward_cfg, loss, seg_weight, labels), dtype in itertools.product(variants, DTYPES[:2]):
        cases.append(estimator_case(name, dtype, reward_cfg, loss, seg_weight, labels))
    return cases


def loss_cases() -> list[dict]:
    """IoUMetricLoss of every reward on logits and on label maps; CrossEntropyRewardLoss at
    reward 1 (MMSeg's CrossEntropyLoss), per image, and on K sampled label maps."""
    cases = []
    for reward, dtype in itertools.product(REWARD_NAMES, DTYPES):
        for pred in ("logits0", "full_labels"):
            cases.append(dict(name=f"iou-{reward}-{pred}/{dtype}", kind="iou", dtype=dtype, reward=reward,
                              call=dict(pred=pred, labels="labels0")))
    calls = [
        ("reward_one", dict(class_weight=CLASS_WEIGHT), "full_labels", 1.0, None, None),
        ("reward_one-avg_non_ignore", dict(avg_non_ignore=True), "labels0", 1.0, "weight0", None),
        ("per_image", dict(), "labels0", "image_reward", "weight0", None),
        ("sampled", dict(class_weight=CLASS_WEIGHT), "sampled", "sample_reward", "weight0", "labels0"),
        ("sampled-avg_non_ignore", dict(class_weight=CLASS_WEIGHT, avg_non_ignore=True, loss_weight=0.5),
         "sampled", "sample_reward", None, "labels0"),
    ]
    for (name, loss, labels, reward, weight, truth), dtype in itertools.product(calls, DTYPES):
        cases.append(dict(name=f"ce-{name}/{dtype}", kind="ce", dtype=dtype, loss=loss,
                          call=dict(logits="logits0", labels=labels, reward=reward, weight=weight,
                                    ground_truth=truth)))
    return cases


@pytest.fixture(scope="session")
def matrix_inputs(tmp_path_factory, stack) -> tuple[Path, Path]:
    """(the package root the worker imports, the cases file). The tensors are torch's, and the
    main stack's numbers this interpreter's: each test of the matrix needs the stack."""
    folder = tmp_path_factory.mktemp("torch-matrix")
    root = lay_out_losses(folder / "package", checkout.pristine("1.2.2"))
    cases = folder / "cases.json"
    cases.write_text(json.dumps(dict(classes=CLASSES, ignore_index=IGNORE, tensors=matrix_tensors(),
                                     estimator=estimator_cases(), losses=loss_cases())))
    return root, cases


_RUNS: dict[str, dict] = {}


def run_worker(python: str, matrix_inputs, out: Path) -> dict:
    if python not in _RUNS:
        root, cases = matrix_inputs
        env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
        done = subprocess.run([python, str(WORKER), str(root), str(cases), str(out)], env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        _RUNS[python] = json.loads(out.read_text())
    return _RUNS[python]


@pytest.fixture(scope="session")
def main_numbers(matrix_inputs, tmp_path_factory) -> dict:
    return run_worker(sys.executable, matrix_inputs, tmp_path_factory.mktemp("main") / "out.json")


def stack_python(stack: str) -> str:
    """The interpreter of one stack: missing, a skip outside CI and a failure in CI."""
    folder = os.environ.get("REWARDPATCH_TORCH_MATRIX", "")
    python = Path(folder, stack, "bin", "python")
    if not folder or not python.is_file() or not Path(folder, stack, ".rewardpatch-setup").is_file():
        problem = f"no venv {stack} in REWARDPATCH_TORCH_MATRIX={folder!r}"
        if IN_CI:
            pytest.fail(f"the torch matrix is missing in CI ({problem})")
        pytest.skip(f"{problem}; `make setup-torch-matrix` builds it")
    return str(python)


@pytest.fixture(params=sorted(STACKS))
def stack_numbers(request, matrix_inputs, tmp_path_factory) -> dict:
    python = stack_python(request.param)
    return run_worker(python, matrix_inputs, tmp_path_factory.mktemp(request.param) / "out.json")


def flat_numbers(result: dict) -> dict[str, list[float]]:
    """Every number of one case's result, by its path (steps.0.grad, ...)."""
    out = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else key, item)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for index, item in enumerate(value):
                walk(f"{prefix}.{index}", item)
        else:
            out[prefix] = value

    walk("", result)
    return out


def differences(main: dict, other: dict, dtype: str) -> list[str]:
    """What in `other` is not within the tolerance of `main`, one line each."""
    if "error" in other or "error" in main:
        return [other.get("error") or f"main stack failed: {main['error']}"]
    expected, got = flat_numbers(main), flat_numbers(other)
    if expected.keys() != got.keys():
        return [f"keys differ: {sorted(expected)} vs {sorted(got)}"]
    problems = []
    for key, want in expected.items():
        if not isinstance(want, list):
            if want != got[key]:
                problems.append(f"{key}: {got[key]!r} != {want!r}")
            continue
        if len(want) != len(got[key]):
            problems.append(f"{key}: {len(got[key])} numbers != {len(want)}")
            continue
        for index, (a, b) in enumerate(zip(want, got[key])):
            if not abs(a - b) <= ABSOLUTE[dtype] + RELATIVE[dtype] * abs(a):
                problems.append(f"{key}[{index}]: {b!r} != {a!r}")
                break
    return problems


def torch_version(numbers: dict) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", numbers["torch"])
    assert match is not None, numbers["torch"]
    return int(match.group(1)), int(match.group(2))


def compare_all(main_numbers: dict, stack_numbers: dict, family: str) -> None:
    problems, skipped = [], []
    for name, expected in main_numbers[family].items():
        got = stack_numbers[family][name]
        if "skipped" in got:
            skipped.append(name)
            continue
        problems += [f"{name}: {p}" for p in differences(expected, got, name.rpartition("/")[2])]
    for name in skipped:
        dtype = name.rpartition("/")[2]
        if dtype == "bfloat16" and torch_version(stack_numbers) < BFLOAT16_FROM:
            continue
        # the GPU policy forced on the CPU takes max(1), which old torch lacks for float16 there
        if family == "estimator_gpu_policy" and not stack_numbers["cpu_max"][dtype]:
            continue
        problems.append(f"{name}: skipped on torch {stack_numbers['torch']}")
    assert not problems, "\n".join(problems[:20])


def test_the_estimator_gives_the_main_stacks_numbers(main_numbers, stack_numbers):
    compare_all(main_numbers, stack_numbers, "estimator")


def test_the_estimators_gpu_policy_gives_the_main_stacks_numbers(main_numbers, stack_numbers):
    """The GPU policy (forced on the CPU) on every stack, against the main stack's."""
    compare_all(main_numbers, stack_numbers, "estimator_gpu_policy")


def test_the_gpu_policy_gives_the_cpu_policys_numbers(main_numbers):
    """Within the tolerance of another stack: the GPU policy cuts the local expectation's
    matrix products into other slices than the CPU's, whose sums may end in other bits."""
    cpu_policy = {"estimator": main_numbers["estimator"]}
    compare_all(cpu_policy, {"estimator": main_numbers["estimator_gpu_policy"], "torch": main_numbers["torch"]},
                "estimator")


def test_the_reward_losses_give_the_main_stacks_numbers(main_numbers, stack_numbers):
    compare_all(main_numbers, stack_numbers, "losses")


def test_bfloat16_is_skipped_only_where_the_cpu_has_no_bfloat16_amax(stack_numbers):
    assert stack_numbers["cpu_bfloat16"] == (torch_version(stack_numbers) >= BFLOAT16_FROM)


def test_autocast_can_be_turned_off_for_cpu_and_cuda(stack_numbers):
    assert stack_numbers["autocast_off"] == {"cpu": "ok", "cuda": "ok"}


def test_the_main_stack_runs_every_case(main_numbers):
    failed = {name: result for family in ("estimator", "estimator_gpu_policy", "losses")
              for name, result in main_numbers[family].items()
              if "error" in result or "skipped" in result}
    assert not failed, failed


def changed_python_files(tree: Path) -> list[str]:
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=tree,
                            capture_output=True, text=True, check=True).stdout
    return sorted(line[3:] for line in status.splitlines() if line.endswith(".py"))


@pytest.mark.stack  # the matrix's Python 3.7 venv
@pytest.mark.parametrize("version", ["0.11.0", "0.30.0"])
def test_what_apply_writes_into_a_0x_tree_compiles_on_python_3_7(make_tree, version):
    """MMSeg 0.x runs on Python 3.7: every file apply creates or edits there, the heads it
    copies included (which the matrix cannot import without mmcv), parses on it."""
    python = stack_python("3.7-1.8.1")
    tree = make_tree(version)
    plan_apply(MMSegTree.open(tree)).execute()
    files = changed_python_files(tree)
    assert len(files) >= 20
    parse = "import sys\nfor f in sys.argv[1:]:\n    compile(open(f).read(), f, 'exec')\n"
    done = subprocess.run([python, "-c", parse, *files], cwd=tree, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_makefile_builds_the_stacks_tested_here():
    line = re.search(r"^TORCH_MATRIX := (.*)$", (REPO / "Makefile").read_text(), re.M)
    assert line and sorted(line.group(1).split()) == sorted(STACKS)
