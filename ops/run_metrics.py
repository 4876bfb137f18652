"""The metrics a training run writes: metrics.jsonl (one row per epoch and split) with its TensorBoard
scalars, the rows dropped again when a run resumes from an earlier checkpoint, and the summary of
mutual learning (mutual_summary.json)."""
import json
import logging
import os

import torch
import torch.distributed as dist

from ops.heads import check_heads, correct_counts
from ops.utils import atomic_open

logger = logging.getLogger(__name__)


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


def mutual_summary(ctx, modality, best, last_val, *, head_layout, path):
    """Every modality rank calls this; rank 0 logs per-modality best top-1 and the top-1 of the ensemble
    of all ranks' last validation logits, and writes them to `path` (mutual_summary.json)."""
    logits, labels = last_val
    parts = [None] * ctx.num_modalities
    dist.all_gather_object(parts, (modality, best, logits.numpy()), group=ctx.mutual_group)
    if not ctx.is_main:
        return
    ens = torch.from_numpy(sum(p[2] for p in parts))
    heads = check_heads(head_layout) if head_layout else None
    ens_top1 = 100.0 * correct_counts(ens, labels, heads)["top1"] / max(len(labels), 1)   # multi-head: action
    lines = ["rank  modality   best top-1"]
    lines += [f"{r:<5} {m:<10} {b:6.2f}" for r, (m, b, _) in enumerate(parts)]
    lines.append(f"ensemble of {len(parts)} ranks (sum of last validation logits): top-1 {ens_top1:.2f}")
    logger.info("mutual learning summary\n%s", "\n".join(lines))
    with open(path, "w") as f:
        json.dump({"ranks": [{"modality": m, "best_top1": b} for m, b, _ in parts],
                   "ensemble_top1": ens_top1}, f, indent=2)
