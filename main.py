"""Train TSN / TSM / TIN / MSN / ILA models; a comma list of modalities runs mutual modality learning.

    python main.py toy RGB --shift                                   # quickstart (CPU, minutes)
    python main.py somethingv2 RGB --arch resnet50 --shift --npb ...  # TSM recipe
    python main.py somethingv2 RGBDiff,Flow,RGB --rank 0 --world_size 3 --init_method tcp://h:p  # MML
    torchrun --nproc_per_node=3 main.py somethingv2 RGBDiff,Flow,RGB ...
"""
import contextlib
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader

from archs import backbone_traits
from opts import dataset_spec, get_train_parser, parse_args, temporal_config
from ops import distributed as D
from ops.checkpoint import (check_shift_direction, load_checkpoint, load_weights, remove_stale_temp_files,
                            save_checkpoint, save_checkpoint_keep_previous, strip_prefixes)
from ops.dataset import (MultiModalDataSet, VideoDataSet, aligned_frame_counts, check_list_counts, pair_records,
                         parse_list, worker_init_fn)
from ops.dataset_config import data_record, ensure_builtin_data
from ops.distill import (TeacherScores, combine_teachers, dataset_softmin_weights, distill_loss, kd_loss,
                          load_teachers, teacher_cross_entropy)
from ops.heads import check_heads, check_same_heads, correct_counts, per_head, split_heads
from ops.layout_dataset import LayoutDataSet
from ops.lr_schedule import LRSchedule, set_lr
from ops.mixing import mix_batch
from ops.modality import frames_per_segment
from ops.models import TSN, to_channels_last
from ops.mutual import aligned_keep_mask, peer_mean_logits, video_id_hash
from ops.readers import ReaderConfig
from ops.rundir import RunDirError, check_run_config, lock_run_dir, release_run_dirs
from ops.sampler import ShardSampler
from ops.sampling import SamplingConfig
from ops.transforms import RGB_SCALES, build_transform, parse_flip_pairs
from ops.utils import (AMP_DTYPES, AverageMeter, atomic_open, progress_bar, rng_state, seed_everything,
                       set_rng_state, to_device)
from ops.video_io import backend_info

logger = logging.getLogger("main")

EXIT_PREEMPTED = 75          # EX_TEMPFAIL: a checkpoint was written on SIGTERM/SIGUSR1; requeue the job
EXIT_PEER_LOST = 3           # another rank died or hung
CKPT, PREV_CKPT, UNCOMMITTED_CKPT = "ckpt.pth.tar", "ckpt.prev.pth.tar", "ckpt.uncommitted.pth.tar"
COMMIT_MARKER = "commit.json"


class RunState:
    """Mutable bookkeeping of one run (kept out of `args`, which stays as parsed)."""

    def __init__(self):
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.best_prec1 = 0.0
        self.stop_signal = None
        self.val_pending = False      # the checkpoint was written before its epoch's validation
        self.saves = 0                # checkpoints written so far (the position that ranks compare)
        self.committed_saves = 0      # saves of the last checkpoint set that every rank wrote (MML)
        self.meters = {}              # running sums of the epoch in progress: name -> [sum, count]
        self.failures = None          # read failures of the epoch in progress (dataset.failure_state())


# ----------------------------------------------------------------------------------------------------
# setup
# ----------------------------------------------------------------------------------------------------

def setup_logging(run_dir, is_main):
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.INFO if is_main else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    root.addHandler(console)
    if run_dir is not None:
        fh = logging.FileHandler(os.path.join(run_dir, "log.txt"))
        fh.setFormatter(fmt)
        root.addHandler(fh)


def build_model(args, modality, num_class):
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


def build_records(split, modalities, specs):
    """Per-modality records of one split, paired by video id across the modalities of the run.
    specs: modality -> DatasetInfo (resolved once per run)."""
    option = "--train_list" if split == "train" else "--val_list"
    lists = {}
    for m in dict.fromkeys(modalities):
        spec = specs[m]
        path = spec.train_list if split == "train" else spec.val_list
        lists[m] = parse_list(path, spec.data_format, option=option, heads=spec.heads)
        check_counts_on_disk(lists[m], spec, split, path, option)
    if len(lists) == 1:
        return {modalities[0]: next(iter(lists.values()))}
    return pair_records(lists)


def check_counts_on_disk(records, spec, split, path, option):
    """A frames list whose counts do not match its modality's files (e.g. the RGB list given to a Flow
    rank) stops the run at start-up, naming the list."""
    if spec.data_format != "frames":
        return
    try:
        check_list_counts(records, root=spec.root_path if split == "train" else spec.val_root_path,
                          modality=spec.modality, image_tmpl=spec.image_tmpl, start_index=spec.start_index,
                          list_file=path, option=option)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None


def claim_run_dir(args, run_dir):
    """Lock the run directory and refuse one that holds another configuration (ops/rundir.py)."""
    names = {a.dest: next((o for o in a.option_strings if o.startswith("--")), a.dest)
             for a in get_train_parser()._actions if a.option_strings}
    try:
        lock_run_dir(run_dir)
        check_run_config(run_dir, plain_args(args), names)
    except RunDirError as exc:
        raise SystemExit(f"error: {exc}") from None


def loader_output(args):
    """What the loaders return: uint8 clips (normalised by the model on its device), or normalised float
    clips when the batch is mixed (mixup/cutmix blend normalised clips) or erased (random erasing fills
    normalised zeros, which no uint8 value represents)."""
    return "float" if (args.mixup or args.cutmix or args.random_erasing) else "uint8"


def make_dataset(args, modality, split, records, spec, model, aligned, num_class, all_modalities,
                 position=0, norm=None, new_length=None, eval_transform=False):
    """One modality's dataset. `aligned`: every modality of the run shares temporal offsets (MML rule)
    and crop geometry (RGB scales for all, as the MML fork). norm/new_length default to `model`'s.
    eval_transform: videos of `split` read with evaluation sampling and transforms (held-out data)."""
    train = split == "train" and not eval_transform
    scales = RGB_SCALES if (aligned and len(set(all_modalities)) > 1) else None
    # Layout clips are boxes of the whole frame: no views to crop (ops/layout.py)
    transform = None if modality == "Layout" else build_transform(
        train, modality, input_size=model.crop_size, scale_size=args.scale_size or model.scale_size,
        flip=args.hflip, scales=scales, flip_pairs=parse_flip_pairs(args.flip_label_pairs),
        color_jitter=args.color_jitter, grayscale=args.grayscale, random_erasing=args.random_erasing,
        **(norm or model.normalization()), output=loader_output(args))
    aligned_frames = aligned_lengths = None
    if aligned and train and args.num_modalities > 1:
        # one column per modality rank (RGB,RGB has two columns over the same records)
        aligned_frames = aligned_frame_counts({i: records[m] for i, m in enumerate(all_modalities)})
        aligned_lengths = [frames_per_segment(m, args.new_length) for m in all_modalities]
    on_train = split == "train"
    dataset_class = LayoutDataSet if modality == "Layout" else VideoDataSet
    sampling = SamplingConfig(num_segments=args.num_segments, mode="train" if train else "val",
                              dense=args.dense_sample, random_sample=args.random_sample and train,
                              dense_length=args.dense_length, dense_number=args.dense_number)
    reading = ReaderConfig(data_format=spec.data_format, image_tmpl=spec.image_tmpl, start_index=spec.start_index,
                           video_backend=args.video_backend, autorotate=args.autorotate, audio=spec.audio,
                           strict=args.strict_data or not train)
    return dataset_class(
        spec.root_path if on_train else spec.val_root_path, spec.train_list if on_train else spec.val_list,
        new_length=new_length or args.new_length or model.new_length, modality=modality, transform=transform,
        sampling=sampling, reading=reading, seed=args.seed, num_class=num_class, records=records[modality],
        aligned_num_frames=aligned_frames, aligned_new_lengths=aligned_lengths, aligned_position=position,
        list_option="--train_list" if on_train else "--val_list")


