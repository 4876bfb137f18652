"""The model side of a training run: this rank's TSN built from the options (fine-tuned from --tune_from),
its optimiser and parameter groups, the learning-rate schedule, and the module the step calls (SyncBatchNorm,
DDP over the replicas of one modality, torch.compile).

These functions take the parsed options `args` of main.py: the model alone reads some twenty-five of them.
"""
import contextlib
import logging

import torch

from archs import backbone_traits
from ops.checkpoint import load_checkpoint, load_weights
from ops.lr_schedule import LRSchedule
from ops.models import TSN, to_channels_last
from ops.temporal_modules import TemporalConfig
from ops.utils import named_input_errors

logger = logging.getLogger(__name__)


def build_model_and_optimizer(args, ctx, modality, num_class, fine_tune=True):
    """This rank's model on its device (fine-tuned from --tune_from unless resuming) and its optimiser.

    Fills in --fc_lr5 auto: args.fc_lr5 becomes 'on' or 'off' (what args.json and the checkpoints record)
    from the --tune_from checkpoint, which is read here once, for its weights and its recorded arguments."""
    tuned = None
    if args.tune_from and fine_tune:
        with named_input_errors(RuntimeError):
            tuned = load_checkpoint(args.tune_from, require=("state_dict",))
    elif args.tune_from and args.fc_lr5 == "auto" and args.optimizer == "sgd":
        # Resuming a fine-tuned run: the same head groups as its start (the optimiser state holds them).
        # A file that cannot be read any more records no dataset.
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            tuned = load_checkpoint(args.tune_from)
    args.fc_lr5 = head_lr_mode(args.fc_lr5, args.optimizer, args.dataset,
                               tuned.get("args") if isinstance(tuned, dict) else None)
    # Each modality rank gets its own initialisation (RGB,RGB mutual learning needs two different
    # models); the replicas of one modality share it (DDP also broadcasts rank 0's weights).
    torch.manual_seed(args.seed + ctx.modality_index)
    model = build_model(args, modality, num_class)
    if args.tune_from and fine_tune:
        report = load_weights(model, tuned["state_dict"], src_config=tuned.get("config"))
        logger.info("fine-tuning from %s: %s", args.tune_from, report)
    model.to(ctx.device)
    if args.channels_last:
        to_channels_last(model)          # 4-D weights only: Conv3d (MSN, non-local) stays as it is
    return model, build_optimizer(args, model)        # after any first-conv conversion


def head_lr_mode(fc_lr5, optimizer, dataset, tuned_args):
    """--fc_lr5 with 'auto' decided by TSM's rule: the x5 / x10 head with SGD (with AdamW the step does not
    scale with the gradient), except when fine-tuning a checkpoint trained on this same dataset, which
    its recorded arguments tell (tuned_args: the --tune_from checkpoint's 'args'; TSM read the file name)."""
    if fc_lr5 != "auto":
        return fc_lr5
    same_dataset = isinstance(tuned_args, dict) and tuned_args.get("dataset") == dataset
    return "on" if optimizer == "sgd" and not same_dataset else "off"


def temporal_config(args):
    """The TemporalConfig of the model that the training arguments describe."""
    return TemporalConfig(module=args.temporal_module, shift_div=args.shift_div, shift_place=args.shift_place,
                          shift_direction=args.shift_direction, temporal_pool=args.temporal_pool,
                          non_local=args.non_local, tin_shift_div=args.tin_shift_div, motion_init=args.motion_init)


def build_model(args, modality, num_class):
    """This rank's TSN as the options describe it (initial weights: --pretrain; no checkpoint loaded)."""
    if modality == "Layout":
        # The layout model (--layout_arch) reads boxes: the image backbone's options do not apply.
        return TSN(num_class=num_class, num_segments=args.num_segments, modality=modality,
                   base_model=args.layout_arch, dropout=args.dropout, partial_bn=False, pretrain="none")
    kwargs = dict(
        num_class=num_class, num_segments=args.num_segments, modality=modality, base_model=args.arch,
        new_length=args.new_length, consensus_type=args.consensus_type, dropout=args.dropout,
        img_feature_dim=args.img_feature_dim, partial_bn=not args.no_partialbn, pretrain=args.pretrain,
        temporal=temporal_config(args), fc_lr5=args.fc_lr5 == "on", first_conv_lr=args.first_conv_lr,
        heads=args.head_layout)
    if args.input_size:
        kwargs["input_size"] = args.input_size
    # The backbone's own options (ILA's); the registry entry says which this backbone takes.
    offered = dict(clip_weights=args.clip_weights, trust_jit_checkpoint=args.trust_jit_checkpoint,
                   finetune_backbone=args.finetune_backbone, pair_net=args.ila_pair_net, head=args.ila_head)
    if args.ila_class_names is not None:      # ILA's text head: the names it encodes (opts._text_class_names)
        offered["class_names"] = list(args.ila_class_names)
    takes = backbone_traits(args.arch).kwargs
    kwargs["backbone_kwargs"] = {k: v for k, v in offered.items() if k in takes}
    return TSN(**kwargs)


def build_optimizer(args, model):
    policies = model.get_optim_policies(lr=args.lr, weight_decay=args.weight_decay)
    for group in policies:
        group.setdefault("lr_mult", 1)
        group.setdefault("decay_mult", 1)
    policies = [g for g in policies if g["params"]]
    if args.param_groups == "uniform":
        policies = uniform_param_groups(policies)
    if args.optimizer == "sgd":
        return torch.optim.SGD(policies, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    if args.optimizer == "adamw":
        return torch.optim.AdamW(policies, lr=args.lr, weight_decay=args.weight_decay, betas=tuple(args.adam_betas))
    raise ValueError(f"unknown optimizer {args.optimizer!r}; choose from sgd, adamw")


def uniform_param_groups(policies):
    """--param_groups uniform: one group, lr x1 and weight decay x1 for every trained parameter.

    What TDN's and MSN's main.py train with: they build SGD(policies, lr) from TSN's groups, but their
    scheduler sets one lr for all groups and lr_mult / decay_mult are never applied. Parameters the
    policies leave out (frozen BatchNorms of partial BN) stay out."""
    params = [p for g in policies for p in g["params"]]
    return [{"params": params, "lr_mult": 1, "decay_mult": 1, "name": "uniform"}]


def lr_schedule(args):
    """The run's learning-rate schedule (ops/lr_schedule.py), built once from the options."""
    return LRSchedule(base_lr=args.lr, epochs=args.epochs, lr_type=args.lr_type, lr_steps=args.lr_steps or (),
                      warmup_epochs=args.warmup_epochs, warmup_start_ratio=args.warmup_start_ratio,
                      update=args.lr_update, min_lr_ratio=args.min_lr_ratio, decay_from=args.decay_from)


def wrap_distributed(args, ctx, model):
    """The module the step calls: SyncBatchNorm, DDP over the replicas of this modality, torch.compile."""
    train_model = model
    if args.sync_bn and ctx.num_replicas > 1:
        train_model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(train_model, ctx.replica_group)
    if ctx.num_replicas > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        train_model = DDP(train_model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                          process_group=ctx.replica_group, broadcast_buffers=False)
    if args.compile:
        train_model = torch.compile(train_model)
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return train_model
