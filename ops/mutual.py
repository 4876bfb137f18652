"""Mutual (modality) learning: the logit exchange and the KL term.

Each rank's loss is CE(own, y) + w * tau^2 * KL(q || p_own), with q = softmax(mean of the OTHER ranks'
logits / tau) (detached) and p_own = softmax(own / tau); batch mean. tau = 1 is the MML paper's setting;
the tau^2 factor keeps the gradient scale independent of tau (Hinton et al.). The KL term is
`ops.distill.kd_loss(own, peers, tau)`, the distillation loss with the peers as the teacher.
"""
import zlib

import torch
import torch.distributed as dist


def peer_mean_logits(own_logits, group, num_peers):
    """Mean of the other ranks' logits: one all_reduce(SUM) of a (B, C) tensor, minus our own part."""
    own = own_logits.detach().float()
    total = own.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
    return (total - own) / (num_peers - 1)


def video_id_hash(video_ids):
    """Stable 63-bit ids of video-id strings, for cheap cross-rank alignment checks."""
    return torch.tensor([zlib.crc32(v.encode()) | (len(v) << 32) for v in video_ids], dtype=torch.int64)


def aligned_keep_mask(planned_ids, loaded_ids, group, group_ranks, step, device=None):
    """The alignment check of every mutual-learning step, and the samples every rank may learn from.

    planned_ids: (B,) hashes of the videos the sampler asked for; loaded_ids: (B,) hashes of the videos
    the dataset returned (another video where a read failure was replaced). One all-gather of 2B int64
    over the ranks of `group`. Raises when the ranks planned different videos (lists or samplers differ:
    the exchange would compare different clips). Returns keep (B,) bool, identical on every rank: False
    where the ranks loaded different videos, so every rank drops that sample from its loss.
    """
    mine = torch.stack([planned_ids, loaded_ids]).to(device or planned_ids.device)        # (2, B)
    gathered = [torch.empty_like(mine) for _ in group_ranks]
    dist.all_gather(gathered, mine, group=group)
    gathered = torch.stack(gathered).cpu()                                                # (M, 2, B)
    for r, g in zip(group_ranks, gathered):
        if not torch.equal(g[0], gathered[0, 0]):
            raise RuntimeError(f"data misaligned at step {step}: rank {r} was asked for other videos than rank "
                               f"{group_ranks[0]} (mutual learning would compare different clips; the "
                               "ranks' lists or sampler settings differ)")
    loaded = gathered[:, 1]                                                               # (M, B)
    return (loaded == loaded[0]).all(0)
