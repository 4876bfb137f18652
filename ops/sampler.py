"""Samplers that every rank computes identically, so no rank ever needs to be told what to load.

`ShardSampler` gives replica j of R the j-th shard of one permutation drawn from (seed, epoch): every
modality rank of mutual learning holding replica j therefore loads the same videos in the same order,
and the number of batches per epoch is known to every process from the list length alone.
"""
import torch
from torch.utils.data import Sampler


class ShardSampler(Sampler):
    """Shuffled (or sequential), sharded, optionally batch-truncated indices.

    shuffle=True, drop_last=True (training): permutation of range(n) from seed + epoch; replica j takes
    positions j, j+R, ...; the shard is cut to a whole number of batches, equal on every replica.
    shuffle=False, drop_last=False (validation): replica j takes j, j+R, ... with no padding, so the
    union over replicas counts every video exactly once.
    `start_batch` skips the first batches of the epoch (exact mid-epoch resume).
    """

    def __init__(self, num_samples, *, num_replicas=1, rank=0, batch_size=1, shuffle=True,
                 drop_last=True, seed=0):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"replica rank {rank} not in [0, {num_replicas})")
        self.n = num_samples
        self.R = num_replicas
        self.rank = rank
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch, start_batch=0):
        self.epoch = epoch
        self.start_batch = start_batch

    def num_batches(self):
        per = self.n // self.R if self.drop_last else len(range(self.rank, self.n, self.R))
        return per // self.batch_size if self.drop_last else -(-per // self.batch_size)

    def _indices(self):
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.drop_last:
            order = order[:(self.n // self.R) * self.R]
            shard = order[self.rank::self.R]
            return shard[:self.num_batches() * self.batch_size]
        return order[self.rank::self.R]

    def __iter__(self):
        return iter(self._indices()[self.start_batch * self.batch_size:])

    def __len__(self):
        return max(0, len(self._indices()) - self.start_batch * self.batch_size)
