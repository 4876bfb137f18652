"""Mutual (modality) learning with real gloo processes on CPU: per-rank tcp commands, torchrun-style env,
3 modalities, same-modality pairs, modalities x replicas, and a killed rank."""
import json
import os
import signal
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from ops.checkpoint import load_checkpoint
from conftest import REPO, launch_ranks, wait_ranks

TINY = ["--arch", "resnet18", "--num_segments", "4", "--input_size", "32", "--batch-size", "8", "-j", "0",
        "--no_progress", "--epochs", "1", "--max_steps_per_epoch", "2", "--check_alignment",
        "--dump_step_logits", "--dist_timeout", "20"]


def launch(data_root, tmp, modalities, world, mode, extra=()):
    argv = [sys.executable, os.path.join(REPO, "main.py"), "toy", modalities, "--data_root", data_root,
            "--root_model", str(tmp / "ckpt"), "--root_log", str(tmp / "log"), *TINY, *extra]
    return launch_ranks(argv, world, tmp, mode, env={"PYTHONUNBUFFERED": "1"})


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
    outs = wait_ranks(launch(tiny_toy, tmp_path, "RGB,Flow", 2, mode))
    check_run(tmp_path, "RGB,Flow")
    assert "ensemble of 2 ranks" in outs[0]


@pytest.mark.slow
def test_rgbdiff_flow_rgb_three_ranks(tiny_toy, tmp_path):
    wait_ranks(launch(tiny_toy, tmp_path, "RGBDiff,Flow,RGB", 3, "tcp"))
    check_run(tmp_path, "RGBDiff,Flow,RGB")


@pytest.mark.slow
@pytest.mark.parametrize("modalities", ["RGB,RGB", "Flow,Flow"])
def test_same_modality_mutual_learning(modalities, tiny_toy, tmp_path):
    wait_ranks(launch(tiny_toy, tmp_path, modalities, 2, "tcp"))
    dumps = check_run(tmp_path, modalities)
    # different initialisations, identical inputs: the two models disagree, so the KL term is active
    assert not torch.allclose(dumps[0][0]["logits"], dumps[1][0]["logits"])
    assert dumps[0][0]["mutual"] > 0


@pytest.mark.slow
def test_two_modalities_two_replicas(tiny_toy, tmp_path):
    wait_ranks(launch(tiny_toy, tmp_path, "RGB,Flow", 4, "env"))
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


def _rows(d):
    return [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]


def _mml_dirs(tmp):
    return [next(p for p in (tmp / "ckpt").iterdir() if p.name.endswith(f"_ML{m}")) for m in range(2)]


