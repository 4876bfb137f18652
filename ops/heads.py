"""Multi-head labels (EPIC-Kitchens verb/noun): several labels per video, one classifier per head.

A head layout is a tuple of (name, num_class) pairs, e.g. (('verb', 97), ('noun', 300)), from
``--heads verb:97,noun:300`` or a dataset registry entry. A multi-head model returns the heads' logits
side by side, (B, sum of num_class) in head order, so everything that averages, gathers or stores logits
(consensus, views, processes, score files) carries them unchanged; what depends on the class
distribution (softmax, cross-entropy, distillation, top-k) splits them with split_heads first.
Labels of a multi-head batch are (B, H) integers, column h for head h. Single-head code paths do not
come here (heads None).

The action of a video (EPIC-Kitchens: verb and noun) is right when every head is right.
"""
import re
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ops.utils import topk_correct

Heads = Tuple[Tuple[str, int], ...]
_NAME = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')


def check_heads(heads, what: str = 'heads') -> Heads:
    """Normalise [(name, size), ...] (or [[name, size]], as a checkpoint config stores it) to a tuple;
    at least two heads, unique identifier names, sizes >= 1."""
    out = tuple((str(n), int(s)) for n, s in heads)
    names = [n for n, _ in out]
    bad = [n for n in names if not _NAME.match(n)]
    if bad:
        raise ValueError(f'{what}: head names must be identifiers (letters, digits, _), got {bad}')
    if len(set(names)) != len(names):
        raise ValueError(f'{what}: repeated head names in {heads_text(out)}')
    if len(out) < 2:
        raise ValueError(f'{what}: a multi-head layout needs at least two heads, got {heads_text(out)!r} '
                         '(one head is the ordinary single-label list)')
    small = [n for n, s in out if s < 1]
    if small:
        raise ValueError(f'{what}: every head needs >= 1 class ({", ".join(small)})')
    return out


def parse_heads(text: str, option: str = '--heads') -> Heads:
    """'verb:97,noun:300' -> (('verb', 97), ('noun', 300))."""
    pairs = []
    for part in (p.strip() for p in text.split(',') if p.strip()):
        name, sep, size = part.partition(':')
        if not sep or not size.strip().isdigit():
            raise ValueError(f'{option}: expected name:classes pairs such as verb:97,noun:300, got {part!r}')
        pairs.append((name.strip(), int(size)))
    return check_heads(pairs, option)


def heads_text(heads: Optional[Sequence]) -> str:
    """(('verb', 97), ('noun', 300)) -> 'verb:97,noun:300'; None -> 'one head' (single-label)."""
    return 'one head' if not heads else ','.join(f'{n}:{s}' for n, s in heads)


def same_heads(a, b) -> bool:
    """Whether two layouts (None for single-head) are the same, as stored or as tuples."""
    norm = (lambda h: None if not h else tuple((str(n), int(s)) for n, s in h))
    return norm(a) == norm(b)


def check_same_heads(student, teacher, student_what: str, teacher_what: str) -> None:
    """Distillation, mutual learning and ensembles need one head layout; else ValueError naming both."""
    if not same_heads(student, teacher):
        raise ValueError(f'{teacher_what} has heads {heads_text(teacher)} but {student_what} has '
                         f'{heads_text(student)}: they must have the same heads')


def parse_head_weights(text: Optional[str], heads: Heads, option: str = '--head_weights') -> Tuple[float, ...]:
    """Comma floats, one per head (None: all 1); each >= 0, not all 0."""
    if text is None:
        return (1.0,) * len(heads)
    try:
        weights = tuple(float(w) for w in text.split(','))
    except ValueError:
        raise ValueError(f'{option}: cannot parse {text!r} (comma floats, one per head)') from None
    if len(weights) != len(heads):
        raise ValueError(f'{option}: {len(weights)} weights for the {len(heads)} heads {heads_text(heads)}')
    if any(w < 0 for w in weights) or not any(weights):
        raise ValueError(f'{option}: weights must be >= 0 and not all 0, got {text!r}')
    return weights


def split_heads(x, heads: Heads):
    """Per-head parts of a multi-head tensor: integer labels (..., H) -> their columns; float logits,
    probabilities or soft targets (..., sum of sizes) -> consecutive slices of the last dim. None ->
    None for every head (an absent term)."""
    if x is None:
        return [None] * len(heads)
    if not torch.is_floating_point(x):
        if x.shape[-1] != len(heads):
            raise ValueError(f'labels of {len(heads)} heads must be (..., {len(heads)}), got {tuple(x.shape)}')
        return [x[..., h] for h in range(len(heads))]
    sizes = [s for _, s in heads]
    if x.shape[-1] != sum(sizes):
        raise ValueError(f'heads {heads_text(heads)} need {sum(sizes)} columns, got {tuple(x.shape)}')
    return list(torch.split(x, sizes, dim=-1))


def weighted_mean(values, weights):
    """sum_h w_h v_h / H', H' the number of heads of weight > 0 (the multimodal-distillation paper's
    code: weighted terms averaged over the heads it trains); a head of weight 0 is left out, so its term
    may be anything. Equal weights 1 give the plain mean."""
    active = sum(1 for w in weights if w)
    return sum(float(w) / active * v for v, w in zip(values, weights) if w)


