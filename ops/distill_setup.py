"""Distillation set-up of a training run: the teacher weights fixed before training, given
(--teacher_weights) or measured as a softmin of each teacher's cross-entropy over the training set or
over held-out videos (--teacher_weighting softmin_dataset, --teacher_weight_list)."""
import logging

import torch
import torch.distributed as dist

from ops.distill import dataset_softmin_weights, teacher_cross_entropy
from ops.heads import check_heads, split_heads
from ops.dataset import parse_list
from ops.run_data import make_distill_dataset, make_loader
from ops.sampler import ShardSampler
from ops.utils import to_device

logger = logging.getLogger(__name__)


def fixed_teacher_weights(args, ctx, modality, data, loaders, model):
    """--teacher_weights, or for softmin_dataset the softmin of each teacher's CE over the training set
    (or the held-out --teacher_weight_list videos); None when the weighting is per sample."""
    if args.teacher_weights:
        weights = [float(w) for w in args.teacher_weights.split(",")]
        return [weights] * len(args.head_layout) if args.head_layout else weights     # multi-head: per head
    if data.teachers is None or args.teacher_weighting != "softmin_dataset" or args.evaluate:
        return None
    loader, sampler = loaders.train, loaders.train_sampler
    if args.teacher_weight_list:
        held = held_out_records(args.teacher_weight_list, data.train_records, data.specs[modality].data_format,
                                data.spec.heads)
        held_set = make_distill_dataset(args, modality, held, data.specs, model, data.teachers, data.num_class,
                                        eval_transform=True)
        sampler = ShardSampler(len(held_set), num_replicas=ctx.num_replicas, rank=ctx.replica_index,
                               batch_size=loaders.batch, shuffle=False, drop_last=False)
        loader = make_loader(held_set, sampler, loaders.batch, args.workers, ctx.device, args.seed)
        logger.info("softmin_dataset: teacher CE on %d held-out videos of %s (evaluation transforms)",
                    len(held_set), args.teacher_weight_list)
    weights = dataset_teacher_weights(ctx, data.teachers, loader, sampler, head_layout=args.head_layout,
                                      max_steps=args.max_steps_per_epoch, channels_last=args.channels_last,
                                      temperature=args.teacher_weight_temperature)
    logger.info("softmin_dataset teacher weights%s: %s", " per head" if args.head_layout else "",
                [[round(w, 4) for w in ws] for ws in weights] if args.head_layout else [round(w, 4) for w in weights])
    return weights


def held_out_records(list_file, train_records, data_format, heads=None):
    """--teacher_weight_list: the training records (every modality) of the videos the list names."""
    wanted = [r.video_id for r in parse_list(list_file, data_format, option="--teacher_weight_list", heads=heads)]
    first = next(iter(train_records.values()))
    position = {r.video_id: i for i, r in enumerate(first)}
    missing = [v for v in wanted if v not in position]
    if missing:
        raise SystemExit(f"--teacher_weight_list {list_file}: {len(missing)} videos are not in the training "
                         f"list, e.g. {missing[:3]}")
    rows = sorted({position[v] for v in wanted})
    return {m: [records[i] for i in rows] for m, records in train_records.items()}


@torch.no_grad()
def dataset_teacher_weights(ctx, teachers, loader, sampler, *, head_layout, max_steps, channels_last,
                            temperature):
    """softmin_dataset: each teacher's mean CE over one pass of the training data -> softmin weights at
    `temperature`. max_steps: at most this many batches (0: all). Multi-head: one list of weights per
    head, from that head's CE (the paper's code weighs the teachers of each head separately)."""
    heads = check_heads(head_layout) if head_layout else None
    sampler.set_epoch(0)
    loader.dataset.set_epoch(0)
    total = torch.zeros(len(heads or [None]), len(teachers.modalities), dtype=torch.float64)   # (heads, K)
    count = torch.zeros((), dtype=torch.float64)
    limit = max_steps or sampler.num_batches()
    for step, (clips, labels, _) in enumerate(loader):
        if step >= limit:
            break
        logits = teachers(to_device(clips, ctx.device, channels_last)).float()
        labels = labels.to(ctx.device)
        parts = zip(split_heads(logits, heads), split_heads(labels, heads)) if heads else [(logits, labels)]
        total += torch.stack([teacher_cross_entropy(z, y).sum(1) for z, y in parts]).double().cpu()
        count += labels.shape[0]
    if ctx.num_replicas > 1:
        packed = torch.cat([total.flatten(), count.view(1)]).to(ctx.device)
        dist.all_reduce(packed, group=ctx.replica_group)
        total, count = packed[:-1].cpu().view(total.shape), packed[-1].cpu()
    weights = [dataset_softmin_weights((row / count).float(), temperature).tolist()
               for row in total]
    return weights if heads else weights[0]