@pytest.mark.slow
def test_resume_takes_the_newest_checkpoint_set_every_rank_wrote(tiny_toy, tmp_path):
    extra = ["--epochs", "3"]
    procs = launch(tiny_toy, tmp_path, "RGB,Flow", 2, "tcp", extra=extra)
    for line in procs[0].stdout:            # pre-empt the job early in epoch 2: every rank saves, exits 75
        if "epoch 1: train loss" in line:
            procs[0].send_signal(signal.SIGTERM)
            break
    for p in procs:
        out = p.communicate(timeout=120)[0]
        assert p.returncode == 75, out[-3000:]
    rgb, flow = _mml_dirs(tmp_path)
    stopped = load_checkpoint(str(rgb / "ckpt.pth.tar"))
    assert (stopped["epoch"], stopped["save_seq"]) == (1, 3) and stopped["step_in_epoch"] >= 1
    assert json.loads((rgb / "commit.json").read_text())["save_seq"] == 3
    # Flow died after RGB wrote that save and before its own write: Flow's newest is the end of epoch 1.
    os.replace(flow / "ckpt.prev.pth.tar", flow / "ckpt.pth.tar")
    outs = wait_ranks(launch(tiny_toy, tmp_path, "RGB,Flow", 2, "tcp", extra=extra + ["--resume", "auto"]))
    assert "set aside" in outs[0] and (rgb / "ckpt.uncommitted.pth.tar").is_file()
    for d in (rgb, flow):        # both resumed after epoch 1; every epoch recorded once
        assert [(r["epoch"], r["split"]) for r in _rows(d)] == [(e, s) for e in (1, 2, 3) for s in ("train", "val")]
        assert load_checkpoint(str(d / "ckpt.pth.tar"))["epoch"] == 3
    for epoch in (1, 2):         # the ranks exchanged logits of the same videos after the resume
        a, b = (torch.load(d / f"steps_rank{r}_epoch{epoch}.pt") for r, d in enumerate((rgb, flow)))
        assert [s["video_ids"] for s in a] == [s["video_ids"] for s in b]
    # No common set at all (Flow lost every file): both ranks refuse at start-up, naming each position.
    for name in ("ckpt.pth.tar", "ckpt.prev.pth.tar"):
        os.remove(flow / name)
    procs = launch(tiny_toy, tmp_path, "RGB,Flow", 2, "tcp", extra=extra + ["--resume", "auto"])
    for p in procs:
        out = p.communicate(timeout=120)[0]
        assert p.returncode == 1, out[-3000:]
        assert "no common checkpoint set" in out and "RGB (rank 0): epoch 3 step 0" in out
        assert "Flow (rank 1): no checkpoint" in out
    # A checkpoint that one rank cannot read stops every rank at once, naming it (before: the other rank
    # waited in the position exchange until --dist_timeout).
    (flow / "ckpt.pth.tar").write_bytes(b"not a checkpoint" * 64)
    procs = launch(tiny_toy, tmp_path, "RGB,Flow", 2, "tcp", extra=extra + ["--resume", "auto"])
    for p in procs:
        out = p.communicate(timeout=120)[0]
        assert p.returncode == 1, out[-3000:]
        assert "cannot read its checkpoint" in out and "rank 1: " in out and str(flow / "ckpt.pth.tar") in out
        assert "distributed failure" not in out


def _truncate_frames(folder):
    for name in os.listdir(folder):
        with open(os.path.join(folder, name), "r+b") as f:
            f.truncate(120)


@pytest.mark.slow
def test_read_failure_on_one_rank_drops_the_sample_on_every_rank(tiny_toy, tmp_path):
    import shutil
    data = tmp_path / "data"
    shutil.copytree(tiny_toy, data)
    broken = [f"{i:06d}" for i in range(1, 9)]             # 8 of the 32 training videos, RGB frames only
    for vid in broken:
        _truncate_frames(data / "toy" / "frames" / vid)
    wait_ranks(launch(str(data), tmp_path, "RGB,Flow", 2, "tcp", extra=["--max_steps_per_epoch", "4"]))
    rgb, flow = _mml_dirs(tmp_path)
    a, b = torch.load(rgb / "steps_rank0_epoch0.pt"), torch.load(flow / "steps_rank1_epoch0.pt")
    dropped = 0
    for sa, sb in zip(a, b):
        assert torch.equal(sa["keep"], sb["keep"])            # the same mask on both ranks
        same = torch.tensor([x == y for x, y in zip(sa["video_ids"], sb["video_ids"])])
        assert torch.equal(sa["keep"], same)                  # dropped exactly where the videos differ
        assert not set(sb["video_ids"][i] for i in range(len(same)) if not same[i]) - set(broken)
        for rec in (sa, sb):                                  # the loss covers the kept samples only
            k = rec["keep"]
            assert rec["ce"] == pytest.approx(float(F.cross_entropy(rec["logits"][k], rec["labels"][k])), rel=1e-4)
        dropped += int((~sa["keep"]).sum())
    assert dropped >= 1
    (row_rgb,), (row_flow,) = ([r for r in _rows(d) if r["split"] == "train"] for d in (rgb, flow))
    assert row_rgb["dropped_samples"] == row_flow["dropped_samples"] == dropped
    assert row_rgb["read_failures"] >= dropped and set(row_rgb["failed_videos"]) <= set(broken)
    assert row_flow["read_failures"] == 0
