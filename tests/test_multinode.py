"""Multi-node torchrun on one machine: two agents (`--nnodes 2`, c10d rendezvous on localhost, one worker
each) run DDP and mutual learning to the same weights as a single-node run; a worker killed with SIGKILL is
restarted by its agent (`--max_restarts 1`) and both resume from the last common checkpoint, losing nothing."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO
from ops.checkpoint import load_checkpoint
from ops.distributed import free_port

pytestmark = pytest.mark.slow

TINY = ["--arch", "resnet18", "--num_segments", "4", "--input_size", "32", "--batch-size", "8", "-j", "0",
        "--no_progress", "--max_steps_per_epoch", "4", "--dist_timeout", "60", "--resume", "auto"]
ENV = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _train(data_root, out, modalities, epochs):
    return ["main.py", "toy", modalities, "--data_root", data_root, "--root_model", str(out / "ckpt"),
            "--root_log", str(out / "log"), *TINY, "--epochs", str(epochs)]


def _torchrun(*options):
    return [sys.executable, "-m", "torch.distributed.run", *options]


def single_node(argv, cwd):
    proc = subprocess.run(_torchrun("--standalone", "--nproc_per_node", "2", *argv), cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


def two_nodes(argv, log_dir, max_restarts=0):
    """The two agents a two-node job starts, one per node (here both on localhost) -> their Popen objects."""
    port = free_port()
    agents = []
    for node in range(2):
        log = open(log_dir / f"node{node}.log", "w")
        agents.append(subprocess.Popen(
            _torchrun("--nnodes", "2", "--node_rank", str(node), "--nproc_per_node", "1", "--rdzv_backend", "c10d",
                      "--rdzv_endpoint", f"localhost:{port}", "--rdzv_id", "tsm-test", "--max_restarts",
                      str(max_restarts), *argv), cwd=REPO, env=ENV, stdout=log, stderr=subprocess.STDOUT))
    return agents


def wait_agents(agents, log_dir, timeout=600):
    for node, a in enumerate(agents):
        a.wait(timeout=timeout)
    logs = [(log_dir / f"node{n}.log").read_text(errors="replace") for n in range(2)]
    for node, a in enumerate(agents):
        assert a.returncode == 0, f"node {node} exited {a.returncode}:\n{logs[node][-5000:]}"
    return logs


def states(root):
    return {d.name: load_checkpoint(str(d / "ckpt.pth.tar")) for d in sorted((root / "ckpt").iterdir())}


def assert_same_weights(ref, got):
    assert ref.keys() == got.keys() and ref
    for run in ref:
        a, b = ref[run]["state_dict"], got[run]["state_dict"]
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (run, k)


def test_ddp_on_two_nodes_equals_one_node(tiny_toy, tmp_path):
    single_node(_train(tiny_toy, tmp_path / "one", "RGB", 2) + ["--shift"], tmp_path)
    logs = wait_agents(two_nodes(_train(tiny_toy, tmp_path / "two", "RGB", 2) + ["--shift"], tmp_path), tmp_path)
    assert "launch torchrun, world 2 (1 modalities x 2 replicas)" in "".join(logs)
    assert_same_weights(states(tmp_path / "one"), states(tmp_path / "two"))


def _worker_of(agent):
    """The pid of the training process an agent started (its one child running main.py)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if ppid == agent.pid and b"main.py" in cmd:
            return int(pid)
    return None


def test_mml_on_two_nodes_survives_a_killed_worker_and_equals_one_node(tiny_toy, tmp_path):
    single_node(_train(tiny_toy, tmp_path / "one", "RGB,Flow", 3), tmp_path)
    agents = two_nodes(_train(tiny_toy, tmp_path / "two", "RGB,Flow", 3), tmp_path, max_restarts=1)
    deadline = time.monotonic() + 300
    while "epoch 1: train loss" not in (tmp_path / "node1.log").read_text(errors="replace"):
        assert time.monotonic() < deadline and agents[1].poll() is None, (tmp_path / "node1.log").read_text()
        time.sleep(0.2)
    worker = _worker_of(agents[1])
    assert worker is not None
    os.kill(worker, signal.SIGKILL)                  # node 1's worker dies in epoch 2
    logs = wait_agents(agents, tmp_path)
    assert "failed (exitcode: -9)" in logs[1]         # the agent saw it die and restarted both workers
    assert logs[0].count("launch torchrun, world 2 (2 modalities x 1 replicas)") == 2
    assert "resumed from" in logs[0] and "resumed from" in logs[1]
    one, two = states(tmp_path / "one"), states(tmp_path / "two")
    assert all(c["epoch"] == 3 for c in two.values())
    assert_same_weights(one, two)