def make_distill_dataset(args, modality, records, specs, model, teachers, num_class, eval_transform=False):
    """Student modality + every teacher modality of each sample, with identical views (MultiModalDataSet).
    eval_transform: evaluation sampling and transforms (the held-out set of --teacher_weight_list)."""
    norms = {modality: (model.normalization(), None)}
    for teacher, m, cfg in zip(teachers.teachers, teachers.modalities, teachers.configs):
        if cfg["num_segments"] != args.num_segments:
            raise SystemExit(f"a {m} teacher has {cfg['num_segments']} segments but the student has "
                             f"{args.num_segments}: distillation gives both the same frames")
        try:
            check_same_heads(args.head_layout, cfg.get("heads"), "the student", f"the {m} teacher")
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
        if cfg["num_class"] != num_class:
            raise SystemExit(f"a {m} teacher predicts {cfg['num_class']} classes, the dataset has {num_class}")
        if m == modality and teacher.frames_per_segment != model.frames_per_segment:
            raise SystemExit(f"an {m} teacher reads {teacher.frames_per_segment} frames per segment but the "
                             f"student reads {model.frames_per_segment}: they share the {m} input")
        norms.setdefault(m, (teacher.normalization(), cfg.get("new_length")))
    mods = list(norms)
    parts = {m: make_dataset(args, m, "train", records, specs[m], model, True, num_class, mods,
                             norm=norms[m][0], new_length=norms[m][1], eval_transform=eval_transform)
             for m in mods}
    return MultiModalDataSet(parts, seed=args.seed)


def make_loader(dataset, sampler, batch_size, workers, device, seed):
    on_gpu = device.type == "cuda"
    # Its own generator: creating an iterator must not consume the global RNG (exact resume).
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, generator=generator,
                      pin_memory=on_gpu, drop_last=False, worker_init_fn=worker_init_fn,
                      persistent_workers=workers > 0 and on_gpu,
                      prefetch_factor=4 if (workers > 0 and on_gpu) else None)


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


# ----------------------------------------------------------------------------------------------------
# training and validation
# ----------------------------------------------------------------------------------------------------

