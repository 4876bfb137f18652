"""Single-modality DistributedDataParallel with 2 gloo processes: torchrun-style env and per-rank tcp."""
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, free_port, launch_ranks, wait_ranks

TINY = ["--arch", "resnet18", "--num_segments", "4", "--input_size", "32", "--batch-size", "8", "-j", "0",
        "--no_progress", "--epochs", "1", "--max_steps_per_epoch", "2", "--shift", "--seed", "5"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["env", "tcp"])
def test_ddp_two_ranks_matches_single_process_validation(mode, tiny_toy, run_cli, tmp_path):
    argv = [sys.executable, os.path.join(REPO, "main.py"), "toy", "RGB", "--data_root", tiny_toy,
            "--root_model", str(tmp_path / "ckpt"), "--root_log", str(tmp_path / "log"), *TINY]
    wait_ranks(launch_ranks(argv, 2, tmp_path, mode), 300)
    (d,) = list((tmp_path / "ckpt").iterdir())
    args = json.loads((d / "args.json").read_text())
    assert args["world_size"] == 2 and args["per_rank_batch"] == 4
    assert args["launch"] == ("torchrun" if mode == "env" else "per-rank")
    val = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if '"val"' in line]
    # Distributed validation counts each of the 16 videos once: a single process evaluating the same
    # checkpoint gets exactly the same numbers.
    single = run_cli(["main.py", "toy", "RGB", "--data_root", tiny_toy, "--root_model", str(tmp_path / "eval"),
                      "--root_log", str(tmp_path / "evlog"), *TINY, "-e", "--resume",
                      str(d / "ckpt.pth.tar")], cwd=tmp_path).stderr
    line = [ln for ln in single.splitlines() if "validation: top-1" in ln][0]
    top1 = float(line.split("top-1")[1].split()[0])
    assert top1 == pytest.approx(val[0]["top1"], abs=1e-6)
    assert val[0]["top1"] * 16 / 100 == pytest.approx(round(val[0]["top1"] * 16 / 100), abs=1e-6)


_EXIT_AFTER_CLEANUP = """
import sys, torch, torch.distributed as dist
import ops.distributed as D
D.HEARTBEAT_S = 0.0005          # the heartbeat thread is almost always inside a TCPStore call
ctx = D.setup_distributed(rank=int(sys.argv[1]), world_size=2, init_method=sys.argv[2], device="cpu",
                          timeout_s=60)
t = torch.ones(1)
dist.all_reduce(t)
assert t.item() == 2.0
D.cleanup()
"""


@pytest.mark.slow
def test_processes_exit_cleanly_after_cleanup_with_a_busy_heartbeat(tmp_path):
    # Regression: a heartbeat thread left inside TCPStore.set at interpreter exit aborted about half of
    # these processes ("terminate called without an active exception", exit -6); cleanup() now joins it.
    script = tmp_path / "exit.py"
    script.write_text(_EXIT_AFTER_CLEANUP)
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    for _ in range(4):
        init = f"tcp://127.0.0.1:{free_port()}"
        procs = [subprocess.Popen([sys.executable, str(script), str(r), init], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for r in range(2)]
        for r, p in enumerate(procs):
            out = p.communicate(timeout=120)[0]
            assert p.returncode == 0, f"rank {r} exited {p.returncode}:\n{out[-2000:]}"


@pytest.mark.slow
def test_a_rank_whose_peers_never_start_names_them_within_the_timeout(tiny_toy, tmp_path):
    # A lone rank 0 waits for rank 1; a lone rank 1 cannot reach rank 0's store. Both must name what is
    # missing and exit with the lost-rank code (3) after about --dist_timeout, not later.
    timeout = 8
    base = [sys.executable, os.path.join(REPO, "main.py"), "toy", "RGB", "--data_root", tiny_toy,
            "--root_model", str(tmp_path / "ckpt"), "--root_log", str(tmp_path / "log"), *TINY,
            "--world_size", "2", "--dist_timeout", str(timeout)]
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    procs = {rank: subprocess.Popen(base + ["--rank", str(rank), "--init_method", f"tcp://127.0.0.1:{free_port()}"],
                                    cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True) for rank in (0, 1)}
    outs = {rank: p.communicate(timeout=120)[0] for rank, p in procs.items()}
    for rank, p in procs.items():
        assert p.returncode == 3, outs[rank][-3000:]
    assert "rank 0: distributed failure: rank(s) 1 of 2 did not join the rendezvous" in outs[0]
    assert f"within {timeout} s (--dist_timeout)" in outs[0]
    assert "rank 1: distributed failure: rank 1 could not reach the rendezvous store" in outs[1]
    assert "rank 0 has not started" in outs[1]
