"""Multimodal distillation: a frozen ensemble of per-modality teachers taught to one student.

Follows Radevski et al., "Multimodal Distillation for Egocentric Action Recognition" (ICCV 2023):

* the teacher ensemble is a weighted average of teacher LOGITS (not probabilities); the weights are
  uniform, fixed by the user, or a softmin of each teacher's cross-entropy (per dataset or per sample);
* the loss is ``gt_weight * CE(z_s, y) + distill_weight * T^2 * KL(softmax(z_t/T) || softmax(z_s/T))``,
  batch mean; the defaults (T = 1, distill_weight 1, gt_weight 0) are the paper's "patient" setting,
  where the student learns from the teachers' soft targets only and sees the same views as they do.

Two teacher sources:

* :class:`TeacherEnsemble` runs frozen teacher models on the same augmented views as the student
  (view-consistent, as in the paper);
* :class:`TeacherScores` reads logits precomputed by ``test_models.py --save_scores``: one score per
  video (averaged over the test views), so it is NOT view-consistent: the student's random crop and
  frames differ from what the teacher saw. Cheaper, and a weaker form of distillation.
"""
import logging
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ops.scores import load_scores

logger = logging.getLogger(__name__)

TEACHER_WEIGHTINGS = ('uniform', 'softmin_dataset', 'softmin_sample')


def _check_positive(name, value):
    if not value > 0:
        raise ValueError(f'{name} must be > 0, got {value}')


def stack_teachers(teacher_logits):
    """List of K (B, C) tensors, or a (K, B, C) tensor -> (K, B, C) tensor."""
    if isinstance(teacher_logits, torch.Tensor):
        stacked = teacher_logits
    else:
        teacher_logits = list(teacher_logits)
        if not teacher_logits:
            raise ValueError('need at least one teacher')
        shapes = {tuple(z.shape) for z in teacher_logits}
        if len(shapes) != 1:
            raise ValueError(f'teacher logits must all have the same (B, C) shape, got {sorted(shapes)}')
        stacked = torch.stack(teacher_logits)
    if stacked.dim() != 3 or stacked.shape[0] == 0:
        raise ValueError(f'teacher logits must be (K, B, C) with K >= 1, got shape {tuple(stacked.shape)}')
    return stacked


def teacher_cross_entropy(teacher_logits, labels):
    """Per-teacher, per-sample cross-entropy in fp32: (K, B, C) logits, (B,) labels -> (K, B).

    Accumulate its mean over a held-out set to get the input of :func:`dataset_softmin_weights`.
    """
    z = stack_teachers(teacher_logits).detach().float()
    k, b, c = z.shape
    if labels.shape != (b,):
        raise ValueError(f'labels must have shape ({b},), got {tuple(labels.shape)}')
    # (K*B, C) against the labels repeated once per teacher.
    ce = F.cross_entropy(z.reshape(k * b, c), labels.repeat(k), reduction='none')
    return ce.view(k, b)


def softmin(ce, temperature=1.0, dim=0):
    """softmax(-ce / temperature) along dim: lower CE -> higher weight; sums to 1.

    temperature -> inf gives uniform weights, temperature -> 0 one-hot on the lowest CE (ties split).
    """
    _check_positive('softmin temperature', temperature)
    return torch.softmax(-ce.float() / temperature, dim=dim)


def dataset_softmin_weights(ce_per_teacher, temperature=1.0):
    """Per-dataset teacher weights from each teacher's mean CE over a dataset: (K,) -> (K,) summing to 1.

    Computed once before training (the paper uses training samples held out from the teachers'
    training), then passed to :func:`combine_teachers` as ``fixed_weights`` with
    ``weighting='softmin_dataset'``.
    """
    ce = torch.as_tensor(ce_per_teacher, dtype=torch.float32)
    if ce.dim() != 1 or ce.numel() == 0:
        raise ValueError(f'ce_per_teacher must be a non-empty 1-D tensor (K,), got shape {tuple(ce.shape)}')
    if not torch.isfinite(ce).all():
        raise ValueError(f'ce_per_teacher must be finite, got {ce.tolist()}')
    return softmin(ce, temperature, dim=0)