class Trainer:
    """One rank's training: the step, the epoch loop, exact validation, checkpoints and their restore.

    model: what the step calls (the TSN, or it wrapped by DDP / torch.compile); raw_model: the TSN itself
    (state dict, config, partial BN, auxiliary loss). schedule: ops.lr_schedule.LRSchedule. state: the run's
    RunState (the signal handlers already hold it). teachers (ops.distill.load_teachers) or teacher_scores
    (TeacherScores) turn the loss into distillation, with fixed_teacher_weights for the 'fixed' and
    'softmin_dataset' weightings. data_config: ops.dataset_config.data_record of this rank's data, saved in
    every checkpoint so that evaluation finds it. run_dir None: nothing is written (benchmarks).
    Everything else comes from the parsed options `args`.
    """

    def __init__(self, args, ctx, modality, model, optimizer, run_dir, *, raw_model, schedule, state=None,
                 teachers=None, teacher_scores=None, fixed_teacher_weights=None, data_config=None):
        self.args = args
        self.ctx = ctx
        self.modality = modality
        self.model = model
        self.raw_model = raw_model
        self.optimizer = optimizer
        self.schedule = schedule
        self.run_dir = run_dir
        self.state = state or RunState()
        self.dtype = AMP_DTYPES[args.amp]
        self.scaler = torch.amp.GradScaler("cuda") if args.amp == "fp16" else None
        self.teachers = teachers
        self.teacher_scores = teacher_scores
        self.fixed_teacher_weights = fixed_teacher_weights
        self.data_config = data_config
        # Multi-head labels (ops/heads.py), as the multimodal-distillation code: CE = sum_h w_h CE_h / H and
        # every KL term = sum_h KL_h / H, over the H heads of --head_weights > 0. (benchmark.py --plain steps
        # a bare torchvision model: single-label.)
        self.heads = getattr(raw_model, "heads", None)
        self.cross_entropy = per_head(F.cross_entropy, self.heads, args.head_weights) if self.heads \
            else F.cross_entropy
        self.kd_loss = per_head(kd_loss, self.heads, [float(w > 0) for w in args.head_weights]) if self.heads \
            else kd_loss
        self.writes = ctx.replica_index == 0 and run_dir is not None     # one writer per modality
        self.mutual_ranks = [ctx.replica_index * ctx.num_modalities + i for i in range(ctx.num_modalities)]

    # -- checkpoints -------------------------------------------------------------------------------
    def checkpoint_state(self):
        return {
            "epoch": self.state.epoch, "step_in_epoch": self.state.step_in_epoch,
            "global_step": self.state.global_step, "arch": self.args.arch,
            "state_dict": self.raw_model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "best_prec1": self.state.best_prec1, "config": self.raw_model.config(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": rng_state(), "args": plain_args(self.args), "modality": self.modality,
            "data": self.data_config,
            "val_pending": self.state.val_pending, "save_seq": self.state.saves,
            "committed_seq": self.state.committed_saves,
            "meters": {k: [float(v[0]), int(v[1])] for k, v in self.state.meters.items()}
            if self.state.step_in_epoch else {},
            "read_failures": self.state.failures if self.state.step_in_epoch else None,
        }

    def save(self, is_best=False):
        """Every rank calls this. Mutual learning: each writer keeps its previous file, and the set is
        committed (commit.json) only after a barrier proves that every modality rank wrote its part."""
        mutual = self.ctx.num_modalities > 1
        self.state.saves += 1
        if self.writes:
            state = self.checkpoint_state()
            path = os.path.join(self.run_dir, CKPT)
            try:
                if mutual:
                    save_checkpoint_keep_previous(state, path, os.path.join(self.run_dir, PREV_CKPT))
                else:
                    save_checkpoint(state, path)
                if is_best:
                    save_checkpoint(state, os.path.join(self.run_dir, "ckpt.best.pth.tar"))
            except OSError as exc:   # disk full, lost mount: stop naming the file; the previous one is intact
                raise SystemExit(f"error: {exc}; free space and rerun with --resume auto") from None
        if mutual:
            dist.barrier()
            self.state.committed_saves = self.state.saves
            if self.writes:
                write_json_atomic(os.path.join(self.run_dir, COMMIT_MARKER), {
                    "save_seq": self.state.saves, "global_step": self.state.global_step,
                    "epoch": self.state.epoch, "val_pending": self.state.val_pending,
                    "step_in_epoch": self.state.step_in_epoch, "world_size": self.ctx.world_size})

    def restore(self, ckpt):
        self.raw_model.load_state_dict(strip_prefixes(ckpt["state_dict"]))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state.epoch = int(ckpt["epoch"])
        self.state.step_in_epoch = int(ckpt.get("step_in_epoch", 0))
        self.state.global_step = int(ckpt.get("global_step", 0))
        self.state.best_prec1 = float(ckpt.get("best_prec1", 0.0))
        self.state.val_pending = bool(ckpt.get("val_pending", False))
        self.state.saves = int(ckpt.get("save_seq", self.state.global_step))
        self.state.committed_saves = int(ckpt.get("committed_seq", 0))
        self.state.meters = {k: list(v) for k, v in (ckpt.get("meters") or {}).items()}
        self.state.failures = ckpt.get("read_failures")
        if ckpt.get("rng"):
            set_rng_state(ckpt["rng"])

    # -- one step ----------------------------------------------------------------------------------
    def forward_loss(self, clips, labels, video_ids, step_record, keep=None, targets=None):
        """keep: (B,) bool, mutual learning only: the samples every modality rank loaded alike.
        targets: (B, K) soft targets (label smoothing / mixing) replacing the hard labels in the CE terms."""
        args = self.args
        device = self.ctx.device
        student_in = clips[self.modality] if isinstance(clips, dict) else clips
        with torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype is not None):
            logits = self.model(student_in)
        logits = logits.float()
        sel = None if keep is None or bool(keep.all()) else keep.nonzero().squeeze(1).to(device)
        ce = masked_mean_loss(self.cross_entropy, logits, labels if targets is None else targets, sel)
        terms = {"ce": ce}
        loss = ce
        if self.ctx.mutual_group is not None:
            peers = peer_mean_logits(logits, self.ctx.mutual_group, self.ctx.num_modalities)
            kl = masked_mean_loss(lambda x, p: self.kd_loss(x, p, temperature=args.mutual_temperature),
                                  logits, peers, sel)
            terms["mutual"] = kl
            loss = loss + args.mutual_weight * kl
            if step_record is not None:
                step_record["peer_logits"] = peers.cpu()
        if self.teachers is not None or self.teacher_scores is not None:
            if self.teachers is not None:
                with torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype is not None):
                    t_logits = self.teachers(clips).float()
                # per head, with each head's teacher weights (softmin of that head's CE)
                teacher = torch.cat([combine_teachers(z, labels=y, weighting=args.teacher_weighting,
                                                      fixed_weights=self.fixed_teacher_weights[h]
                                                      if self.fixed_teacher_weights else None,
                                                      temperature=args.teacher_weight_temperature)
                                     for h, (z, y) in enumerate(zip(split_heads(t_logits, self.heads),
                                                                    split_heads(labels, self.heads)))],
                                    dim=-1) if self.heads else \
                    combine_teachers(t_logits, labels=labels, weighting=args.teacher_weighting,
                                     fixed_weights=self.fixed_teacher_weights,
                                     temperature=args.teacher_weight_temperature)
            else:
                teacher = self.teacher_scores.lookup(video_ids, labels=labels.cpu(), device=device)
            loss, ce_term, kd = distill_loss(logits, teacher, labels if targets is None else targets,
                                             temperature=args.distill_temperature,
                                             distill_weight=args.distill_weight, gt_weight=args.gt_weight,
                                             ce_fn=self.cross_entropy, kd_fn=self.kd_loss)
            terms["ce"] = ce_term
            terms["distill"] = kd
        aux = self.raw_model.aux_loss
        if aux is not None and args.align_weight:
            terms["align"] = aux.float()
            loss = loss + args.align_weight * aux.float()
        if step_record is not None:
            step_record.update(logits=logits.detach().cpu(), labels=labels.cpu(),
                               loss=float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()})
        return logits, loss, terms

    def collective_flags(self, loss):
        """Stop flags agreed by every rank: [signal received, non-finite loss anywhere]."""
        flags = torch.tensor([1.0 if self.state.stop_signal else 0.0,
                              0.0 if torch.isfinite(loss).item() else 1.0])
        if self.ctx.distributed:
            flags = flags.to(self.ctx.device)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            flags = flags.cpu()
        return bool(flags[0]), bool(flags[1])

    def train_step(self, clips, labels, video_ids, epoch, step, n_steps, keep=None, record=None):
        """One step of the epoch loop (scripts/benchmark.py times this method): the lr of this fractional
        epoch, mixing, forward and loss, the stop flags every rank agrees on, backward (scaled for fp16,
        divided for accumulation) and, every --accumulation_steps steps and at the epoch's last, gradient
        clipping and the optimiser step. clips and labels are on the device; keep and record as in
        forward_loss. Returns (logits, loss, loss terms, lr, stop requested by a signal)."""
        args = self.args
        lr = self.schedule.lr_at(epoch + step / max(n_steps, 1))
        set_lr(self.optimizer, lr, args.weight_decay)
        clips, targets = mix_batch(clips, labels, self.raw_model.num_class, seed=args.seed, epoch=epoch,
                                   step=step, replica=self.ctx.replica_index, mixup=args.mixup,
                                   cutmix=args.cutmix, switch_prob=args.mix_switch_prob,
                                   smoothing=args.label_smoothing, heads=self.heads)
        logits, loss, terms = self.forward_loss(clips, labels, video_ids, record, keep, targets)
        stop, nonfinite = self.collective_flags(loss.detach())
        if nonfinite:
            raise FloatingPointError(
                f"non-finite loss at epoch {epoch + 1} step {step + 1} (global step "
                f"{self.state.global_step + 1}), lr {lr:.6g}: stopping instead of training on garbage")
        scaled = loss / args.accumulation_steps
        (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        if (step + 1) % args.accumulation_steps == 0 or step + 1 == n_steps:
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            if args.clip_gradient:
                torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), args.clip_gradient)
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return logits, loss, terms, lr, stop

    def train_epoch(self, loader, sampler, epoch):
        """Train one epoch (or its rest, after a mid-epoch resume) and return its mean metrics. A signal
        writes a checkpoint at the step boundary and exits with EXIT_PREEMPTED."""
        args, ctx, st = self.args, self.ctx, self.state
        self.raw_model.partialBN(not args.no_partialbn)
        self.model.train()
        self.raw_model.set_epoch(epoch)     # the backbone's own schedule (ILA: jitter of the alignment points)
        start = st.step_in_epoch
        sampler.set_epoch(epoch, start_batch=start)
        loader.dataset.set_epoch(epoch)
        loader.dataset.reset_failures(st.failures if start else None)
        n_steps = sampler.num_batches()
        if args.max_steps_per_epoch:
            n_steps = min(n_steps, args.max_steps_per_epoch)
        meters = {k: AverageMeter() for k in ("loss", "ce", "mutual", "distill", "align", "top1", "top5",
                                               "data", "batch", "dropped", *self.head_metric_names())}
        for k, (total, count) in (st.meters if start else {}).items():   # mid-epoch resume: whole-epoch means
            meters[k].sum, meters[k].count = total, count
        st.meters = {k: (m.sum, m.count) for k, m in meters.items()}
        planned = list(sampler)          # what every modality rank asks for, to notice replaced videos
        bar = progress_bar(n_steps, f"epoch {epoch + 1}/{args.epochs}", ctx.is_main and not args.no_progress, start)
        dump = [] if args.dump_step_logits else None
        end = time.perf_counter()
        step = start
        self.optimizer.zero_grad(set_to_none=True)
        for clips, labels, index in loader:
            if step >= n_steps:
                break
            meters["data"].update(time.perf_counter() - end)
            clips = to_device(clips, ctx.device, args.channels_last)
            labels = labels.to(ctx.device, non_blocking=True)
            video_ids = [loader.dataset.records[int(i)].video_id for i in index]
            keep = None
            if ctx.mutual_group is not None:      # always on: one all-gather of 2B ids per step
                asked = planned[(step - start) * loader.batch_size:][:len(video_ids)]
                keep = aligned_keep_mask(video_id_hash([loader.dataset.records[i].video_id for i in asked]),
                                         video_id_hash(video_ids), ctx.mutual_group, self.mutual_ranks, step,
                                         device=ctx.device)
                meters["dropped"].update(float((~keep).sum()), 1)
            record = {"step": step, "video_ids": video_ids} if dump is not None else None
            if record is not None and keep is not None:
                record["keep"] = keep.clone()
            logits, loss, terms, lr, stop = self.train_step(clips, labels, video_ids, epoch, step, n_steps,
                                                            keep=keep, record=record)
            b = labels.shape[0]
            meters["loss"].update(float(loss.detach()), b)
            for k, v in terms.items():
                meters[k].update(float(v.detach()), b)
            for k, c in correct_counts(logits.detach(), labels, self.heads).items():   # multi-head: action
                meters[k].update(100.0 * c / b, b)
            if dump is not None:
                dump.append(record)
            step += 1
            st.step_in_epoch = step
            st.meters = {k: (m.sum, m.count) for k, m in meters.items()}
            st.failures = loader.dataset.failure_state()
            st.global_step += 1
            meters["batch"].update(time.perf_counter() - end)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{meters['loss'].avg:.3f}", top1=f"{meters['top1'].avg:.1f}",
                                lr=f"{lr:.2e}", data=f"{meters['data'].avg:.3f}s",
                                batch=f"{meters['batch'].avg:.3f}s", refresh=False)
            if ctx.is_main and args.print_freq and step % args.print_freq == 0 and bar is None:
                logger.info("epoch %d step %d/%d loss %.4f top1 %.2f lr %.3g data %.3fs batch %.3fs",
                            epoch + 1, step, n_steps, meters["loss"].avg, meters["top1"].avg, lr,
                            meters["data"].avg, meters["batch"].avg)
            if stop:
                if bar is not None:
                    bar.close()
                self.save_dump(dump, epoch)
                self.save()
                logger.warning("signal %s: checkpoint written at epoch %d step %d; exiting with code %d "
                               "(resume with --resume auto)", self.state.stop_signal, epoch + 1, step,
                               EXIT_PREEMPTED)
                raise SystemExit(EXIT_PREEMPTED)
            end = time.perf_counter()
        if bar is not None:
            bar.close()
        self.save_dump(dump, epoch)
        if meters["batch"].count and meters["data"].avg > meters["batch"].avg / 3 and ctx.is_main:
            logger.warning("data loading takes %.0f%% of the step time: the loader is the bottleneck "
                           "(raise -j/--workers or use extracted frames)",
                           100 * meters["data"].avg / meters["batch"].avg)
        st.epoch = epoch + 1
        st.step_in_epoch = 0
        st.meters = {}
        st.failures = None
        out = {k: m.avg for k, m in meters.items() if m.count and k != "dropped"}
        out["lr"] = self.schedule.lr_at(epoch)
        if meters["dropped"].count:
            out["dropped_samples"] = int(meters["dropped"].sum)
        out.update(loader.dataset.failure_report())
        if out["read_failures"]:
            logger.warning("[%s] epoch %d: %d read failure(s), replaced by other videos%s; first: %s "
                           "(check the data with scripts/check_data.py)", self.modality, epoch + 1,
                           out["read_failures"], f", {out.get('dropped_samples', 0)} sample(s) dropped from "
                           "the mutual loss" if ctx.mutual_group is not None else "", ", ".join(out["failed_videos"]))
        return out

    def head_metric_names(self):
        """Metrics of a multi-head model besides top1/top5 (which are then the action's)."""
        return [f"{name}_{k}" for name, _ in self.heads or () for k in ("top1", "top5")]

    def save_dump(self, dump, epoch):
        if dump:
            path = os.path.join(self.run_dir, f"steps_rank{self.ctx.rank}_epoch{epoch}.pt")
            torch.save(dump, path)

    @torch.no_grad()
    def validate(self, loader, sampler, num_videos, num_class):
        """Exact validation: every video counted once whatever the world size. Returns metrics + logits."""
        args, ctx = self.args, self.ctx
        self.model.eval()
        loader.dataset.set_epoch(0)
        idx_list, logit_list = [], []
        bar = progress_bar(len(loader), "validate", ctx.is_main and not args.no_progress)
        read_errors = []
        batches = iter(loader)
        while True:
            try:
                clips, labels, index = next(batches)
            except StopIteration:
                break
            except RuntimeError as exc:    # the validation set is read strictly: note it, finish, then stop
                if "read failure" not in str(exc):
                    raise
                read_errors.append(read_failure_line(exc))
                continue
            clips = to_device(clips, ctx.device, args.channels_last)
            with torch.autocast(ctx.device.type, dtype=self.dtype, enabled=self.dtype is not None):
                logits = self.model(clips)
            logit_list.append(logits.float().cpu())
            idx_list.append(index.cpu())
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        saved = (f"the epoch {self.state.epoch} checkpoint is saved; " if self.state.val_pending else "")
        agree_on_errors(ctx, read_errors, what=f"validation of the {self.modality} model could not read "
                        f"{loader.dataset.list_file}", hint=(
                            f"{saved}fix or drop these videos (scripts/check_data.py --split val)"
                            + (" and rerun with --resume auto, which validates it first" if saved else "")))
        logits = torch.cat(logit_list) if logit_list else torch.zeros(0, num_class)
        index = torch.cat(idx_list) if idx_list else torch.zeros(0, dtype=torch.int64)
        logits = D.gather_by_index(index, logits, num_videos, world=ctx.num_replicas, group=ctx.replica_group,
                                   what=f"validation of the {self.modality} model")
        labels = torch.tensor([r.label for r in loader.dataset.records])     # (N,) or (N, heads)
        loss = float(self.cross_entropy(logits, labels)) if num_videos else 0.0
        out = {k: 100.0 * c / max(num_videos, 1) for k, c in correct_counts(logits, labels, self.heads).items()}
        return dict(out, loss=loss), logits, labels


