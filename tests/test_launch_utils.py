"""Launch detection, GPU parsing, shard sampling and the mutual-learning KL (pure functions)."""
import math
import os

import pytest
import torch
import torch.nn.functional as F
from conftest import free_port

from ops.distributed import detect_launch, first_slurm_host, gather_by_index, parse_gpus
from ops.distill import kd_loss
from ops.mutual import video_id_hash
from ops.sampler import ShardSampler
from ops.utils import accuracy, confusion_matrix, mean_class_accuracy, topk_correct


def test_parse_gpus_forms():
    assert parse_gpus("0,1") == [0, 1]
    assert parse_gpus("0 2") == [0, 2]
    assert parse_gpus([3]) == [3]
    assert parse_gpus(None) is None and parse_gpus("") is None
    with pytest.raises(ValueError, match="--gpus"):
        parse_gpus("cuda0")


@pytest.mark.parametrize("nodelist,host", [
    ("node7", "node7"), ("gpu[03-05,7],cpu1", "gpu03"), ("a,b", "a"), ("x-[001-004]", "x-001")])
def test_first_slurm_host(nodelist, host):
    assert first_slurm_host(nodelist) == host


def test_detect_launch_precedence():
    env = {"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "SLURM_PROCID": "0", "SLURM_NTASKS": "8"}
    assert detect_launch(rank=0, world_size=2, env=env) == (2, 4, 1, "env://", "torchrun")
    slurm = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "n[10-11]"}
    assert detect_launch(dist_port=1234, env=slurm) == (3, 4, 1, "tcp://n10:1234", "slurm")
    assert detect_launch(rank=1, world_size=3, init_method="tcp://h:9", env={}) == (1, 3, 0, "tcp://h:9",
                                                                                   "per-rank")
    assert detect_launch(env={}) == (0, 1, 0, None, "single")
    with pytest.raises(ValueError, match="--rank"):
        detect_launch(rank=3, world_size=3, env={})


def test_shard_sampler_train_identical_across_modalities_and_disjoint_across_replicas():
    a = ShardSampler(103, num_replicas=2, rank=0, batch_size=4, seed=5)
    b = ShardSampler(103, num_replicas=2, rank=1, batch_size=4, seed=5)
    a2 = ShardSampler(103, num_replicas=2, rank=0, batch_size=4, seed=5)   # another modality, replica 0
    for s in (a, b, a2):
        s.set_epoch(3)
    ia, ib = list(a), list(b)
    assert ia == list(a2)
    assert len(ia) == len(ib) == 12 * 4 and a.num_batches() == 12
    assert not set(ia) & set(ib)
    a.set_epoch(4)
    assert list(a) != ia                       # reshuffled every epoch
    a.set_epoch(3, start_batch=5)
    assert list(a) == ia[20:]                  # exact mid-epoch resume


def test_shard_sampler_validation_counts_every_video_once():
    parts = [list(ShardSampler(10, num_replicas=3, rank=r, batch_size=2, shuffle=False, drop_last=False))
             for r in range(3)]
    assert sorted(sum(parts, [])) == list(range(10))
    assert ShardSampler(10, num_replicas=3, rank=0, batch_size=2, shuffle=False,
                        drop_last=False).num_batches() == 2


def test_mutual_kl_matches_hand_formula():
    own = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    peer = torch.tensor([[0.5, 0.5, 2.0], [1.0, 1.0, 1.0]])
    q = F.softmax(peer, 1)
    p = F.softmax(own, 1)
    expected = (q * (q.log() - p.log())).sum(1).mean()
    assert torch.allclose(kd_loss(own, peer), expected, atol=1e-6)
    t = 2.0
    q2, p2 = F.softmax(peer / t, 1), F.softmax(own / t, 1)
    assert torch.allclose(kd_loss(own, peer, t), t * t * (q2 * (q2.log() - p2.log())).sum(1).mean(), atol=1e-6)
    assert float(kd_loss(own, own + 3.0)) == pytest.approx(0.0, abs=1e-6)   # shift invariance


def test_mutual_kl_gradient_only_through_own_logits():
    own = torch.randn(4, 5, requires_grad=True)
    peer = torch.randn(4, 5, requires_grad=True)
    kd_loss(own, peer).backward()
    assert own.grad is not None and peer.grad is None


def test_video_id_hash_distinguishes_ids():
    h = video_id_hash(["a/1", "a/2", "a/1"])
    assert h[0] == h[2] and h[0] != h[1]


def test_accuracy_and_class_metrics():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.5, 0.4, 0.1]])
    target = torch.tensor([1, 0, 1, 1])
    assert topk_correct(logits, target, (1, 2)) == [2, 4]
    assert accuracy(logits, target, (1,)) == [50.0]
    cm = confusion_matrix(logits.argmax(1).numpy(), target.numpy(), 3)
    assert cm.sum() == 4 and cm[1, 1] == 1 and cm[1, 2] == 1 and cm[1, 0] == 1
    assert mean_class_accuracy(cm) == pytest.approx(100 * (1 + 1 / 3) / 2)
    assert math.isclose(mean_class_accuracy([[0, 0], [0, 0]]), 0.0)


def test_gather_by_index_sorts_and_checks_coverage_in_one_process():
    rows = torch.tensor([[2.0], [0.0], [1.0]])
    got = gather_by_index(torch.tensor([2, 0, 1]), rows, 3)
    assert got.flatten().tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(RuntimeError, match="val: 3 results for 4 videos"):
        gather_by_index(torch.tensor([2, 0, 1]), rows, 4, what="val")
    with pytest.raises(RuntimeError, match="missing or duplicated"):
        gather_by_index(torch.tensor([0, 0, 1]), rows, 3)


def _gather_rank(rank, port, out_dir):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        index = torch.arange(rank, 5, 2)            # rank 0: videos 0, 2, 4; rank 1: videos 1, 3
        rows = torch.stack([index * 10.0, -index.float()], 1)
        result = {"rows": gather_by_index(index, rows, 5, world=2).tolist()}
        try:      # both ranks evaluated video 0: duplicated, and video 1 is missing
            gather_by_index(torch.tensor([0]), torch.zeros(1, 2), 2, world=2, what="dup")
        except RuntimeError as exc:
            result["error"] = str(exc)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_gather_by_index_over_two_gloo_processes(tmp_path):
    torch.multiprocessing.spawn(_gather_rank, args=(free_port(), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert result["rows"] == [[10.0 * i, -float(i)] for i in range(5)]      # every rank, in index order
        assert result["error"] == "dup: 2 results for 2 videos (a shard is missing or duplicated)"
