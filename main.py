"""Train TSN / TSM / TIN / MSN / ILA models; a comma list of modalities runs mutual modality learning.

    python main.py toy RGB --shift                                   # quickstart (CPU, minutes)
    python main.py somethingv2 RGB --arch resnet50 --shift --npb ...  # TSM recipe
    python main.py somethingv2 RGBDiff,Flow,RGB --rank 0 --world_size 3 --init_method tcp://h:p  # MML
    torchrun --nproc_per_node=3 main.py somethingv2 RGBDiff,Flow,RGB ...

The flow of one rank: `main` sets up torch.distributed (ops/distributed.py) and calls `run`, which opens
the run directory (ops/rundir.py: lock, configuration check, log.txt), reads the lists and teachers
(ops/run_data.py), finds the checkpoint to resume from (ops/resume.py), builds the model and optimiser
(ops/run_model.py, which also fills in --fc_lr5 auto), writes args.json, builds the loaders
(ops/run_data.py), fixes the teacher weights when distilling (ops/distill_setup.py) and makes a `Trainer`,
restored when resuming (ops/resume.py). `fit` then runs the epoch loop: train, checkpoint, validate, write
the metrics (ops/run_metrics.py); -e/--evaluate validates once instead. The options come from opts.py.
"""
import json
import logging
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from opts import dataset_spec, get_train_parser, parse_args
from ops import distributed as D
from ops.checkpoint import remove_stale_temp_files, save_checkpoint, save_checkpoint_keep_previous, strip_prefixes
from ops.dataset_config import data_record
from ops.distill import combine_teachers, distill_loss, kd_loss
from ops.distill_setup import fixed_teacher_weights
from ops.heads import correct_counts, per_head, split_heads
from ops.lr_schedule import set_lr
from ops.mixing import mix_batch
from ops.mutual import aligned_keep_mask, peer_mean_logits, video_id_hash
from ops.resume import (CKPT, PREV_CKPT, RunState, install_signal_handlers, resolve_resume, restore,
                        write_commit_marker)
from ops.run_data import build_data, build_loaders, per_rank_batch
from ops.run_metrics import mutual_summary, record
from ops.run_model import build_model_and_optimizer, lr_schedule, wrap_distributed
from ops.rundir import open_run_dir, plain_args, release_run_dirs
from ops.scores import reports_top5
from ops.utils import AMP_DTYPES, AverageMeter, progress_bar, rng_state, seed_everything, set_rng_state, to_device
from ops.video_io import backend_info

logger = logging.getLogger("main")

EXIT_PREEMPTED = 75          # EX_TEMPFAIL: a checkpoint was written on SIGTERM/SIGUSR1; requeue the job
EXIT_PEER_LOST = 3           # another rank died or hung


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
        """model: what steps (DDP-wrapped when distributed); raw_model: the TSN inside it (saved, restored).
        teachers / teacher_scores / fixed_teacher_weights: distillation (ops/distill_setup.py), else None.
        data_config: the data record stored in checkpoints (which lists and roots this run read)."""
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
        """Everything a resume needs, as tensors and plain types (loaded with weights_only=True): weights,
        optimiser, scaler, RNG, the position inside the epoch and its running meters and read failures."""
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
                write_commit_marker(self.run_dir, self.state, self.ctx.world_size)

    def restore(self, ckpt):
        """The inverse of checkpoint_state (ops/resume.restore has checked that it holds this model)."""
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
        """--dump_steps: this rank's per-step records of the epoch (for comparing runs step by step)."""
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
        D.agree_on_errors(ctx, read_errors, what=f"validation of the {self.modality} model could not read "
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


def limit_cpu_threads(ctx):
    """Several CPU ranks on one machine must not oversubscribe the cores: OpenMP threads spin-wait,
    and 2 ranks x all cores each ran 5-10x slower here. Assumes one host; OMP_NUM_THREADS wins."""
    if ctx.distributed and ctx.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ctx.world_size))