def masked_mean_loss(loss_fn, logits, target, sel):
    """loss_fn (a batch mean) over the rows `sel` (None: all). No row left: a zero that keeps the graph
    (DDP replicas still all-reduce their gradients)."""
    if sel is None:
        return loss_fn(logits, target)
    if sel.numel() == 0:
        return logits.sum() * 0.0
    return loss_fn(logits[sel], target[sel])


def read_failure_line(exc):
    """The line of a (possibly DataLoader-worker-wrapped) read-failure error that names the file."""
    lines = [ln.strip() for ln in str(exc).splitlines() if "read failure" in ln]
    return lines[-1] if lines else str(exc).splitlines()[0]


def agree_on_errors(ctx, errors, what, hint):
    """Every rank learns of every rank's errors and stops at the same point with one message naming
    them (a lone rank stopping would leave its peers waiting in a collective until --dist_timeout)."""
    if ctx.distributed:
        parts = [None] * ctx.world_size
        dist.all_gather_object(parts, errors)
        errors = [f"rank {r}: {e}" for r, part in enumerate(parts) for e in part]
    if errors:
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        raise SystemExit(f"{what}: " + "; ".join(errors[:10]) + more + f". {hint}")


def write_json_atomic(path, obj):
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2)


def plain_args(args):
    out = {}
    for k, v in vars(args).items():
        if isinstance(v, (str, int, float, bool, type(None))):
            out[k] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float, bool)) for x in v):
            out[k] = list(v)
    return out