def _normalise_fixed(fixed_weights, k):
    w = torch.as_tensor(fixed_weights, dtype=torch.float32).flatten()
    if w.numel() != k:
        raise ValueError(f'got {w.numel()} teacher weights for {k} teachers')
    if (w < 0).any() or not torch.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f'teacher weights must be finite, >= 0 and not all 0, got {w.tolist()}')
    return w / w.sum()


def teacher_weights(teacher_logits, labels=None, weighting='uniform', fixed_weights=None, temperature=1.0):
    """Weight of each teacher for each sample: -> fp32 tensor (K, B) whose columns sum to 1.

    weighting:
      'uniform'          1/K, or ``fixed_weights`` (K,) normalised to sum 1 when given;
      'softmin_dataset'  ``fixed_weights`` is required: the (K,) output of :func:`dataset_softmin_weights`
                         (normalised again, so raw per-dataset weights work too);
      'softmin_sample'   softmin over teachers of each teacher's CE on that sample (needs ``labels``;
                         ``temperature`` is the softmin temperature, not the distillation one).
    """
    z = stack_teachers(teacher_logits)
    k, b, _ = z.shape
    if weighting == 'uniform':
        w = torch.full((k,), 1.0 / k) if fixed_weights is None else _normalise_fixed(fixed_weights, k)
        return w.to(z.device).unsqueeze(1).expand(k, b)
    if weighting == 'softmin_dataset':
        if fixed_weights is None:
            raise ValueError("weighting='softmin_dataset' needs fixed_weights: compute them once with "
                             'dataset_softmin_weights(mean CE per teacher, temperature)')
        return _normalise_fixed(fixed_weights, k).to(z.device).unsqueeze(1).expand(k, b)
    if weighting == 'softmin_sample':
        if labels is None:
            raise ValueError("weighting='softmin_sample' needs the labels")
        if fixed_weights is not None:
            raise ValueError("weighting='softmin_sample' computes its own weights; do not pass fixed_weights")
        return softmin(teacher_cross_entropy(z, labels), temperature, dim=0)
    raise ValueError(f'unknown teacher weighting {weighting!r}; choose one of {TEACHER_WEIGHTINGS}')


def combine_teachers(teacher_logits, labels=None, weighting='uniform', fixed_weights=None, temperature=1.0):
    """Ensemble logits (B, C), fp32: sum_k w_k * z_k over teacher LOGITS (see :func:`teacher_weights`)."""
    z = stack_teachers(teacher_logits).detach()
    w = teacher_weights(z, labels, weighting, fixed_weights, temperature)  # (K, B)
    return (w.unsqueeze(-1) * z.float()).sum(0)


def kd_loss(student_logits, teacher_logits, temperature=1.0):
    """T^2 * KL(softmax(z_t/T) || softmax(z_s/T)): summed over classes, mean over the batch.

    Computed in fp32 whatever the input dtype (bf16/fp16 logits under autocast); the teacher is
    detached. Both inputs are (B, C). Invariant to adding a constant to a row of either input.
    """
    _check_positive('distillation temperature', temperature)
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(f'student and teacher logits must both be (B, C), got {tuple(student_logits.shape)} '
                         f'and {tuple(teacher_logits.shape)}')
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(1).mean()
    return temperature * temperature * kl