def run(args, ctx):
    """One rank of a training run (or of -e/--evaluate), top to bottom: run directory, data, model and
    optimiser, distributed wrapper, loaders, trainer (restored when resuming), then the epoch loop."""
    limit_cpu_threads(ctx)
    seed_everything(args.seed)
    modality = args.modalities[ctx.modality_index]
    run_dir, log_dir, writes = run_dirs(args, ctx)
    state = RunState()
    install_signal_handlers(state)
    data = build_data(args, ctx, modality, spec_of=lambda m: dataset_spec(args, m))
    resume = resolve_resume(args.resume, args.modalities, ctx, run_dir, writes)
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
            logger.info("validation: top-1 %.2f%s loss %.4f", metrics["top1"], top5_text(metrics, data.num_class),
                        metrics["loss"])
        return metrics
    return fit(args, ctx, trainer, loaders, data.num_class, log_dir if writes else None)


def run_dirs(args, ctx):
    """-> (run_dir, log_dir, writes). The first replica of each modality writes: it creates and locks the
    run directory (refusing one of another configuration) and logs to its log.txt."""
    name = args.store_names[ctx.modality_index]
    run_dir, log_dir = os.path.join(args.root_model, name), os.path.join(args.root_log, name)
    writes = ctx.replica_index == 0
    config = plain_args(args)
    if config["fc_lr5"] == "auto":    # filled in at model build, after this check; args.json records the value
        del config["fc_lr5"]
    names = {a.dest: next((o for o in a.option_strings if o.startswith("--")), a.dest)
             for a in get_train_parser()._actions if a.option_strings}
    open_run_dir(run_dir, log_dir, writes=writes, verbose=ctx.is_main or (writes and ctx.num_modalities > 1),
                 config=config, option_names=names)
    if writes:
        remove_stale_temp_files(run_dir)      # left by kills during a checkpoint write
    return run_dir, log_dir, writes


def write_run_args(args, ctx, run_dir):
    """args.json: the resolved options and how this rank was launched (ops/rundir.py compares reruns)."""
    with open(os.path.join(run_dir, "args.json"), "w") as f:
        json.dump(dict(plain_args(args), modality_of_rank=args.modalities[ctx.modality_index], rank=ctx.rank,
                       world_size=ctx.world_size, launch=ctx.source, device=str(ctx.device),
                       per_rank_batch=per_rank_batch(args.batch_size, ctx.num_replicas)), f, indent=2)


def top5_text(metrics, num_class):
    """' top-5 T' for the log; nothing with 5 classes or fewer, where every label is among the 5 best
    (metrics.jsonl and TensorBoard keep the value either way)."""
    return f" top-5 {metrics['top5']:.2f}" if reports_top5(num_class) else ""


def log_start(args, ctx, modality, data, loaders):
    """The run's first log line: how it was launched, its world, batch, precision, data and decoder."""
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
        """Validate, record the metrics, log them (per head too), checkpoint; tr: the epoch's train metrics."""
        val, logits, labels = trainer.validate(loaders.val, loaders.val_sampler, len(loaders.val_set), num_class)
        is_best = val["top1"] > st.best_prec1
        st.best_prec1 = max(st.best_prec1, val["top1"])
        val["top1_best"] = st.best_prec1
        record(writer, metrics_path, epoch, "val", val)
        if ctx.is_main or (trainer.writes and ctx.num_modalities > 1):
            train_part = f"train loss {tr['loss']:.4f} top-1 {tr['top1']:.2f} | " if tr else ""
            logger.info("[%s] epoch %d: %sval top-1 %.2f%s (best %.2f)", trainer.modality, epoch + 1,
                        train_part, val["top1"], top5_text(val, num_class), st.best_prec1)
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
        mutual_summary(ctx, trainer.modality, st.best_prec1, last_val, head_layout=args.head_layout,
                       path=os.path.join(args.root_model, args.store_names[0], "mutual_summary.json"))
    return {"best_prec1": st.best_prec1, "modality": trainer.modality}


def main(args):
    """The entry point: torch.distributed from the launcher, then this rank's `run`; a lost peer exits 3."""
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
        if ctx.distributed and D.is_comm_failure(exc):
            why = D.describe_failure(ctx)
            logging.getLogger("main").error("rank %d: a collective failed (%s): %s", ctx.rank,
                                            str(exc).splitlines()[0], why)
            print(f"rank {ctx.rank}: distributed failure: {why}", file=sys.stderr, flush=True)
            os._exit(EXIT_PEER_LOST)
        raise
    finally:
        release_run_dirs()
        D.cleanup()


if __name__ == "__main__":
    main(parse_args())
