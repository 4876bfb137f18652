"""Resuming a training run: the checkpoint files of a run directory, the commit marker of mutual
learning, which checkpoint to resume from, refusing another model's, and restoring a trainer.

A run directory holds ckpt.pth.tar (the latest save). Mutual learning (several modality ranks) also
keeps each rank's previous file (ckpt.prev.pth.tar) and writes commit.json once a barrier proves that
every modality rank wrote its part of a save; `--resume auto` then picks the newest save that every
rank holds, so that the ranks resume at the same point and exchange logits of the same videos.
SIGTERM / SIGUSR1 / a first Ctrl-C ask for a checkpoint at the next step boundary (RunState.stop_signal).
"""
import json
import logging
import os
import signal

import torch.distributed as dist

from ops.checkpoint import check_shift_direction, load_checkpoint
from ops.run_metrics import drop_metrics_after
from ops.utils import atomic_open, named_input_errors

logger = logging.getLogger(__name__)

CKPT, PREV_CKPT, UNCOMMITTED_CKPT = "ckpt.pth.tar", "ckpt.prev.pth.tar", "ckpt.uncommitted.pth.tar"
COMMIT_MARKER = "commit.json"


class RunState:
    """Mutable bookkeeping of one run, saved in its checkpoints (kept out of `args`, the options)."""

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


def install_signal_handlers(state):
    """SIGTERM, SIGUSR1 and a first SIGINT (Ctrl-C): checkpoint at the next step boundary, exit 75.
    A second SIGINT interrupts at once. DataLoader workers ignore both (ops.dataset.worker_init_fn)."""
    def handler(signum, frame):
        if signum == signal.SIGINT and state.stop_signal == "SIGINT":
            raise KeyboardInterrupt
        state.stop_signal = signal.Signals(signum).name
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(sig, handler)


def write_commit_marker(run_dir, state, world_size):
    """commit.json: the save that every modality rank wrote (mutual learning, after the barrier)."""
    with atomic_open(os.path.join(run_dir, COMMIT_MARKER)) as f:
        json.dump({"save_seq": state.saves, "global_step": state.global_step, "epoch": state.epoch,
                   "val_pending": state.val_pending, "step_in_epoch": state.step_in_epoch,
                   "world_size": world_size}, f, indent=2)


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


def resolve_resume(resume, modalities, ctx, run_dir, writes):
    """The checkpoint this rank resumes from ('' for a fresh start). resume: --resume; modalities: the
    modality of each modality rank; writes: this rank may set files of run_dir aside.

    --resume PATH: that file. --resume auto: the run's latest checkpoint; with mutual learning, the newest
    checkpoint set that every modality rank holds (each keeps its previous file, and the ranks compare
    save counts), so that the ranks always resume at the same point and exchange logits of the same
    videos. A set that not every rank wrote (a rank died between the writes) is set aside
    (ckpt.uncommitted.pth.tar); ranks without any common set refuse, naming each rank's position."""
    if resume != "auto":
        return resume
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
    step = choose_common_checkpoint({modalities[m] + f" (rank {m})": held
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
    "tin_shift_div": "--tin_shift_div", "consensus_type": "--consensus_type", "input_size": "--input_size",
    "heads": "--heads (label heads)"}


def check_resume_config(ckpt, config, path):
    """Refuse to resume a checkpoint of another model (a raw size mismatch, or worse, a silent load)."""
    saved = ckpt.get("config")
    if not isinstance(saved, dict):
        return
    bad = []
    for key, option in RESUME_MUST_MATCH.items():
        if key in ("shift_div", "shift_place") and not (saved.get("is_shift") or config.get("is_shift")):
            continue
        if key == "tin_shift_div" and "tin" not in (saved.get("temporal_module"), config.get("temporal_module")):
            continue
        if (key in saved or key == "heads") and saved.get(key) != config.get(key):
            bad.append(f"{option}: the checkpoint has {saved.get(key)!r}, this command {config.get(key)!r}")
    if bad:
        raise SystemExit(f"--resume {path} holds another model: " + "; ".join(bad) +
                         ". Resume with the run's own settings (its args.json), or start a new run.")


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
