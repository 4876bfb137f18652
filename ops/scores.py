"""Per-video score files and the metrics every evaluation prints (test_models.py, ensemble_scores.py).

A score file (npz) holds `scores` (videos x views x classes, logits), `labels`, `video_ids` (strings)
and `protocol` (a string such as '8 frames x 3 crops x 2 clips ...'). A multi-head model's file
(ops/heads.py) also holds `heads` (strings 'name:classes' in head order); its `scores` are the heads'
logits side by side (classes = their total) and `labels` is (videos, heads). Video scores are the mean of the
view logits, then optionally a softmax (TSM order), or the mean of per-view softmaxes (view_softmax);
an ensemble is the coefficient-weighted sum. The writers at the end save an evaluation's confusion image,
per-class accuracy table and TSM-format prediction csv.
"""
import csv
import os

import numpy as np
import torch
import torch.nn.functional as F

from ops.heads import heads_text, parse_heads, split_heads
from ops.utils import confusion_matrix, mean_class_accuracy, topk_correct


def video_scores(view_logits, softmax=False, view_softmax=False, heads=None):
    """(N, V, C) per-view logits -> (N, C): mean over views, then optionally softmax (TSM); with
    view_softmax the mean of the per-view softmax probabilities (TDN/MSN pkl_to_results.py, ILA).
    heads: the softmax is taken over each head's classes."""
    if softmax and view_softmax:
        raise ValueError('softmax (after averaging) and view_softmax (before averaging) are exclusive')
    if heads and (softmax or view_softmax):
        parts = split_heads(torch.from_numpy(np.asarray(view_logits, dtype=np.float32)), heads)
        return np.concatenate([video_scores(p.numpy(), softmax, view_softmax) for p in parts], axis=-1)
    s = torch.from_numpy(np.asarray(view_logits, dtype=np.float32))
    if view_softmax:
        return F.softmax(s, dim=2).mean(1).numpy()
    s = s.mean(1)
    return (F.softmax(s, dim=1) if softmax else s).numpy()


def fuse(score_list, coeffs):
    """Coefficient-weighted sum of per-model (N, C) scores."""
    if not score_list or len(score_list) != len(coeffs):
        raise ValueError(f"{len(score_list)} score sets but {len(coeffs)} coefficients (need at least one)")
    return sum(float(c) * np.asarray(s, dtype=np.float64) for c, s in zip(coeffs, score_list))


def fused_scores(per_model, coeffs, *, softmax=False, view_softmax=False, heads=None):
    """Per-model per-view logits (N, V_m, C), aligned to one video order -> fused video scores (N, C).
    heads: multi-head models (all with these heads) are fused head by head (softmax per head).

    The one aggregation of test_models.py, predict.py and scripts/ensemble_scores.py."""
    return fuse([video_scores(lg, softmax, view_softmax, heads) for lg in per_model], coeffs)


def metrics(scores, labels, num_class):
    """top-1 / top-5 / mean class accuracy (percent) and the confusion matrix."""
    scores_t = torch.from_numpy(np.asarray(scores, dtype=np.float32))
    labels = np.asarray(labels, dtype=np.int64)
    n = max(len(labels), 1)
    c1, c5 = topk_correct(scores_t, torch.from_numpy(labels))
    cm = confusion_matrix(scores_t.argmax(1).numpy(), labels, num_class)
    return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "mean_class_acc": mean_class_accuracy(cm),
            "num_videos": int(len(labels))}, cm