# ----------------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------------

def checkpoint_position(path):
    """(save_seq, epoch, step_in_epoch, committed_seq) of a checkpoint file. save_seq counts the saves
    of the run: the epoch-end save before validation and the one after it differ, the step does not."""
    with named_input_errors(RuntimeError):
        ckpt = load_checkpoint(path, require=("epoch",))
    return (int(ckpt.get("save_seq", ckpt.get("global_step", 0))), int(ckpt["epoch"]),
            int(ckpt.get("step_in_epoch", 0)), int(ckpt.get("committed_seq", 0)))


def choose_common_checkpoint(held_by_rank):
    """held_by_rank: rank name -> {save_seq: (save_seq, epoch, step_in_epoch, committed_seq)} of the
    checkpoints that rank holds. Returns the newest save_seq every rank holds (0: a fresh start), or
    raises SystemExit naming each rank's position.

    A rank with nothing on disk never committed a set, and a rank whose only file is its first save
    (committed_seq 0) may have written it alone: both allow the fresh start."""
    def available(held):
        seqs = set(held)
        if not held or (len(held) == 1 and held[max(held)][3] == 0):
            seqs.add(0)
        return seqs
    common = set.intersection(*(available(h) for h in held_by_rank.values()))
    if common:
        return max(common)
    where = "; ".join(f"{name}: " + (", ".join(
        f"epoch {pos[1]} step {pos[2]} (save {g})" for g, pos in sorted(held.items(), reverse=True))
        or "no checkpoint") for name, held in held_by_rank.items())
    raise SystemExit(f"--resume auto: the modality ranks hold no common checkpoint set, so they would resume "
                     f"at different points and exchange logits of different videos: {where}. Resume each "
                     f"rank from an explicit --resume of the same save, or start a new run (another --suffix "
                     f"or --root_model).")


@contextlib.contextmanager
def named_input_errors(*extra):
    """A bad list, data option or checkpoint file stops the run with its message (which names the file,
    line and option) instead of a traceback. extra: more exception types (RuntimeError for checkpoints)."""
    try:
        yield
    except (OSError, ValueError, *extra) as exc:
        raise SystemExit(f"{type(exc).__name__}: {exc}") from None


def resolve_resume(args, ctx, run_dir, writes):
    """The checkpoint this rank resumes from ('' for a fresh start).

    --resume PATH: that file. --resume auto: the run's latest checkpoint; with mutual learning, the newest
    checkpoint set that every modality rank holds (each keeps its previous file, and the ranks compare
    save counts), so that the ranks always resume at the same point and exchange logits of the same
    videos. A set that not every rank wrote (a rank died between the writes) is set aside
    (ckpt.uncommitted.pth.tar); ranks without any common set refuse, naming each rank's position."""
    if args.resume != "auto":
        return args.resume
    files = [os.path.join(run_dir, CKPT)]
    if ctx.num_modalities > 1:
        files.append(os.path.join(run_dir, PREV_CKPT))
    mine = {}
    unreadable = []
    for path in files:
        if os.path.isfile(path):
            try:
                pos = checkpoint_position(path)
            except SystemExit as exc:
                if ctx.num_modalities == 1 or not ctx.distributed:
                    raise
                unreadable.append(str(exc))      # the peers must learn of it, not wait for it
                continue
            mine.setdefault(pos[0], (path, pos))
    if ctx.num_modalities == 1 or not ctx.distributed:
        return files[0] if mine else ""
    parts = [None] * ctx.world_size
    dist.all_gather_object(parts, (ctx.modality_index, {g: pos for g, (_, pos) in mine.items()}, unreadable))
    errors = [f"rank {r}: {e}" for r, (_, _, errs) in enumerate(parts) for e in errs]
    if errors:
        raise SystemExit("--resume auto: a modality rank cannot read its checkpoint, so the ranks cannot agree "
                         "on a common one: " + "; ".join(errors) + ". Move the file aside (the rank then "
                         "resumes from its previous one, if every rank holds that save) or start a new run.")
    by_modality = {}
    for m, held, _ in parts:
        by_modality.setdefault(m, held)
    step = choose_common_checkpoint({args.modalities[m] + f" (rank {m})": held
                                     for m, held in sorted(by_modality.items())})
    for g, (path, pos) in sorted(mine.items(), reverse=True):
        if g > step and writes:
            logger.warning("set aside %s (epoch %d step %d, save %d): not every modality rank wrote its "
                           "checkpoint of that save; resuming at save %d", path, pos[1], pos[2], g, step)
            os.replace(path, os.path.join(run_dir, UNCOMMITTED_CKPT))
    return mine[step][0] if step in mine else ""


# Model settings that a resumed checkpoint must share with the command (key in TSN.config() -> option).
RESUME_MUST_MATCH = {
    "modality": "modality (2nd positional argument)", "base_model": "--arch", "num_segments": "--num_segments",
    "num_class": "number of classes (dataset / --num_class / --category_file)", "new_length": "--new_length",
    "temporal_module": "--temporal_module / --shift", "is_shift": "--shift", "shift_div": "--shift_div",
    "shift_place": "--shift_place", "temporal_pool": "--temporal_pool", "non_local": "--non_local",
    "consensus_type": "--consensus_type", "input_size": "--input_size", "heads": "--heads (label heads)"}


