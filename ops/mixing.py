"""Mixup / CutMix on training batches and label-smoothed soft targets (the ILA / X-CLIP recipe).

One draw per batch, as X-CLIP's CutmixMixupBlending (datasets/blending.py, used by ILA's main.py):
with probability switch_prob CutMix, else Mixup (when both are enabled); lam ~ Beta(alpha, alpha); the
batch is paired with a random permutation of itself. CutMix pastes the partner's box (the same box in
every frame and channel) and sets lam to the kept area; targets are lam * y + (1 - lam) * y[perm],
with y the label-smoothed one-hot (on = 1 - s + s/K, off = s/K). The loss is the soft-target cross
entropy, F.cross_entropy(logits, targets) with (B, K) probabilities (timm's SoftTargetCrossEntropy;
with s > 0 and no mixing it equals timm's LabelSmoothingCrossEntropy).

Every random number comes from batch_rng(seed, epoch, step): a pure function of the run's seed and the
position in the schedule (and the data-parallel replica), so the modality ranks of mutual learning (and the teachers of a distillation
run, which see the student's batch) mix the same videos with the same lam and box, and a resumed run
draws what the uninterrupted run drew.
"""
import dataclasses
from typing import Mapping, Optional, Tuple, Union

import numpy as np
import torch

from ops.heads import soft_targets

MIX_STREAM = 0x4D4958  # separates the batch-mixing stream from the per-sample streams (sample_rng)


def batch_rng(seed: int, epoch: int, step: int, replica: int = 0) -> np.random.Generator:
    """The generator of one training batch's mixing draws. `replica`: the data-parallel replica index
    (replicas see different videos and draw independently; the modality ranks of one replica agree)."""
    return np.random.default_rng([int(seed), int(epoch), int(step), int(replica), MIX_STREAM])


@dataclasses.dataclass(frozen=True)
class MixParams:
    kind: str                                   # 'mixup' or 'cutmix'
    lam: float                                  # weight of the original sample (cutmix: kept area)
    perm: Tuple[int, ...]                       # partner of each sample
    box: Optional[Tuple[int, int, int, int]]    # cutmix (x1, y1, x2, y2), pixels, end exclusive


def cutmix_box(lam: float, height: int, width: int, cx: int, cy: int) -> Tuple[int, int, int, int]:
    """X-CLIP's rand_bbox: a (W sqrt(1-lam)) x (H sqrt(1-lam)) box centred on (cx, cy), clipped."""
    cut = float(np.sqrt(1.0 - lam))
    cut_w, cut_h = int(width * cut), int(height * cut)
    x1, x2 = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
    y1, y2 = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
    return int(x1), int(y1), int(x2), int(y2)


def draw_mix(rng: np.random.Generator, batch_size: int, height: int, width: int, *, mixup: float,
             cutmix: float, switch_prob: float) -> Optional[MixParams]:
    """One batch's mixing parameters, or None when both alphas are 0.

    Draw order: switch uniform (only when both are enabled), lam, permutation, then the box centre."""
    if mixup <= 0 and cutmix <= 0:
        return None
    if mixup > 0 and cutmix > 0:
        use_cutmix = rng.random() < switch_prob
    else:
        use_cutmix = cutmix > 0
    alpha = cutmix if use_cutmix else mixup
    lam = float(rng.beta(alpha, alpha))
    perm = tuple(int(i) for i in rng.permutation(batch_size))
    if not use_cutmix:
        return MixParams('mixup', lam, perm, None)
    cx, cy = int(rng.integers(width)), int(rng.integers(height))
    box = cutmix_box(lam, height, width, cx, cy)
    x1, y1, x2, y2 = box
    kept = 1.0 - (x2 - x1) * (y2 - y1) / float(width * height)
    return MixParams('cutmix', kept, perm, box)


def apply_mix(x: torch.Tensor, params: MixParams) -> torch.Tensor:
    """Mix a batch (B, ..., H, W) (any number of frames/channels in between); returns a new tensor."""
    perm = torch.as_tensor(params.perm, device=x.device)
    if params.kind == 'mixup':
        return params.lam * x + (1.0 - params.lam) * x[perm]
    x1, y1, x2, y2 = params.box
    out = x.clone()
    out[..., y1:y2, x1:x2] = x[..., y1:y2, x1:x2][perm]     # gathers the box only, not the whole batch
    return out


def mix_inputs(clips: Union[torch.Tensor, Mapping[str, torch.Tensor]], params: Optional[MixParams]):
    """apply_mix on a batch or on every modality of a {modality: batch} dict (same pairs, lam and box)."""
    if params is None:
        return clips
    if isinstance(clips, Mapping):
        return {k: apply_mix(v, params) for k, v in clips.items()}
    return apply_mix(clips, params)


def spatial_size(clips) -> Tuple[int, int]:
    """(H, W) shared by every modality of a batch; a clear error when they differ (no common box)."""
    tensors = list(clips.values()) if isinstance(clips, Mapping) else [clips]
    sizes = {tuple(t.shape[-2:]) for t in tensors}
    if len(sizes) != 1:
        raise ValueError(f'mixing needs one spatial size for every modality of the batch, got {sorted(sizes)}')
    return sizes.pop()


def smooth_one_hot(labels: torch.Tensor, num_class: int, smoothing: float = 0.0) -> torch.Tensor:
    """(B,) int labels -> (B, K) targets: 1 - s + s/K on the label, s/K elsewhere."""
    off = smoothing / num_class
    out = torch.full((labels.shape[0], num_class), off, dtype=torch.float32, device=labels.device)
    return out.scatter_(1, labels.view(-1, 1), 1.0 - smoothing + off)


def mix_targets(targets: torch.Tensor, params: Optional[MixParams]) -> torch.Tensor:
    """lam * y + (1 - lam) * y[perm] for (B, K) soft targets."""
    if params is None:
        return targets
    perm = torch.as_tensor(params.perm, device=targets.device)
    return params.lam * targets + (1.0 - params.lam) * targets[perm]


def mix_batch(clips, labels: torch.Tensor, num_class: int, *, seed: int, epoch: int, step: int, replica: int = 0,
              mixup: float = 0.0, cutmix: float = 0.0, switch_prob: float = 0.5, smoothing: float = 0.0,
              heads=None):
    """A training batch -> (clips, targets): targets is None (use the hard labels) when smoothing, mixup
    and cutmix are all off, else (B, K) soft targets for F.cross_entropy; clips (a tensor or a
    {modality: tensor} dict) are mixed with one draw from batch_rng(seed, epoch, step, replica).
    heads (ops/heads.py): labels (B, H); each head's targets are smoothed over its own classes and the
    targets are the heads' side by side, (B, num_class)."""
    if smoothing <= 0 and mixup <= 0 and cutmix <= 0:
        return clips, None
    params = None
    if mixup > 0 or cutmix > 0:
        height, width = spatial_size(clips)
        params = draw_mix(batch_rng(seed, epoch, step, replica), labels.shape[0], height, width,
                          mixup=mixup, cutmix=cutmix, switch_prob=switch_prob)
    if heads:
        targets = soft_targets(lambda y, size: smooth_one_hot(y, size, smoothing), labels, heads)
    else:
        targets = smooth_one_hot(labels, num_class, smoothing)
    targets = mix_targets(targets, params)
    return mix_inputs(clips, params), targets