def save_scores(path, video_ids, labels, view_logits, protocol, heads=None):
    """Atomic write of a score file (heads: a multi-head model's, stored as 'name:classes' strings)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.npz"
    extra = {"heads": np.array(heads_text(heads).split(","), dtype=str)} if heads else {}
    np.savez(tmp, scores=np.asarray(view_logits, dtype=np.float32), labels=np.asarray(labels, dtype=np.int64),
             video_ids=np.array(list(video_ids), dtype=str), protocol=np.array(protocol), **extra)
    os.replace(tmp, path)


def load_scores(path):
    """-> dict(scores (N,V,C), labels (N,) or (N, heads), video_ids list[str], protocol str, heads (None,
    or the multi-head layout)); clear error naming the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"score file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {"scores": z["scores"], "labels": z["labels"], "video_ids": [str(v) for v in z["video_ids"]],
                   "protocol": str(z["protocol"]),
                   "heads": parse_heads(",".join(str(h) for h in z["heads"]), f"{path}: heads") if "heads" in z
                   else None}
    except (KeyError, ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a score file written by test_models.py --save_scores ({exc})") from None
    if out["scores"].ndim != 3 or not len(out["scores"]) == len(out["labels"]) == len(out["video_ids"]):
        raise ValueError(f"{path}: scores must be (videos, views, classes) with one label and one video id "
                         "per video")
    return out


def align_to(reference_ids, video_ids, array, what):
    """Reorder `array` (indexed like video_ids) to follow reference_ids; error if the sets differ."""
    pos = {v: i for i, v in enumerate(video_ids)}
    if len(pos) != len(video_ids) or len(set(reference_ids)) != len(reference_ids):
        raise ValueError(f"{what}: repeated video ids")
    missing = [v for v in reference_ids if v not in pos]
    if missing or len(video_ids) != len(reference_ids):
        extra = sorted(set(video_ids) - set(reference_ids))[:3]
        raise ValueError(f"{what}: video ids differ (missing {missing[:3]}, extra {extra})")
    return np.asarray(array)[[pos[v] for v in reference_ids]]


def write_confusion_png(cm, path, class_names=None):
    """Row-normalised confusion matrix as an image (one cell per class pair, up to ~200 classes); up to
    30 classes, rows are labelled with their index and name."""
    from PIL import Image, ImageDraw
    C = cm.shape[0]
    rows = cm.sum(1, keepdims=True).clip(min=1)
    norm = cm / rows
    cell = max(2, min(24, 800 // max(C, 1)))
    named = bool(class_names) and C <= 30
    margin = 40
    left = margin + (6 * min(max((len(n) for n in class_names), default=0), 16) + 6 if named else 0)
    size = C * cell
    img = Image.new("RGB", (size + left + 10, size + margin + 10), "white")
    pix = (255 * (1 - norm)).astype(np.uint8)
    heat = np.stack([pix, pix, np.full_like(pix, 255)], axis=-1)           # white -> blue
    heat = np.kron(heat, np.ones((cell, cell, 1), dtype=np.uint8))
    img.paste(Image.fromarray(heat), (left, margin))
    draw = ImageDraw.Draw(img)
    draw.text((left, 5), "predicted ->", fill="black")
    draw.text((2, margin - 12), "true", fill="black")
    if C <= 30:
        for i in range(C):
            draw.text((left + i * cell + 1, margin - 12), str(i), fill="black")
            label = f"{class_names[i][:16]} {i}" if named else str(i)
            draw.text((2 if named else margin - 18, margin + i * cell + 1), label, fill="black")
    img.save(path)


def write_per_class(cm, path, class_names):
    """csv of class, name, video count and top-1 (percent) per true class of the confusion matrix."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class", "name", "count", "top1"])
        for c in range(cm.shape[0]):
            count = int(cm[c].sum())
            w.writerow([c, class_names[c] if class_names else str(c), count,
                        f"{100.0 * cm[c, c] / count:.2f}" if count else ""])


def write_tsm_csv(path, ids, scores, class_names, top5_indices):
    """TSM formats: `vid;category` lines, or `vid;i1;...;i5` (Something-Something v2 submission)."""
    with open(path, "w") as f:
        for vid, s in zip(ids, scores):
            order = np.argsort(-s)
            if top5_indices:
                f.write(vid + ";" + ";".join(str(int(i)) for i in order[:5]) + "\n")
            else:
                f.write(f"{vid};{class_names[int(order[0])] if class_names else int(order[0])}\n")