def check_resume_config(ckpt, config, path):
    """Refuse to resume a checkpoint of another model (a raw size mismatch, or worse, a silent load)."""
    saved = ckpt.get("config")
    if not isinstance(saved, dict):
        return
    bad = []
    for key, option in RESUME_MUST_MATCH.items():
        if key in ("shift_div", "shift_place") and not (saved.get("is_shift") or config.get("is_shift")):
            continue
        if (key in saved or key == "heads") and saved.get(key) != config.get(key):
            bad.append(f"{option}: the checkpoint has {saved.get(key)!r}, this command {config.get(key)!r}")
    if bad:
        raise SystemExit(f"--resume {path} holds another model: " + "; ".join(bad) +
                         ". Resume with the run's own settings (its args.json), or start a new run.")


def drop_metrics_after(path, completed_epochs, val_pending):
    """Resuming: drop metrics.jsonl rows past the checkpoint (written after it, before the crash), so the
    rerun epochs are not recorded twice."""
    if not os.path.isfile(path):
        return
    with open(path) as f:
        rows = [line for line in f if line.strip()]
    kept = []
    for line in rows:
        row = json.loads(line)
        if row["epoch"] > completed_epochs or (val_pending and row["epoch"] == completed_epochs
                                               and row["split"] == "val"):
            continue
        kept.append(line)
    if len(kept) != len(rows):
        logger.info("metrics.jsonl: dropped %d row(s) written after the resumed checkpoint",
                    len(rows) - len(kept))
        with atomic_open(path) as f:
            f.writelines(kept)


def install_signal_handlers(state):
    """SIGTERM, SIGUSR1 and a first SIGINT (Ctrl-C): checkpoint at the next step boundary, exit 75.
    A second SIGINT interrupts at once. DataLoader workers ignore both (ops.dataset.worker_init_fn)."""
    def handler(signum, frame):
        if signum == signal.SIGINT and state.stop_signal == "SIGINT":
            raise KeyboardInterrupt
        state.stop_signal = signal.Signals(signum).name
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(sig, handler)


def main(args):
    try:
        ctx = D.setup_distributed(rank=args.rank, world_size=args.world_size, init_method=args.init_method,
                                  dist_port=args.dist_port, device=args.device, gpus=args.gpus,
                                  num_modalities=args.num_modalities, timeout_s=args.dist_timeout)
    except D.RendezvousError as exc:
        print(f"rank {args.rank if args.rank is not None else os.environ.get('RANK', '?')}: "
              f"distributed failure: {exc}", file=sys.stderr, flush=True)
        D.cleanup()
        sys.exit(EXIT_PEER_LOST)
    try:
        return run(args, ctx)
    except SystemExit:
        raise
    except (RuntimeError, dist.DistBackendError) as exc:
        if ctx.distributed and is_comm_failure(exc):
            why = D.describe_failure(ctx)
            logging.getLogger("main").error("rank %d: a collective failed (%s): %s", ctx.rank,
                                            str(exc).splitlines()[0], why)
            print(f"rank {ctx.rank}: distributed failure: {why}", file=sys.stderr, flush=True)
            os._exit(EXIT_PEER_LOST)
        raise
    finally:
        release_run_dirs()
        D.cleanup()


def is_comm_failure(exc):
    text = str(exc).lower()
    return isinstance(exc, dist.DistBackendError) or any(
        s in text for s in ("connection", "timed out", "timeout", "gloo", "nccl", "peer", "broken pipe"))


def limit_cpu_threads(ctx):
    """Several CPU ranks on one machine must not oversubscribe the cores: OpenMP threads spin-wait,
    and 2 ranks x all cores each ran 5-10x slower here. Assumes one host; OMP_NUM_THREADS wins."""
    if ctx.distributed and ctx.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ctx.world_size))


@dataclass
class RunData:
    """The data of one rank, resolved once: registry entries per modality, parsed and paired records."""
    spec: object                 # ops.dataset_config.DatasetInfo of this rank's modality
    specs: dict                  # modality -> DatasetInfo, every modality the rank reads (teachers' too)
    train_records: dict          # modality -> records of the training list, paired by video id
    val_records: dict
    pair_modalities: list        # the modalities of the run (mutual learning aligns them)
    teachers: object = None      # ops.distill teachers (--distill_from)
    teacher_scores: object = None

    @property
    def num_class(self):
        return self.spec.num_class


@dataclass
class Loaders:
    batch: int                   # per-rank batch
    train_set: object
    val_set: object
    train_sampler: object
    val_sampler: object
    train: object
    val: object


def run(args, ctx):
    """One rank of a training run (or of -e/--evaluate), top to bottom: run directory, data, model and
    optimiser, distributed wrapper, loaders, trainer (restored when resuming), then the epoch loop."""
    limit_cpu_threads(ctx)
    seed_everything(args.seed)
    modality = args.modalities[ctx.modality_index]
    run_dir, log_dir, writes = open_run_dir(args, ctx)
    state = RunState()
    install_signal_handlers(state)
    data = build_data(args, ctx, modality)
    resume = resolve_resume(args, ctx, run_dir, writes)
    model, optimizer = build_model_and_optimizer(args, ctx, modality, data.num_class, fine_tune=not resume)
    train_model = wrap_distributed(args, ctx, model)
    if writes:
        write_run_args(args, ctx, run_dir)
    loaders = build_loaders(args, ctx, modality, data, model)
    teacher_weights = fixed_teacher_weights(args, ctx, modality, data, loaders, model)
    trainer = Trainer(args, ctx, modality, train_model, optimizer, run_dir, raw_model=model,
                      schedule=lr_schedule(args), state=state, teachers=data.teachers,
                      teacher_scores=data.teacher_scores, fixed_teacher_weights=teacher_weights,
                      data_config=data_record(data.spec))
    if resume:
        restore(trainer, resume, run_dir if writes and not args.evaluate else None)
    elif args.start_epoch:
        trainer.state.epoch = args.start_epoch
    log_start(args, ctx, modality, data, loaders)
    if args.evaluate:
        metrics, _, _ = trainer.validate(loaders.val, loaders.val_sampler, len(loaders.val_set), data.num_class)
        if ctx.is_main:
            logger.info("validation: top-1 %.2f top-5 %.2f loss %.4f", metrics["top1"], metrics["top5"],
                        metrics["loss"])
        return metrics
    return fit(args, ctx, trainer, loaders, data.num_class, log_dir if writes else None)


