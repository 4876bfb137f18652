"""Per-video score files and the metrics every evaluation prints (test_models.py, ensemble_scores.py).

A score file (npz) holds `scores` (videos x views x classes, logits), `labels`, `video_ids` (strings)
and `protocol` (a string such as '8 frames x 3 crops x 2 clips ...'). A multi-head model's file
(ops/heads.py) also holds `heads` (strings 'name:classes' in head order); its `scores` are the heads'
logits side by side (classes = their total) and `labels` is (videos, heads). Video scores are the mean of the
view logits, then optionally a softmax (TSM order), or the mean of per-view softmaxes (view_softmax);
an ensemble is the coefficient-weighted sum. Calibration (expected calibration error, 15 bins) is measured
on the probabilities of the fused scores. The writers at the end save an evaluation's report files per
label head (confusion matrix as .npy and as a figure, per-class accuracy table, reliability diagram;
figures with matplotlib, imported only when drawing) and TSM-format prediction csv.
"""
import csv
import os
import textwrap

import numpy as np
import torch
import torch.nn.functional as F

from ops.heads import heads_text, parse_heads, split_heads
from ops.utils import atomic_open, confusion_matrix, mean_class_accuracy, topk_correct


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


def reports_top5(num_class):
    """Top-5 means something only above 5 classes: with 5 or fewer every label is among the 5 best."""
    return num_class > 5


def metrics(scores, labels, num_class):
    """top-1 / top-5 / mean class accuracy (percent) and the confusion matrix. With 5 classes or fewer top-5
    is left out: every label is among the 5 best, so it would read 100 % whatever the model."""
    scores_t = torch.from_numpy(np.asarray(scores, dtype=np.float32))
    labels = np.asarray(labels, dtype=np.int64)
    n = max(len(labels), 1)
    c1, c5 = topk_correct(scores_t, torch.from_numpy(labels))
    cm = confusion_matrix(scores_t.argmax(1).numpy(), labels, num_class)
    res = {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "mean_class_acc": mean_class_accuracy(cm),
           "num_videos": int(len(labels))}
    if not reports_top5(num_class):
        del res["top5"]
    return res, cm


def format_metrics(res):
    """'Prec@1 61.20%  Prec@5 87.10%  mean class accuracy 50.00%  ECE 3.10%': the result line of the
    evaluation scripts; Prec@5 where metrics() kept it, ECE where it was measured."""
    parts = [f"Prec@1 {res['top1']:.2f}%"]
    if "top5" in res:
        parts.append(f"Prec@5 {res['top5']:.2f}%")
    parts.append(f"mean class accuracy {res['mean_class_acc']:.2f}%")
    if res.get("ece") is not None:
        parts.append(f"ECE {res['ece']:.2f}%")
    return "  ".join(parts)


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


# ---------------------------------------------------------------------------------------------- calibration
ECE_BINS = 15   # the multimodal-distillation paper's (and Guo et al.'s temperature-scaling code's) bin count