def per_head(fn, heads: Heads, weights=None):
    """fn applied to every head's part of its tensor arguments (split_heads), combined by weighted_mean:
    per_head(F.cross_entropy, heads, w)(logits, labels) is the multi-head loss, sum_h w_h CE_h / H
    (labels (B, H), or soft targets (B, sum of sizes) made per head). A tuple
    result is combined element by element. Keyword arguments go to fn unchanged."""
    weights = tuple(weights) if weights else (1.0,) * len(heads)

    def apply(*tensors, **kwargs):
        outs = [fn(*parts, **kwargs) for parts in zip(*(split_heads(t, heads) for t in tensors))]
        if isinstance(outs[0], tuple):
            return tuple(weighted_mean(list(o), weights) for o in zip(*outs))
        return weighted_mean(outs, weights)
    return apply


def soft_targets(make, labels, heads: Heads):
    """Soft targets of every head side by side: make(head labels (B,), head size) -> (B, size)."""
    return torch.cat([make(y, size) for y, (_, size) in zip(split_heads(labels, heads), heads)], dim=1)


def action_topk_correct(logits, labels, heads: Heads, ks=(1, 5)):
    """Videos whose label tuple is among the k best actions, for each k. An action's score is the sum of
    its heads' log-softmax (the product of the heads' probabilities, as EPIC-Kitchens scores actions), so
    the best action is every head's best class and top-1 means "every head right". Exact with pruning:
    a combination in the overall top k has its first heads' part in their top k."""
    maxk = max(ks)
    score = match = None
    for z, y in zip(split_heads(logits.float(), heads), split_heads(labels, heads)):
        value, index = F.log_softmax(z, dim=-1).topk(min(maxk, z.shape[-1]), dim=-1)     # (B, k)
        hit = index == y.view(-1, 1)
        if score is None:
            score, match = value, hit
        else:                                            # (B, k_prev * k): every pair of the two lists
            score = (score.unsqueeze(2) + value.unsqueeze(1)).flatten(1)
            match = (match.unsqueeze(2) & hit.unsqueeze(1)).flatten(1)
            score, order = score.topk(min(maxk, score.shape[1]), dim=-1)
            match = match.gather(1, order)
    return [int(match[:, :k].any(dim=1).sum()) for k in ks]


def correct_counts(logits, labels, heads: Optional[Heads]):
    """Correct counts of a batch, {'top1', 'top5'} and, with heads, '<head>_top1' / '<head>_top5' per
    head; 'top1' / 'top5' are then the action's (action_topk_correct)."""
    if not heads:
        c1, c5 = topk_correct(logits, labels)
        return {'top1': c1, 'top5': c5}
    c1, c5 = action_topk_correct(logits, labels, heads)
    out = {'top1': c1, 'top5': c5}
    for (name, _), z, y in zip(heads, split_heads(logits, heads), split_heads(labels, heads)):
        out[f'{name}_top1'], out[f'{name}_top5'] = topk_correct(z, y)
    return out


def head_metrics(scores, labels, heads: Heads, metrics_fn):
    """Evaluation metrics per head and of the action: scores (N, sum of sizes), labels (N, H).

    metrics_fn(scores (N, C), labels (N,), num_class) -> (dict, confusion matrix), the single-head
    evaluation (ops.scores.metrics). Returns ({'top1', 'top5' (the action's), 'action_top1',
    'action_top5', 'heads': {name: dict}, 'num_videos'}, {name: confusion matrix}); 'top1' is the action
    accuracy so that callers that rank runs by top-1 rank multi-head runs by what EPIC-Kitchens reports.
    Scores may be logits or probabilities (action_topk_correct takes a log-softmax of each head)."""
    scores_t = torch.as_tensor(np.asarray(scores, dtype=np.float32))
    labels_t = torch.as_tensor(np.asarray(labels, dtype=np.int64)).reshape(-1, len(heads))
    per_head, cms = {}, {}
    for (name, size), z, y in zip(heads, split_heads(scores_t, heads), split_heads(labels_t, heads)):
        per_head[name], cms[name] = metrics_fn(z.numpy(), y.numpy(), size)
    n = len(labels_t)
    c1, c5 = action_topk_correct(scores_t, labels_t, heads)
    action1, action5 = 100.0 * c1 / max(n, 1), 100.0 * c5 / max(n, 1)
    return {'top1': action1, 'top5': action5, 'action_top1': action1, 'action_top5': action5,
            'heads': per_head, 'num_videos': int(n)}, cms


def metrics_line(res, heads: Heads) -> str:
    """'verb Prec@1 .. Prec@5 ..; noun ...; action Prec@1 ..' for the evaluation summary line."""
    parts = []
    for n, _ in heads:
        r = res['heads'][n]
        parts.append(f"{n} Prec@1 {r['top1']:.2f}%" + (f" Prec@5 {r['top5']:.2f}%" if 'top5' in r else '')
                     + (f" ECE {r['ece']:.2f}%" if r.get('ece') is not None else ''))
    return '; '.join(parts + [f"action (all heads right) Prec@1 {res['action_top1']:.2f}% "
                              f"Prec@5 {res['action_top5']:.2f}%"])


def head_file(path: str, head: str) -> str:
    """Per-head output name: 'out/per_class.csv' -> 'out/per_class_verb.csv'."""
    stem, ext = path.rsplit('.', 1) if '.' in path.rsplit('/', 1)[-1] else (path, '')
    return f'{stem}_{head}.{ext}' if ext else f'{stem}_{head}'