def distill_loss(student_logits, teacher_logits, labels, *, temperature=1.0, distill_weight=1.0, gt_weight=0.0,
                 ce_fn=F.cross_entropy, kd_fn=kd_loss):
    """Student loss -> (total, ce_term, kd_term), all fp32 scalars.

    total = gt_weight * CE(z_s, y) + distill_weight * kd_loss(z_s, z_t, T). ce_term and kd_term are the
    UNWEIGHTED terms, for logging (both always computed). A term whose weight is 0 is left out of the
    total, so distill_weight=0 gives exactly gt_weight * CE and gt_weight=0 makes the gradient
    independent of the labels. Defaults are the paper's patient setting (T=1, soft targets only).
    ce_fn(logits, labels) and kd_fn(student, teacher, temperature=T) compute the two terms (multi-head
    models pass their per-head means, ops.heads.per_head).
    """
    if distill_weight < 0 or gt_weight < 0 or distill_weight + gt_weight <= 0:
        raise ValueError(f'distill_weight and gt_weight must be >= 0 and not both 0, '
                         f'got {distill_weight} and {gt_weight}')
    ce_term = ce_fn(student_logits.float(), labels)
    kd_term = kd_fn(student_logits, teacher_logits, temperature=temperature)
    total = None
    if gt_weight:
        total = gt_weight * ce_term
    if distill_weight:
        weighted_kd = distill_weight * kd_term
        total = weighted_kd if total is None else total + weighted_kd
    return total, ce_term, kd_term


class TeacherEnsemble(nn.Module):
    """K frozen teachers, each reading one modality; always in eval mode, never trained.

    forward(inputs) takes a dict modality -> input tensor (e.g. 'RGB' -> (B, T*3, H, W),
    'Flow' -> (B, T*10, H, W)) and returns the teachers' logits stacked as (K, B, C), under no_grad.
    Keep it outside the student module (not a submodule, not wrapped in DDP), so its weights stay out
    of the student's checkpoint and optimizer.
    """

    def __init__(self, teachers, modalities):
        super().__init__()
        teachers, modalities = list(teachers), tuple(modalities)
        if not teachers:
            raise ValueError('need at least one teacher')
        if len(teachers) != len(modalities):
            raise ValueError(f'got {len(teachers)} teachers but {len(modalities)} modalities')
        self.teachers = nn.ModuleList(teachers)
        self.modalities = modalities
        for p in self.teachers.parameters():
            p.requires_grad_(False)
        self.train(False)

    @property
    def required_modalities(self):
        """Modalities the data loader must provide, unique, in teacher order."""
        return tuple(dict.fromkeys(self.modalities))

    def train(self, mode=True):
        # The student's model.train() must not switch the teachers' BN and dropout to training.
        return super().train(False)

    def forward(self, inputs):
        if not isinstance(inputs, Mapping):
            raise TypeError(f'TeacherEnsemble takes a dict modality -> tensor, got {type(inputs).__name__}')
        missing = [m for m in self.required_modalities if m not in inputs]
        if missing:
            raise KeyError(f'teacher inputs lack modalities {missing}; got {sorted(inputs)}')
        with torch.no_grad():
            logits = [teacher(inputs[m]) for teacher, m in zip(self.teachers, self.modalities)]
            shapes = {tuple(z.shape) for z in logits}
            if len(shapes) != 1:
                raise ValueError(f'teachers returned logits of different shapes {sorted(shapes)}: '
                                 'do they share num_class?')
            return torch.stack(logits)


