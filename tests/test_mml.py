"""Mutual (modality) learning with real gloo processes on CPU: per-rank tcp commands, torchrun-style env,
3 modalities, same-modality pairs, modalities x replicas, and a killed rank."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--arch", "resnet18", "--num_segments", "4", "--input_size", "32", "--batch-size", "8", "-j", "0",
        "--no_progress", "--epochs", "1", "--max_steps_per_epoch", "2", "--check_alignment",
        "--dump_step_logits", "--dist_timeout", "20"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(data_root, tmp, modalities, world, mode, extra=()):
    port = free_port()
    procs = []
    for rank in range(world):
        argv = [sys.executable, os.path.join(REPO, "main.py"), "toy", modalities, "--data_root", data_root,
                "--root_model", str(tmp / "ckpt"), "--root_log", str(tmp / "log"), *TINY, *extra]
        env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        if mode == "tcp":
            argv += ["--rank", str(rank), "--world_size", str(world), "--init_method",
                     f"tcp://127.0.0.1:{port}"]
        else:   # what torchrun exports
            env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                       MASTER_PORT=str(port))
        procs.append(subprocess.Popen(argv, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    return procs


def wait_all(procs, timeout=240):
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    for r, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"rank {r} exited {p.returncode}:\n{out[-4000:]}"
    return outs


def check_run(tmp, modalities, replicas=1):
    mods = modalities.split(",")
    M = len(mods)
    dumps = {}
    for rank in range(M * replicas):
        m, j = rank % M, rank // M
        (d,) = [p for p in (tmp / "ckpt").iterdir() if p.name.endswith(f"_ML{m}")]
        assert d.name.startswith(f"TSM_toy_{mods[m]}_")
        for f in ("ckpt.pth.tar", "args.json", "metrics.jsonl", "log.txt"):
            assert (d / f).is_file(), (rank, f)
        assert any((tmp / "log" / d.name).glob("events.*"))
        dumps[rank] = torch.load(d / f"steps_rank{rank}_epoch0.pt")
    for j in range(replicas):
        group = [j * M + i for i in range(M)]
        for step in range(2):
            recs = [dumps[r][step] for r in group]
            assert all(rec["video_ids"] == recs[0]["video_ids"] for rec in recs)       # alignment held
            for i, rec in enumerate(recs):
                peers = torch.stack([recs[k]["logits"] for k in range(M) if k != i]).mean(0)
                assert torch.allclose(rec["peer_logits"], peers, atol=1e-5)
                ce = F.cross_entropy(rec["logits"], rec["labels"])
                q = F.softmax(peers, 1)
                kl = (q * (q.log() - F.log_softmax(rec["logits"], 1))).sum(1).mean()
                assert rec["ce"] == pytest.approx(float(ce), rel=1e-4, abs=1e-5)
                assert rec["mutual"] == pytest.approx(float(kl), rel=1e-3, abs=1e-5)
                assert rec["loss"] == pytest.approx(float(ce + kl), rel=1e-4, abs=1e-5)
    if replicas > 1:   # replicas of one modality saw different shards
        assert dumps[0][0]["video_ids"] != dumps[M][0]["video_ids"]
    return dumps


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["tcp", "env"])
def test_rgb_flow_two_ranks(mode, tiny_toy, tmp_path):
    outs = wait_all(launch(tiny_toy, tmp_path, "RGB,Flow", 2, mode))
    check_run(tmp_path, "RGB,Flow")
    assert "ensemble of 2 ranks" in outs[0]


@pytest.mark.slow
def test_rgbdiff_flow_rgb_three_ranks(tiny_toy, tmp_path):
    wait_all(launch(tiny_toy, tmp_path, "RGBDiff,Flow,RGB", 3, "tcp"))
    check_run(tmp_path, "RGBDiff,Flow,RGB")


@pytest.mark.slow
@pytest.mark.parametrize("modalities", ["RGB,RGB", "Flow,Flow"])
def test_same_modality_mutual_learning(modalities, tiny_toy, tmp_path):
    wait_all(launch(tiny_toy, tmp_path, modalities, 2, "tcp"))
    dumps = check_run(tmp_path, modalities)
    # different initialisations, identical inputs: the two models disagree, so the KL term is active
    assert not torch.allclose(dumps[0][0]["logits"], dumps[1][0]["logits"])
    assert dumps[0][0]["mutual"] > 0


@pytest.mark.slow
def test_two_modalities_two_replicas(tiny_toy, tmp_path):
    wait_all(launch(tiny_toy, tmp_path, "RGB,Flow", 4, "env"))
    check_run(tmp_path, "RGB,Flow", replicas=2)


@pytest.mark.slow
def test_killed_rank_is_named_and_others_exit(tiny_toy, tmp_path):
    procs = launch(tiny_toy, tmp_path, "RGB,Flow,RGB", 3, "tcp",
                   extra=["--max_steps_per_epoch", "1000", "--epochs", "50"])
    # wait until rank 0 trains, then kill rank 1 hard
    lines = []
    deadline = time.time() + 120
    for line in procs[0].stdout:
        lines.append(line)
        if "INFO main: run " in line or time.time() > deadline:
            break
    time.sleep(2.0)
    procs[1].send_signal(signal.SIGKILL)
    start = time.time()
    outs = {}
    for r in (0, 2):
        outs[r] = (procs[r].communicate(timeout=60)[0])
        assert procs[r].returncode == 3, outs[r][-3000:]
    assert time.time() - start < 20 + 15          # within --dist_timeout (+ probe and exit)
    for r in (0, 2):
        assert "rank(s) 1 stopped responding" in outs[r], outs[r][-3000:]
    procs[1].communicate(timeout=10)