def open_run_dir(args, ctx):
    """-> (run_dir, log_dir, writes). The first replica of each modality writes: it creates and locks the
    run directory (refusing one of another configuration) and logs to its log.txt."""
    name = args.store_names[ctx.modality_index]
    run_dir = os.path.join(args.root_model, name)
    log_dir = os.path.join(args.root_log, name)
    writes = ctx.replica_index == 0
    if writes:
        os.makedirs(run_dir, exist_ok=True)
        os.makedirs(log_dir, exist_ok=True)
        claim_run_dir(args, run_dir)
    setup_logging(run_dir if writes else None, ctx.is_main or (writes and ctx.num_modalities > 1))
    if writes:
        remove_stale_temp_files(run_dir)      # left by kills during a checkpoint write
    return run_dir, log_dir, writes


def write_run_args(args, ctx, run_dir):
    """args.json: the resolved options and how this rank was launched (ops/rundir.py compares reruns)."""
    with open(os.path.join(run_dir, "args.json"), "w") as f:
        json.dump(dict(plain_args(args), modality_of_rank=args.modalities[ctx.modality_index], rank=ctx.rank,
                       world_size=ctx.world_size, launch=ctx.source, device=str(ctx.device),
                       per_rank_batch=per_rank_batch(args, ctx)), f, indent=2)


def build_data(args, ctx, modality):
    """Registry entries (resolved once per modality), teachers, and the parsed, paired list records."""
    teachers = teacher_scores = None
    if args.distill_from:
        teachers = load_teachers(args.distill_from.split(","), ctx.device)
    if args.teacher_scores:
        teacher_scores = TeacherScores(args.teacher_scores)
        try:
            check_same_heads(args.head_layout, teacher_scores.heads, "the student",
                             f"--teacher_scores {args.teacher_scores}")
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
    pair_mods = list(args.modalities)
    train_mods = pair_mods + [m for m in (teachers.required_modalities if teachers else ()) if m not in pair_mods]
    with named_input_errors(RuntimeError):    # toy: generated on first use (box files when Layout is read)
        ensure_builtin_data(args.dataset, args.data_root, args.root_path, modalities=tuple(train_mods))
    specs = {m: dataset_spec(args, m) for m in dict.fromkeys([modality, *train_mods])}
    with named_input_errors():
        train_records = build_records("train", train_mods, specs)
        val_records = build_records("val", pair_mods, specs)
    return RunData(spec=specs[modality], specs=specs, train_records=train_records, val_records=val_records,
                   pair_modalities=pair_mods, teachers=teachers, teacher_scores=teacher_scores)


def build_model_and_optimizer(args, ctx, modality, num_class, fine_tune=True):
    """This rank's model on its device (fine-tuned from --tune_from unless resuming) and its optimiser."""
    # Each modality rank gets its own initialisation (RGB,RGB mutual learning needs two different
    # models); the replicas of one modality share it (DDP also broadcasts rank 0's weights).
    torch.manual_seed(args.seed + ctx.modality_index)
    model = build_model(args, modality, num_class)
    if args.tune_from and fine_tune:
        with named_input_errors(RuntimeError):
            source = load_checkpoint(args.tune_from, require=("state_dict",))
        report = load_weights(model, source["state_dict"], src_config=source.get("config"))
        logger.info("fine-tuning from %s: %s", args.tune_from, report)
    model.to(ctx.device)
    if args.channels_last:
        to_channels_last(model)          # 4-D weights only: Conv3d (MSN, non-local) stays as it is
    return model, build_optimizer(args, model)        # after any first-conv conversion


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


def build_loaders(args, ctx, modality, data, model):
    """Datasets, shard samplers and loaders of both splits (the student's and teachers' views together
    when distilling)."""
    batch = per_rank_batch(args, ctx)
    aligned = ctx.num_modalities > 1
    with named_input_errors():
        if data.teachers is not None:
            train_set = make_distill_dataset(args, modality, data.train_records, data.specs, model, data.teachers,
                                             data.num_class)
        else:
            train_set = make_dataset(args, modality, "train", data.train_records, data.spec, model, aligned,
                                     data.num_class, data.pair_modalities, ctx.modality_index)
        val_set = make_dataset(args, modality, "val", data.val_records, data.spec, model, aligned, data.num_class,
                               data.pair_modalities, ctx.modality_index)
    train_sampler = ShardSampler(len(train_set), num_replicas=ctx.num_replicas, rank=ctx.replica_index,
                                 batch_size=batch, shuffle=True, drop_last=True, seed=args.seed)
    val_sampler = ShardSampler(len(val_set), num_replicas=ctx.num_replicas, rank=ctx.replica_index,
                               batch_size=batch, shuffle=False, drop_last=False)
    if train_sampler.num_batches() == 0 and not args.evaluate:
        raise SystemExit(f"{len(train_set)} training videos give no full batch of {batch} per replica; "
                         f"lower --batch-size")
    return Loaders(batch=batch, train_set=train_set, val_set=val_set, train_sampler=train_sampler,
                   val_sampler=val_sampler,
                   train=make_loader(train_set, train_sampler, batch, args.workers, ctx.device, args.seed),
                   val=make_loader(val_set, val_sampler, batch, args.workers, ctx.device, args.seed))


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
    weights = dataset_teacher_weights(args, ctx, data.teachers, loader, sampler)
    logger.info("softmin_dataset teacher weights%s: %s", " per head" if args.head_layout else "",
                [[round(w, 4) for w in ws] for ws in weights] if args.head_layout else [round(w, 4) for w in weights])
    return weights


def restore(trainer, path, run_dir):
    """Resume `trainer` from checkpoint `path` (refusing another model's); run_dir: where metrics.jsonl
    rows written after that checkpoint are dropped (None: not this rank's, or only validating)."""
    with named_input_errors(RuntimeError):
        ckpt = load_checkpoint(path, require=("state_dict", "epoch", "optimizer"))
    check_resume_config(ckpt, trainer.raw_model.config(), path)
    try:
        check_shift_direction(trainer.raw_model, ckpt.get("config"), path)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    trainer.restore(ckpt)
    del ckpt
    st = trainer.state
    logger.info("resumed from %s at epoch %d step %d (best top-1 %.2f)", path, st.epoch + 1, st.step_in_epoch,
                st.best_prec1)
    if run_dir is not None:
        drop_metrics_after(os.path.join(run_dir, "metrics.jsonl"), st.epoch, st.val_pending)


def log_start(args, ctx, modality, data, loaders):
    if ctx.is_main:
        logger.info("run %s | %s | launch %s, world %d (%d modalities x %d replicas), device %s, "
                    "per-rank batch %d, amp %s, channels_last %s | %d train / %d val videos | decoder %s",
                    args.store_names[ctx.modality_index], modality, ctx.source, ctx.world_size,
                    ctx.num_modalities, ctx.num_replicas, ctx.device, loaders.batch, args.amp, args.channels_last,
                    len(loaders.train_set), len(loaders.val_set),
                    decoder_info(args, modality, data.spec.data_format))


def decoder_info(args, modality, data_format):
    """What decodes this rank's inputs, for the run log: Audio decodes soundtracks with PyAV (ops/audio.py)."""
    if modality == "Audio" and data_format != "hdf5":
        return backend_info("pyav") + " (audio)"
    return backend_info(args.video_backend if data_format == "video" else None)


