"""Mutual (modality) learning: the logit exchange and the KL term.

Each rank's loss is CE(own, y) + w * tau^2 * KL(q || p_own), with q = softmax(mean of the OTHER ranks'
logits / tau) (detached) and p_own = softmax(own / tau); batch mean. tau = 1 is the MML paper's setting;
the tau^2 factor keeps the gradient scale independent of tau (Hinton et al.).
"""
import zlib

import torch
import torch.distributed as dist
import torch.nn.functional as F


def peer_mean_logits(own_logits, group, num_peers):
    """Mean of the other ranks' logits: one all_reduce(SUM) of a (B, C) tensor, minus our own part."""
    own = own_logits.detach().float()
    total = own.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
    return (total - own) / (num_peers - 1)


def mutual_kl(own_logits, peer_logits, temperature=1.0):
    """tau^2 * KL(softmax(peer/tau) || softmax(own/tau)), summed over classes, mean over the batch (fp32)."""
    t = float(temperature)
    log_p = F.log_softmax(own_logits.float() / t, dim=1)
    log_q = F.log_softmax(peer_logits.detach().float() / t, dim=1)
    kl = F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)
    return kl * (t * t)


def video_id_hash(video_ids):
    """Stable 63-bit ids of video-id strings, for cheap cross-rank alignment checks."""
    return torch.tensor([zlib.crc32(v.encode()) | (len(v) << 32) for v in video_ids], dtype=torch.int64)


def check_alignment(hashes, group, group_ranks, step):
    """All-gather this batch's video-id hashes; raise naming the first rank that disagrees with rank 0."""
    size = len(group_ranks)
    gathered = [torch.empty_like(hashes) for _ in range(size)]
    dist.all_gather(gathered, hashes, group=group)
    for r, h in zip(group_ranks, gathered):
        if not torch.equal(h, gathered[0]):
            raise RuntimeError(f"data misaligned at step {step}: rank {r} loaded different videos than rank "
                               f"{group_ranks[0]} (mutual learning would compare different clips)")
