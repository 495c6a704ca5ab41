"""The reward loss under DistributedDataParallel: two CPU processes, torchrun, gloo."""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).parent / "workers" / "ddp_reward_training.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_reward_head_trains_under_ddp_with_two_cpu_processes(patched_tree, tmp_path):
    out = tmp_path / "result.json"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={free_port()}", str(WORKER), str(patched_tree), str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["world_size"] == 2
    assert all(math.isfinite(v) for losses in report["losses"] for v in losses)
    assert report["losses"][0] != report["losses"][1]  # each rank its own data
    assert report["parameters_agree"] and report["moved"]