def fit(args, ctx, trainer, loaders, num_class, log_dir):
    """The epoch loop: train, checkpoint (before validating, so validation cannot lose the epoch), validate
    every --eval-freq epochs and at the end, checkpoint again with the best top-1. log_dir None: this rank
    writes no metrics. Returns {'best_prec1', 'modality'}; mutual learning logs the ensemble of the ranks."""
    st = trainer.state
    writer = None
    metrics_path = None
    if log_dir is not None:
        from tensorboardX import SummaryWriter
        writer = SummaryWriter(log_dir=log_dir)
        metrics_path = os.path.join(trainer.run_dir, "metrics.jsonl")

    def validate_and_save(epoch, tr):
        val, logits, labels = trainer.validate(loaders.val, loaders.val_sampler, len(loaders.val_set), num_class)
        is_best = val["top1"] > st.best_prec1
        st.best_prec1 = max(st.best_prec1, val["top1"])
        val["top1_best"] = st.best_prec1
        record(writer, metrics_path, epoch, "val", val)
        if ctx.is_main or (trainer.writes and ctx.num_modalities > 1):
            train_part = f"train loss {tr['loss']:.4f} top-1 {tr['top1']:.2f} | " if tr else ""
            logger.info("[%s] epoch %d: %sval top-1 %.2f top-5 %.2f (best %.2f)", trainer.modality, epoch + 1,
                        train_part, val["top1"], val["top5"], st.best_prec1)
            if trainer.heads:
                logger.info("[%s] epoch %d: top-1 / top-5 above are the action's (all heads right); %s",
                            trainer.modality, epoch + 1, ", ".join(
                                f"{n} {val[n + '_top1']:.2f} / {val[n + '_top5']:.2f}" for n, _ in trainer.heads))
        st.val_pending = False
        trainer.save(is_best)
        return logits, labels

    last_val = None
    if st.val_pending:       # resumed from a checkpoint written before its validation
        last_val = validate_and_save(st.epoch - 1, None)
    for epoch in range(st.epoch, args.epochs):
        tr = trainer.train_epoch(loaders.train, loaders.train_sampler, epoch)
        record(writer, metrics_path, epoch, "train", tr)
        st.val_pending = (epoch + 1) % args.eval_freq == 0 or epoch == args.epochs - 1
        trainer.save(False)
        if st.val_pending:
            last_val = validate_and_save(epoch, tr)
    if writer is not None:
        writer.close()
    if ctx.num_modalities > 1 and last_val is not None:
        mutual_summary(ctx, args, st.best_prec1, last_val)
    return {"best_prec1": st.best_prec1, "modality": trainer.modality}


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
def dataset_teacher_weights(args, ctx, teachers, loader, sampler):
    """softmin_dataset: each teacher's mean CE over one pass of the training data -> softmin weights.
    Multi-head: one list of weights per head, from that head's CE (the paper's code weighs the teachers
    of each head separately)."""
    heads = check_heads(args.head_layout) if args.head_layout else None
    sampler.set_epoch(0)
    loader.dataset.set_epoch(0)
    total = torch.zeros(len(heads or [None]), len(teachers.modalities), dtype=torch.float64)   # (heads, K)
    count = torch.zeros((), dtype=torch.float64)
    limit = args.max_steps_per_epoch or sampler.num_batches()
    for step, (clips, labels, _) in enumerate(loader):
        if step >= limit:
            break
        logits = teachers(to_device(clips, ctx.device, args.channels_last)).float()
        labels = labels.to(ctx.device)
        parts = zip(split_heads(logits, heads), split_heads(labels, heads)) if heads else [(logits, labels)]
        total += torch.stack([teacher_cross_entropy(z, y).sum(1) for z, y in parts]).double().cpu()
        count += labels.shape[0]
    if ctx.num_replicas > 1:
        packed = torch.cat([total.flatten(), count.view(1)]).to(ctx.device)
        dist.all_reduce(packed, group=ctx.replica_group)
        total, count = packed[:-1].cpu().view(total.shape), packed[-1].cpu()
    weights = [dataset_softmin_weights((row / count).float(), args.teacher_weight_temperature).tolist()
               for row in total]
    return weights if heads else weights[0]


def per_rank_batch(args, ctx):
    if args.batch_size % ctx.num_replicas:
        raise SystemExit(f"--batch-size {args.batch_size} is not divisible by the {ctx.num_replicas} "
                         f"data-parallel replicas")
    return args.batch_size // ctx.num_replicas


def record(writer, path, epoch, split, metrics):
    """One metrics.jsonl row (and TensorBoard scalars) per epoch and split; path None: not this rank's."""
    if path is None:
        return
    row = {k: (v if isinstance(v, (list, str)) else float(v)) for k, v in metrics.items()}
    with open(path, "a") as f:
        f.write(json.dumps({"epoch": epoch + 1, "split": split, **row}) + "\n")
    if writer is None:
        return
    if split == "train":
        writer.add_scalar("loss/train", metrics.get("ce", metrics["loss"]), epoch)
        for key in ("mutual", "distill", "align"):
            if key in metrics:
                writer.add_scalar(f"loss/{key}", metrics[key], epoch)
        writer.add_scalar("acc/train_top1", metrics["top1"], epoch)
        writer.add_scalar("acc/train_top5", metrics["top5"], epoch)
        writer.add_scalar("lr", metrics["lr"], epoch)
    else:
        writer.add_scalar("loss/test", metrics["loss"], epoch)
        writer.add_scalar("acc/test_top1", metrics["top1"], epoch)
        writer.add_scalar("acc/test_top5", metrics["top5"], epoch)
        writer.add_scalar("acc/test_top1_best", metrics["top1_best"], epoch)
    writer.flush()


def mutual_summary(ctx, args, best, last_val):
    """Rank 0: per-modality best top-1 and the top-1 of the ensemble of all ranks' last validation logits."""
    logits, labels = last_val
    parts = [None] * ctx.num_modalities
    dist.all_gather_object(parts, (args.modalities[ctx.modality_index], best, logits.numpy()),
                           group=ctx.mutual_group)
    if not ctx.is_main:
        return
    ens = torch.from_numpy(sum(p[2] for p in parts))
    heads = check_heads(args.head_layout) if args.head_layout else None
    ens_top1 = 100.0 * correct_counts(ens, labels, heads)["top1"] / max(len(labels), 1)   # multi-head: action
    lines = ["rank  modality   best top-1"]
    lines += [f"{r:<5} {m:<10} {b:6.2f}" for r, (m, b, _) in enumerate(parts)]
    lines.append(f"ensemble of {len(parts)} ranks (sum of last validation logits): top-1 {ens_top1:.2f}")
    logger.info("mutual learning summary\n%s", "\n".join(lines))
    with open(os.path.join(args.root_model, args.store_names[0], "mutual_summary.json"), "w") as f:
        json.dump({"ranks": [{"modality": m, "best_top1": b} for m, b, _ in parts],
                   "ensemble_top1": ens_top1}, f, indent=2)


if __name__ == "__main__":
    main(parse_args())
