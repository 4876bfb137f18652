"""main.lr_at: the learning-rate schedules of the TSM, TIN (original and mmaction2), ILA and distillation
recipes, against values worked out by hand from each reference's formula."""
import math
from argparse import Namespace

import pytest

from main import lr_at


def sched(**kw):
    base = dict(lr=0.01, epochs=50, lr_type="step", lr_steps=[20.0, 40.0], warmup_epochs=0.0,
                warmup_start_ratio=0.0, lr_update="epoch", min_lr_ratio=0.0, decay_from="warmup_end")
    base.update(kw)
    return Namespace(**base)


def test_tsm_step_schedule_changes_at_epoch_starts():
    a = sched()
    assert lr_at(a, 0.0) == pytest.approx(0.01)
    assert lr_at(a, 19.99) == pytest.approx(0.01)
    assert lr_at(a, 20.0) == pytest.approx(0.001)
    assert lr_at(a, 45.3) == pytest.approx(0.0001)


def test_tsm_cosine_is_evaluated_once_per_epoch():
    a = sched(lr=0.02, epochs=40, lr_type="cos")
    # epoch 10 of 40: 0.5 * 0.02 * (1 + cos(pi / 4)) = 0.01 * 1.70710678
    assert lr_at(a, 10.0) == pytest.approx(0.0170710678)
    assert lr_at(a, 10.7) == lr_at(a, 10.0)
    assert lr_at(sched(lr=0.02, epochs=40, lr_type="cos", lr_update="step"), 10.7) < lr_at(a, 10.0)


def test_tin_original_warm_up_from_a_tenth_then_cosine_over_the_remaining_epochs():
    a = sched(lr=0.02, epochs=40, lr_type="cos", warmup_epochs=1.0, warmup_start_ratio=0.1)
    assert lr_at(a, 0.0) == pytest.approx(0.002)
    assert lr_at(a, 0.5) == pytest.approx(0.02 * (0.1 + 0.9 * 0.5))      # 0.011, per step
    assert lr_at(a, 1.0) == pytest.approx(0.02)                          # 0.5 lr (1 + cos(pi (e-1)/(E-1)))
    assert lr_at(a, 20.3) == pytest.approx(0.01 * (1 + math.cos(math.pi * 19 / 39)))
    assert lr_at(a, 39.9) == pytest.approx(0.01 * (1 + math.cos(math.pi * 38 / 39)))


def test_mmcv_cosine_with_floor_warm_up_scaling_and_per_step_updates():
    # mmaction2 tin sthv1: CosineAnnealing(min_lr_ratio=0.5) over the whole run, by iteration; linear warm-up
    # of 1 epoch with warmup_ratio 0.1 multiplies the annealed value.
    a = sched(lr=0.02, epochs=40, lr_type="cos", warmup_epochs=1.0, warmup_start_ratio=0.1,
              min_lr_ratio=0.5, lr_update="step", decay_from="start")
    regular = 0.01 + 0.01 * 0.5 * (1 + math.cos(math.pi * 0.5 / 40))      # 0.0199961...
    assert lr_at(a, 0.5) == pytest.approx(regular * 0.55)
    assert lr_at(a, 20.0) == pytest.approx(0.015)                          # half way: mean of lr and floor
    assert lr_at(a, 20.25) == pytest.approx(0.01 + 0.005 * (1 + math.cos(math.pi * 20.25 / 40)))
    assert lr_at(a, 40.0) == pytest.approx(0.01)


def test_hf_linear_schedule_with_warmup_per_batch():
    # get_linear_schedule_with_warmup(3 of 30 epochs): s/W during warm-up, then (S - s) / (S - W).
    a = sched(lr=1e-4, epochs=30, lr_type="linear", warmup_epochs=3.0, lr_update="step")
    assert lr_at(a, 0.0) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(a, 1.5) == pytest.approx(5e-5)
    assert lr_at(a, 3.0) == pytest.approx(1e-4)
    assert lr_at(a, 16.5) == pytest.approx(1e-4 * 13.5 / 27)
    assert lr_at(a, 30.0) == pytest.approx(0.0, abs=1e-12)


def test_step_schedule_with_per_step_updates_honours_fractional_milestones():
    assert lr_at(sched(lr_steps=[20.5], lr_update="step"), 20.6) == pytest.approx(0.001)
    assert lr_at(sched(lr_steps=[20.5]), 20.6) == pytest.approx(0.01)     # epoch 20 started before 20.5


def test_unknown_schedule_raises():
    with pytest.raises(ValueError, match="poly"):
        lr_at(sched(lr_type="poly"), 1.0)
