"""The reward loss under DistributedDataParallel: two CPU processes, torchrun, gloo; the
estimator under its CPU policy and under its GPU policy (forced on the CPU)."""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).parent / "workers" / "ddp_reward_training.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module", params=["cpu", "gpu"])
def report(patched_tree, tmp_path_factory, request):
    out = tmp_path_factory.mktemp("ddp") / "result.json"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={free_port()}", str(WORKER), str(patched_tree), str(out), request.param,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("scope", ["image", "batch", "dataset"])
def test_pooled_counts_equal_one_process_on_the_concatenated_batch(report, scope):
    assert report["world_size"] == 2
    assert all(report["pooling"][scope]["counts_equal"])


@pytest.mark.parametrize("scope", ["image", "batch", "dataset"])
def test_ddp_gradients_equal_one_process_on_the_concatenated_batch(report, scope):
    pooling = report["pooling"][scope]
    for difference, norm in zip(pooling["max_grad_difference"], pooling["grad_norm"]):
        assert norm > 0
        assert difference <= 1e-5 * norm


def test_a_reward_head_trains_under_ddp_with_two_cpu_processes(report):
    assert all(math.isfinite(v) for losses in report["losses"] for v in losses)
    assert report["parameters_agree"] and report["moved"]


def test_the_dataset_scope_history_is_the_same_on_every_rank_after_every_step(report):
    # the default reward_cfg's scope='dataset': its float64 buffer survives DDP's buffer
    # broadcast, and each step's update, from all-reduced counts, agrees across ranks
    assert report["history_dtype"] == "torch.float64"
    assert report["history_agrees"] and report["history_grows"]
