"""The learning-rate schedule of training: built once from the options, queried at fractional epochs.

Decay: step (x0.1 at each milestone epoch), cos or linear down to ``base_lr * min_lr_ratio``, evaluated at
the epoch start (``update='epoch'``, TSM's adjust_learning_rate) or at every step (``'step'``: mmcv, timm,
HF). Cos/linear progress counts from the end of the warm-up (``decay_from='warmup_end'``: TSM forks, TIN)
or from step 0 (``'start'``: mmcv and timm schedules, which span the whole run). During the warm-up the
decayed value is scaled by a factor rising linearly from ``warmup_start_ratio`` to 1 (mmcv's linear
warm-up; with decay_from warmup_end this is a ramp from ratio * lr to lr, per step).
"""
import math
from dataclasses import dataclass

LR_TYPES = ("step", "cos", "linear")
LR_UPDATES = ("epoch", "step")
DECAY_FROM = ("warmup_end", "start")


@dataclass(frozen=True)
class LRSchedule:
    base_lr: float
    epochs: int
    lr_type: str = "step"
    lr_steps: tuple = ()
    warmup_epochs: float = 0.0
    warmup_start_ratio: float = 0.0
    update: str = "epoch"
    min_lr_ratio: float = 0.0
    decay_from: str = "warmup_end"

    def __post_init__(self):
        for name, value, allowed in (("lr_type", self.lr_type, LR_TYPES), ("update", self.update, LR_UPDATES),
                                     ("decay_from", self.decay_from, DECAY_FROM)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; choose from {allowed}")
        object.__setattr__(self, "lr_steps", tuple(self.lr_steps))

    def lr_at(self, epoch_float):
        """Base lr at a (fractional) epoch; each group's lr is this times its lr_mult."""
        total, warm = self.epochs, self.warmup_epochs
        e = epoch_float if (self.update == "step" or epoch_float < warm) else math.floor(epoch_float)
        floor = self.base_lr * self.min_lr_ratio
        if self.lr_type == "step":
            lr = self.base_lr * 0.1 ** sum(e >= s for s in self.lr_steps)
        else:
            progress = e / total if self.decay_from == "start" else max(0.0, e - warm) / (total - warm)
            progress = min(progress, 1.0)
            shape = 0.5 * (1 + math.cos(math.pi * progress)) if self.lr_type == "cos" else 1 - progress
            lr = floor + (self.base_lr - floor) * shape
        if epoch_float < warm:
            ratio = self.warmup_start_ratio
            lr *= ratio + (1 - ratio) * (epoch_float + 1e-8) / warm
        return lr


def set_lr(optimizer, lr, weight_decay):
    """Every group gets lr x its lr_mult and weight_decay x its decay_mult (TSM's parameter groups)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]
        group["weight_decay"] = weight_decay * group["decay_mult"]