def score_probabilities(scores, coeffs, averaged, heads=None):
    """Fused video scores (fused_scores) -> class probabilities (N, C): the softmax of the fused logits, or,
    when the models' scores already were probabilities (averaged: --softmax / --view_softmax), their
    coefficient-weighted mean. What predict.py prints and what calibration() measures. heads: per head,
    side by side (ops/heads.py)."""
    scores = np.asarray(scores, dtype=np.float64)
    if heads:
        ends = np.cumsum([size for _, size in heads])[:-1]
        return np.concatenate([score_probabilities(part, coeffs, averaged)
                               for part in np.split(scores, ends, axis=1)], axis=1)
    if averaged:
        return scores / sum(coeffs)
    e = np.exp(scores - scores.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def add_calibration(res, scores, labels, coeffs, averaged, heads=None):
    """ECE of fused scores, put into metrics()/head_metrics() results: res['ece'] for one head,
    res['heads'][name]['ece'] per head. -> {head name, or None for a single head: calibration() result};
    {} when a coefficient is <= 0 (the fused scores are then no probabilities)."""
    if min(coeffs) <= 0:
        return {}
    probs = score_probabilities(scores, coeffs, averaged, heads)
    if not heads:
        cal = calibration(probs, labels)
        res["ece"] = cal["ece"]
        return {None: cal}
    ends = np.cumsum([size for _, size in heads])[:-1]
    cals = {}
    for (name, _), part, y in zip(heads, np.split(probs, ends, axis=1), np.asarray(labels).reshape(len(probs), -1).T):
        cals[name] = calibration(part, y)
        res["heads"][name]["ece"] = cals[name]["ece"]
    return cals


def calibration(probs, labels, n_bins=ECE_BINS):
    """Expected calibration error and its reliability table, as multimodal-distillation's
    src/utils/calibration.py (Naeini et al. 2015; Guo et al. 2017): confidence = the largest class
    probability, correct = that class is the label; bin b holds the confidences in (b/n, (b+1)/n] (equal
    widths, right-closed); ECE = sum_b |B_b| / N * |accuracy_b - mean confidence_b|, in percent as the paper.

    probs (N, C) class probabilities, labels (N,) -> {'ece': percent, 'bins': n_bins, 'count': (n_bins,)
    videos, 'accuracy' and 'confidence': (n_bins,) per-bin means (nan where a bin is empty)}. Call it once
    per label head."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"calibration needs (N, C) probabilities and N labels, got {probs.shape} and "
                         f"{labels.shape}")
    if len(probs) and (probs.min() < 0 or not np.allclose(probs.sum(1), 1.0, atol=1e-4)):
        raise ValueError("calibration needs class probabilities (non-negative rows that sum to 1), "
                         "not logits (see score_probabilities)")
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # side='left' puts c in bin b when edges[b] < c <= edges[b+1]; a confidence of exactly 0 (never a
    # softmax's maximum) falls in no bin, as in the reference; a rounding excess over 1 stays in the last.
    bins = np.minimum(np.searchsorted(edges, confidence, side="left") - 1, n_bins - 1)
    keep = bins >= 0
    count = np.bincount(bins[keep], minlength=n_bins)
    with np.errstate(invalid="ignore"):
        accuracy = np.bincount(bins[keep], weights=correct[keep], minlength=n_bins) / count
        mean_conf = np.bincount(bins[keep], weights=confidence[keep], minlength=n_bins) / count
    filled = count > 0
    gaps = np.abs(accuracy[filled] - mean_conf[filled]) * count[filled]
    ece = 100.0 * float(gaps.sum()) / max(len(labels), 1)
    return {"ece": ece, "bins": n_bins, "count": count, "accuracy": accuracy, "confidence": mean_conf}


# ---------------------------------------------------------------------------------------------- report files
def report_path(out_dir, filename, head=None):
    """out_dir/confusion.png for the single label head; out_dir/confusion_verb.png for head 'verb'."""
    if head:
        stem, ext = os.path.splitext(filename)
        filename = f"{stem}_{head}{ext}"
    return os.path.join(out_dir, filename)


def write_report(out_dir, cm, class_names, title, cal=None, head=None):
    """One label head's evaluation files in out_dir: confusion.npy, confusion.png, per_class.csv and, given
    calibration() results, reliability.png (named with report_path). -> the paths written."""
    paths = [report_path(out_dir, name, head) for name in ("confusion.npy", "confusion.png", "per_class.csv")]
    with atomic_open(paths[0], "wb") as f:
        np.save(f, cm)
    write_confusion_png(cm, paths[1], class_names, title)
    write_per_class(cm, paths[2], class_names)
    if cal is not None:
        paths.append(report_path(out_dir, "reliability.png", head))
        write_reliability_png(cal, paths[3], title)
    return paths


def _short(name, width):
    """name cut in the middle to `width` characters: class names often differ only at the end ('Pushing
    something from left to right' / '... right to left')."""
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return name[:head] + "\u2026" + name[len(name) - (width - 1 - head):]


def _wrapped(title, width_in, fontsize):
    """Title lines wrapped to a figure width_in inches wide (about 0.55 em per character)."""
    chars = max(24, int(width_in * 72 / (0.55 * fontsize)))
    return "\n".join(textwrap.fill(line, chars) for line in title.splitlines())


def _save_png(fig, path, tight=False):
    """Atomic PNG; tight: trim the unused part of margins that were estimated generously (one more draw)."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", bbox_inches="tight" if tight else None, pad_inches=0.15)


CM_MAX_SIDE = 16.0   # inches (100 dpi): the matrix stops growing at ~36 classes x 0.45 in; 400 classes: 4-px cells
CM_MAX_TICKS = 80    # more classes than this: every k-th is labelled, with its index
TITLE_PT = 10        # 13 on figures with a matrix over 8 in


def confusion_figure(cm, class_names=None, title=None):
    """The confusion matrix as a matplotlib Figure (no pyplot state): cell colour = the fraction of the true
    class's videos (row-normalised), the count printed in non-empty cells where it fits, class names on both
    axes (shortened; above 80 classes every k-th with its index), a colour bar and the title (wrapped). The
    size grows with the class count up to CM_MAX_SIDE."""
    from matplotlib.figure import Figure
    cm = np.asarray(cm, dtype=np.int64)
    C = cm.shape[0]
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    side = float(np.clip(0.45 * C, 3.5, CM_MAX_SIDE))            # inches per matrix side
    step = -(-C // CM_MAX_TICKS)
    ticks = list(range(0, C, step))
    if class_names:
        labels = [_short(str(class_names[i]), 28) if step == 1 else f"{i} {_short(str(class_names[i]), 18)}"
                  for i in ticks]
    else:
        labels = [str(i) for i in ticks]
    tick_pt = float(np.clip(0.7 * 72 * side / len(ticks), 4.0, 10.0))
    margin = max(len(s) for s in labels) * 0.6 * tick_pt / 72 + 0.6   # tick labels and the axis label
    width = margin + side + 1.4                                       # + colour bar and its label
    title_pt = TITLE_PT if side <= 8 else 13
    text = _wrapped(title, width, title_pt) if title else ""
    top = 0.25 + (text.count("\n") + 1) * title_pt * 1.4 / 72 if text else 0.25
    height = margin + side + top
    fig = Figure(figsize=(width, height), dpi=100)
    ax = fig.add_axes((margin / width, margin / height, side / width, side / height))
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    cax = fig.add_axes(((margin + side + 0.2) / width, margin / height, 0.2 / width, side / height))
    fig.colorbar(image, cax=cax).set_label("fraction of the true class's videos")
    ax.set_xticks(ticks, labels, rotation=90, fontsize=tick_pt)
    ax.set_yticks(ticks, labels, fontsize=tick_pt)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    cell_pt = 72 * side / C
    digits = len(str(int(cm.max(initial=0))))
    count_pt = min(11.0, 0.4 * cell_pt, 1.4 * cell_pt / digits)
    if count_pt >= 5:
        for i, j in zip(*np.nonzero(cm)):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=count_pt,
                    color="white" if norm[i, j] > 0.55 else "black")
    if text:
        fig.suptitle(text, fontsize=title_pt, y=1 - 0.12 / height, va="top")
    return fig


def write_confusion_png(cm, path, class_names=None, title=None):
    """confusion_figure() as a PNG, written atomically."""
    _save_png(confusion_figure(cm, class_names, title), path, tight=True)


def reliability_figure(cal, title=None):
    """Reliability diagram of calibration() results: per confidence bin the accuracy (bars), the gap to the
    bin's mean confidence (hatched), the diagonal of perfect calibration, the ECE, and the video count per
    bin in a panel below."""
    from matplotlib.figure import Figure
    n = cal["bins"]
    edges = np.linspace(0.0, 1.0, n + 1)
    centres, bar = (edges[:-1] + edges[1:]) / 2, 1.0 / n
    filled = cal["count"] > 0
    acc, conf = cal["accuracy"][filled], cal["confidence"][filled]
    text = _wrapped(title, 6.0, TITLE_PT) if title else ""
    top_in = 0.3 + (text.count("\n") + 1) * TITLE_PT * 1.4 / 72 if text else 0.3
    fig = Figure(figsize=(6.0, 6.6 + top_in), dpi=100)
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 1), hspace=0.08, left=0.12, right=0.96, bottom=0.08,
                            top=1 - top_in / (6.6 + top_in))
    ax = fig.add_subplot(grid[0])
    counts = fig.add_subplot(grid[1], sharex=ax)
    ax.bar(centres[filled], acc, bar, color="#4c72b0", edgecolor="black", linewidth=0.6, label="accuracy")
    ax.bar(centres[filled], conf - acc, bar, bottom=acc, color=(0.87, 0.2, 0.2, 0.15), edgecolor="#c44e52",
           hatch="//", linewidth=0.6, label="gap")
    ax.hlines(conf, centres[filled] - bar / 2, centres[filled] + bar / 2, colors="#c44e52", linewidth=1.6,
              label="mean confidence")
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.tick_params(labelbottom=False)
    # upper left: low-confidence bins rarely have tall bars
    ax.legend(loc="upper left", fontsize=8, title=f"ECE {cal['ece']:.2f}%  ({n} bins)", title_fontsize=10)
    counts.bar(centres, cal["count"], bar, color="#8c8c8c", edgecolor="black", linewidth=0.6)
    for x, c in zip(centres[filled], cal["count"][filled]):
        counts.text(x, c, str(int(c)), ha="center", va="bottom", fontsize=7)
    counts.set_ylim(0, max(int(cal["count"].max(initial=0)), 1) * 1.3)
    counts.set_ylabel("videos")
    counts.set_xlabel("confidence (largest class probability)")
    if text:
        fig.suptitle(text, fontsize=TITLE_PT, y=1 - 0.12 / (6.6 + top_in), va="top")
    return fig


def write_reliability_png(cal, path, title=None):
    """reliability_figure() as a PNG, written atomically."""
    _save_png(reliability_figure(cal, title), path)

TIMELINE_CLASSES = 10   # classes drawn per video (the tab10 colours): those top-1 in the most windows


def timeline_figure(report):
    """predict.py --window --plot: one panel per video with windows, the probability over time of the classes
    that are top-1 in some window (at most TIMELINE_CLASSES, the most frequent), a point per window at its
    centre (seconds when the video has a frame rate, else frames). A class outside a window's top-k has no
    known probability there: its line has a gap, not a zero."""
    from matplotlib.figure import Figure
    panels = [entry for entry in report if entry.get("windows")]
    fig = Figure(figsize=(8.0, 0.6 + 2.4 * max(1, len(panels))), dpi=100)
    for k, entry in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, k + 1)
        windows = entry["windows"]
        seconds = all("start_s" in w for w in windows)
        centres = [(w["start_s"] + w["end_s"]) / 2 if seconds else (w["start_frame"] + w["end_frame"]) / 2
                   for w in windows]
        wins = {}
        for w in windows:
            top = w["top"][0]
            count, name = wins.get(top["class"], (0, top["name"]))
            wins[top["class"]] = (count + 1, name)
        chosen = sorted(wins, key=lambda c: -wins[c][0])[:TIMELINE_CLASSES]
        for c in chosen:
            probs = [next((t["prob"] for t in w["top"] if t["class"] == c), np.nan) for w in windows]
            ax.plot(centres, probs, marker="o", markersize=3, linewidth=1.5, label=_short(str(wins[c][1]), 28))
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("probability")
        ax.set_xlabel("window centre, s" if seconds else "window centre, frame")
        ax.set_title(os.path.basename(str(entry["video"])), fontsize=TITLE_PT, loc="left")
        ax.grid(alpha=0.3)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.09, right=0.72, top=1 - 0.35 / fig.get_figheight(), bottom=0.5 / fig.get_figheight(),
                        hspace=0.6)
    return fig


def write_timeline_png(report, path):
    """timeline_figure() as a PNG, written atomically."""
    _save_png(timeline_figure(report), path)


def write_per_class(cm, path, class_names):
    """csv of class, name, video count and top-1 (percent) per true class of the confusion matrix."""
    with atomic_open(path, "w", newline="") as f:
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