def load_teachers(paths, device='cpu', *, config_overrides=None):
    """Build a :class:`TeacherEnsemble` from this project's checkpoints (each carries its TSN config).

    paths: sequence of checkpoint files (or one comma-separated string, as given to --distill_from).
    config_overrides: dict merged into every teacher's config before TSN.from_config(config); defaults to
    {'pretrain': None, 'print_spec': False}: building a teacher must not fetch ImageNet weights it is
    about to overwrite (nor read an ILA teacher's CLIP file recorded at training), nor print.
    The state dict is loaded strictly: a teacher must match its config exactly.
    Returns the ensemble on ``device``; ``ensemble.configs`` holds the configs used.
    """
    from ops.checkpoint import load_checkpoint, upgrade_config, without_pretrained
    from ops.models import TSN

    if isinstance(paths, str):
        paths = [p for p in paths.split(',') if p]
    paths = list(paths)
    if not paths:
        raise ValueError('no teacher checkpoints given')
    overrides = {'pretrain': None, 'print_spec': False} if config_overrides is None else dict(config_overrides)

    teachers, modalities, configs = [], [], []
    for path in paths:
        try:
            checkpoint = load_checkpoint(path)
        except Exception as exc:
            raise RuntimeError(f'cannot load teacher checkpoint {path}: {exc}') from exc
        if not isinstance(checkpoint, Mapping) or not checkpoint.get('config'):
            raise ValueError(f"teacher checkpoint {path} has no 'config' (the TSN keyword arguments); "
                             'only checkpoints saved by this project can be teachers')
        if 'state_dict' not in checkpoint:
            raise ValueError(f"teacher checkpoint {path} has no 'state_dict'")
        config = {**without_pretrained(upgrade_config(checkpoint['config'])), **overrides}
        if 'modality' not in config:
            raise ValueError(f"teacher checkpoint {path}: config has no 'modality'")
        try:
            model = TSN.from_config(config)
            model.load_state_dict(checkpoint['state_dict'], strict=True)
        except Exception as exc:
            raise RuntimeError(f'cannot build teacher from {path}: {exc}') from exc
        teachers.append(model)
        modalities.append(config['modality'])
        configs.append(config)
        logger.info('teacher %s: modality %s, %s classes', path, config['modality'], config.get('num_class'))

    for key in ('num_class', 'num_segments', 'heads'):
        values = {str(c.get(key)) for c in configs}
        if len(values) != 1:
            raise ValueError(f'teachers disagree on {key}: ' +
                             ', '.join(f'{p}: {c.get(key)}' for p, c in zip(paths, configs)))
    ensemble = TeacherEnsemble(teachers, modalities).to(device)
    ensemble.configs = configs
    return ensemble


class TeacherScores:
    """Teacher logits precomputed by ``test_models.py --save_scores``, looked up by video id.

    The .npz holds ``scores`` (videos, views, classes) logits, ``labels`` (videos,), ``video_ids``
    (videos,) strings and ``protocol`` (a string describing the test views). Views are averaged, giving
    one logit vector per video: NOT view-consistent with the student's augmented training views.
    """

    def __init__(self, path):
        self.path = str(path)
        data = load_scores(self.path)
        scores, labels, self.video_ids = data['scores'], data['labels'], data['video_ids']
        self.index = {v: i for i, v in enumerate(self.video_ids)}
        if len(self.index) != len(self.video_ids):
            raise ValueError(f'teacher scores {self.path}: duplicate video ids')
        self.logits = torch.from_numpy(scores.astype(np.float32).mean(axis=1))  # (videos, C)
        self.labels = torch.from_numpy(labels.astype(np.int64))    # (videos,) or (videos, heads)
        self.protocol = data['protocol']
        self.heads = data['heads']          # multi-head layout of the teacher (ops/heads.py) or None

    def __len__(self):
        return len(self.video_ids)

    @property
    def num_class(self):
        return self.logits.shape[1]

    def lookup(self, video_ids, labels=None, device=None):
        """Batch of video ids -> (B, C) fp32 logits averaged over views.

        With ``labels`` (B,), also checks that the stored labels agree (a wrong list file shows up here).
        """
        video_ids = [video_ids] if isinstance(video_ids, str) else list(video_ids)
        rows = []
        for v in video_ids:
            row = self.index.get(str(v))
            if row is None:
                raise KeyError(f'teacher scores {self.path} have no entry for video {v!r} '
                               f'({len(self)} videos stored; were they computed on this train list?)')
            rows.append(row)
        rows = torch.tensor(rows, dtype=torch.long)
        if labels is not None:
            stored, given = self.labels[rows], torch.as_tensor(labels).cpu().long()
            bad = (stored != given).reshape(len(rows), -1).any(1).nonzero().flatten()   # multi-head: any head
            if len(bad):
                i = int(bad[0])
                raise ValueError(f'teacher scores {self.path}: video {video_ids[i]!r} has label '
                                 f'{stored[i].tolist()} there but {given[i].tolist()} in the data')
        logits = self.logits[rows]
        return logits if device is None else logits.to(device)
