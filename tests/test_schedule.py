"""ops.lr_schedule.LRSchedule: the learning-rate schedules of the TSM, TIN (original and mmaction2), ILA and distillation
recipes, against values worked out by hand from each reference's formula."""
import math
import pytest

from ops.lr_schedule import LRSchedule


def sched(**kw):
    """TSM's defaults; keyword names of main.py's options (lr, lr_update) map to the schedule's fields."""
    base = dict(lr=0.01, epochs=50, lr_type="step", lr_steps=[20.0, 40.0], warmup_epochs=0.0,
                warmup_start_ratio=0.0, lr_update="epoch", min_lr_ratio=0.0, decay_from="warmup_end")
    base.update(kw)
    base["base_lr"], base["update"] = base.pop("lr"), base.pop("lr_update")
    return LRSchedule(**base)


def test_tsm_step_schedule_changes_at_epoch_starts():
    a = sched()
    assert a.lr_at(0.0) == pytest.approx(0.01)
    assert a.lr_at(19.99) == pytest.approx(0.01)
    assert a.lr_at(20.0) == pytest.approx(0.001)
    assert a.lr_at(45.3) == pytest.approx(0.0001)


def test_tsm_cosine_is_evaluated_once_per_epoch():
    a = sched(lr=0.02, epochs=40, lr_type="cos")
    # epoch 10 of 40: 0.5 * 0.02 * (1 + cos(pi / 4)) = 0.01 * 1.70710678
    assert a.lr_at(10.0) == pytest.approx(0.0170710678)
    assert a.lr_at(10.7) == a.lr_at(10.0)
    assert sched(lr=0.02, epochs=40, lr_type="cos", lr_update="step").lr_at(10.7) < a.lr_at(10.0)


def test_tin_original_warm_up_from_a_tenth_then_cosine_over_the_remaining_epochs():
    a = sched(lr=0.02, epochs=40, lr_type="cos", warmup_epochs=1.0, warmup_start_ratio=0.1)
    assert a.lr_at(0.0) == pytest.approx(0.002)
    assert a.lr_at(0.5) == pytest.approx(0.02 * (0.1 + 0.9 * 0.5))      # 0.011, per step
    assert a.lr_at(1.0) == pytest.approx(0.02)                          # 0.5 lr (1 + cos(pi (e-1)/(E-1)))
    assert a.lr_at(20.3) == pytest.approx(0.01 * (1 + math.cos(math.pi * 19 / 39)))
    assert a.lr_at(39.9) == pytest.approx(0.01 * (1 + math.cos(math.pi * 38 / 39)))


def test_mmcv_cosine_with_floor_warm_up_scaling_and_per_step_updates():
    # mmaction2 tin sthv1: CosineAnnealing(min_lr_ratio=0.5) over the whole run, by iteration; linear warm-up
    # of 1 epoch with warmup_ratio 0.1 multiplies the annealed value.
    a = sched(lr=0.02, epochs=40, lr_type="cos", warmup_epochs=1.0, warmup_start_ratio=0.1,
              min_lr_ratio=0.5, lr_update="step", decay_from="start")
    regular = 0.01 + 0.01 * 0.5 * (1 + math.cos(math.pi * 0.5 / 40))      # 0.0199961...
    assert a.lr_at(0.5) == pytest.approx(regular * 0.55)
    assert a.lr_at(20.0) == pytest.approx(0.015)                          # half way: mean of lr and floor
    assert a.lr_at(20.25) == pytest.approx(0.01 + 0.005 * (1 + math.cos(math.pi * 20.25 / 40)))
    assert a.lr_at(40.0) == pytest.approx(0.01)


def test_hf_linear_schedule_with_warmup_per_batch():
    # get_linear_schedule_with_warmup(3 of 30 epochs): s/W during warm-up, then (S - s) / (S - W).
    a = sched(lr=1e-4, epochs=30, lr_type="linear", warmup_epochs=3.0, lr_update="step")
    assert a.lr_at(0.0) == pytest.approx(0.0, abs=1e-12)
    assert a.lr_at(1.5) == pytest.approx(5e-5)
    assert a.lr_at(3.0) == pytest.approx(1e-4)
    assert a.lr_at(16.5) == pytest.approx(1e-4 * 13.5 / 27)
    assert a.lr_at(30.0) == pytest.approx(0.0, abs=1e-12)


def test_step_schedule_with_per_step_updates_honours_fractional_milestones():
    assert sched(lr_steps=[20.5], lr_update="step").lr_at(20.6) == pytest.approx(0.001)
    assert sched(lr_steps=[20.5]).lr_at(20.6) == pytest.approx(0.01)     # epoch 20 started before 20.5


def test_unknown_schedule_raises():
    with pytest.raises(ValueError, match="poly"):
        sched(lr_type="poly")
