"""Multimodal distillation (ops/distill.py): hand-computed losses, teacher weighting, teacher sources."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ops import distill
from ops.distill import (TEACHER_WEIGHTINGS, TeacherEnsemble, TeacherScores, combine_teachers,
                         dataset_softmin_weights, distill_loss, kd_loss, teacher_weights)


def manual_kl(student, teacher, temperature):
    """T^2 * mean_i sum_c p_t log(p_t / p_s), written out with plain Python floats."""
    total = 0.0
    for zs, zt in zip(student.tolist(), teacher.tolist()):
        es = [math.exp(v / temperature) for v in zs]
        et = [math.exp(v / temperature) for v in zt]
        ps = [v / sum(es) for v in es]
        pt = [v / sum(et) for v in et]
        total += sum(t * math.log(t / s) for s, t in zip(ps, pt))
    return temperature ** 2 * total / len(student)


STUDENT = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
TEACHER = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])


@pytest.mark.parametrize('temperature', [1.0, 2.0, 4.0])
def test_kd_loss_matches_manual_formula(temperature):
    loss = kd_loss(STUDENT, TEACHER, temperature)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert loss.item() == pytest.approx(manual_kl(STUDENT, TEACHER, temperature), rel=1e-5)


def test_kd_loss_value_by_hand():
    # One row, T = 1: p_t = (1/2, 1/2), p_s = softmax(0, log 3) = (1/4, 3/4).
    # KL = 1/2 log(2) + 1/2 log(2/3).
    student = torch.tensor([[0.0, math.log(3.0)]])
    teacher = torch.tensor([[5.0, 5.0]])
    expected = 0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0)
    assert kd_loss(student, teacher, 1.0).item() == pytest.approx(expected, rel=1e-6)
    # T = 2 multiplies by T^2 and softens: p_s = softmax(0, log(3)/2) = (1, sqrt 3) / (1 + sqrt 3).
    ps = [1 / (1 + math.sqrt(3)), math.sqrt(3) / (1 + math.sqrt(3))]
    expected_t2 = 4 * (0.5 * math.log(0.5 / ps[0]) + 0.5 * math.log(0.5 / ps[1]))
    assert kd_loss(student, teacher, 2.0).item() == pytest.approx(expected_t2, rel=1e-6)


def test_kd_loss_shift_invariance_and_zero():
    shift = torch.tensor([[3.0], [-7.0]])  # one constant per row
    base = kd_loss(STUDENT, TEACHER, 2.0)
    assert kd_loss(STUDENT + shift, TEACHER, 2.0).item() == pytest.approx(base.item(), abs=1e-6)
    assert kd_loss(STUDENT, TEACHER - shift, 2.0).item() == pytest.approx(base.item(), abs=1e-6)
    assert kd_loss(TEACHER, TEACHER, 1.0).item() == 0.0
    assert kd_loss(TEACHER + shift, TEACHER, 3.0).item() == pytest.approx(0.0, abs=1e-6)
    assert base.item() > 0


def test_kd_loss_detaches_teacher():
    student = STUDENT.clone().requires_grad_(True)
    teacher = TEACHER.clone().requires_grad_(True)
    kd_loss(student, teacher, 1.0).backward()
    assert teacher.grad is None
    # d/dz_s of KL(p_t || softmax(z_s)) batch mean = (p_s - p_t) / B at T = 1.
    expected = (torch.softmax(STUDENT, 1) - torch.softmax(TEACHER, 1)) / 2
    assert torch.allclose(student.grad, expected, atol=1e-6)


def test_kd_loss_bf16_inputs_give_fp32_close_to_fp32():
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(4, 10, generator=gen)
    teacher = torch.randn(4, 10, generator=gen)
    ref = kd_loss(student.bfloat16().float(), teacher.bfloat16().float(), 2.0)
    loss = kd_loss(student.bfloat16(), teacher.bfloat16(), 2.0)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert loss.item() == pytest.approx(kd_loss(student, teacher, 2.0).item(), rel=5e-2)


def test_distill_loss_terms_and_weights():
    labels = torch.tensor([1, 2])
    ce = F.cross_entropy(STUDENT, labels)
    kd = kd_loss(STUDENT, TEACHER, 2.0)
    total, ce_term, kd_term = distill_loss(STUDENT, TEACHER, labels, temperature=2.0,
                                           distill_weight=0.7, gt_weight=0.3)
    assert ce_term.item() == pytest.approx(ce.item())
    assert kd_term.item() == pytest.approx(kd.item())
    assert total.item() == pytest.approx(0.3 * ce.item() + 0.7 * kd.item(), rel=1e-6)


def test_distill_loss_without_distillation_is_exactly_weighted_ce():
    labels = torch.tensor([1, 2])
    # A teacher with an infinite logit would make the KD term nan; with weight 0 it must not leak in.
    teacher = torch.tensor([[float('inf'), 0.0, 0.0], [0.0, 0.0, 0.0]])
    total, ce_term, _ = distill_loss(STUDENT, teacher, labels, distill_weight=0.0, gt_weight=0.5)
    assert torch.equal(total, 0.5 * F.cross_entropy(STUDENT, labels))
    assert torch.equal(ce_term, F.cross_entropy(STUDENT, labels))


def test_distill_loss_patient_defaults_ignore_labels():
    student = STUDENT.clone().requires_grad_(True)
    grads = []
    for labels in (torch.tensor([0, 0]), torch.tensor([2, 1])):
        student.grad = None
        total, _, kd_term = distill_loss(student, TEACHER, labels)
        assert torch.equal(total, kd_term)
        total.backward()
        grads.append(student.grad.clone())
    assert torch.equal(grads[0], grads[1])


def test_distill_loss_rejects_bad_weights():
    labels = torch.tensor([1, 2])
    with pytest.raises(ValueError, match='not both 0'):
        distill_loss(STUDENT, TEACHER, labels, distill_weight=0.0, gt_weight=0.0)
    with pytest.raises(ValueError, match='temperature'):
        distill_loss(STUDENT, TEACHER, labels, temperature=0.0)


def test_uniform_combination_is_mean_of_logits_not_probabilities():
    z1 = torch.tensor([[1.0, 2.0, 3.0]])
    z2 = torch.tensor([[3.0, -2.0, 0.0]])
    ens = combine_teachers([z1, z2])
    assert torch.allclose(ens, torch.tensor([[2.0, 0.0, 1.5]]))
    assert torch.allclose(combine_teachers(torch.stack([z1, z2])), ens)


def test_fixed_weights_are_normalised_and_average_is_the_manual_sum():
    z = torch.tensor([[[1.0, 0.0]], [[0.0, 4.0]], [[2.0, 2.0]]])  # (K=3, B=1, C=2)
    ens = combine_teachers(z, fixed_weights=[2.0, 1.0, 1.0])  # -> 0.5, 0.25, 0.25
    assert torch.allclose(ens, torch.tensor([[0.5 * 1 + 0.25 * 0 + 0.25 * 2, 0.5 * 0 + 0.25 * 4 + 0.25 * 2]]))
    w = teacher_weights(z, fixed_weights=[2.0, 1.0, 1.0])
    assert w.shape == (3, 1) and torch.allclose(w.sum(0), torch.ones(1))
    with pytest.raises(ValueError, match='3 teachers'):
        combine_teachers(z, fixed_weights=[1.0, 1.0])
    with pytest.raises(ValueError, match='>= 0'):
        combine_teachers(z, fixed_weights=[1.0, -1.0, 1.0])


def test_unknown_weighting_names_the_allowed_ones():
    with pytest.raises(ValueError, match='softmin_sample'):
        combine_teachers(torch.zeros(2, 1, 3), weighting='mean')
    assert TEACHER_WEIGHTINGS == ('uniform', 'softmin_dataset', 'softmin_sample')


def test_dataset_softmin_weights_by_hand_and_monotone():
    w = dataset_softmin_weights(torch.tensor([1.0, 2.0]), temperature=1.0)
    e = math.exp(-1.0)
    assert w.tolist() == pytest.approx([1 / (1 + e), e / (1 + e)], rel=1e-6)
    w = dataset_softmin_weights(torch.tensor([0.9, 0.3, 2.5, 1.2]), temperature=0.7)
    assert w.sum().item() == pytest.approx(1.0)
    assert torch.argsort(w, descending=True).tolist() == [1, 0, 3, 2]  # lower CE, higher weight


def test_dataset_softmin_temperature_limits():
    ce = torch.tensor([0.9, 0.3, 2.5])
    hot = dataset_softmin_weights(ce, temperature=1e-4)
    assert torch.allclose(hot, torch.tensor([0.0, 1.0, 0.0]))
    flat = dataset_softmin_weights(ce, temperature=1e4)
    assert torch.allclose(flat, torch.full((3,), 1 / 3), atol=1e-4)
    with pytest.raises(ValueError, match='temperature'):
        dataset_softmin_weights(ce, temperature=0.0)


def test_softmin_dataset_weighting_uses_the_precomputed_weights():
    z = torch.tensor([[[1.0, 0.0]], [[0.0, 4.0]]])
    w = dataset_softmin_weights(torch.tensor([1.0, 2.0]))
    ens = combine_teachers(z, weighting='softmin_dataset', fixed_weights=w)
    assert torch.allclose(ens, w[0] * z[0] + w[1] * z[1])
    with pytest.raises(ValueError, match='dataset_softmin_weights'):
        combine_teachers(z, weighting='softmin_dataset')


def test_per_sample_softmin_by_hand():
    # Two teachers, two samples (label 0 for both). Sample 0: teacher 0 is right; sample 1: teacher 1 is.
    z = torch.tensor([[[2.0, 0.0], [0.0, 1.0]],
                      [[0.0, 1.0], [3.0, 0.0]]])  # (K=2, B=2, C=2)
    labels = torch.tensor([0, 0])
    w = teacher_weights(z, labels, weighting='softmin_sample', temperature=1.0)
    ce = lambda a, b: math.log(1 + math.exp(b - a))  # two-class CE of the first class
    for i, (k0, k1) in enumerate([(ce(2, 0), ce(0, 1)), (ce(0, 1), ce(3, 0))]):
        expected0 = math.exp(-k0) / (math.exp(-k0) + math.exp(-k1))
        assert w[0, i].item() == pytest.approx(expected0, rel=1e-5)
        assert w[:, i].sum().item() == pytest.approx(1.0)
    assert w[0, 0] > w[1, 0] and w[1, 1] > w[0, 1]
    ens = combine_teachers(z, labels, weighting='softmin_sample')
    assert torch.allclose(ens, (w.unsqueeze(-1) * z).sum(0))
    hot = teacher_weights(z, labels, weighting='softmin_sample', temperature=1e-4)
    assert torch.allclose(hot, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    flat = teacher_weights(z, labels, weighting='softmin_sample', temperature=1e4)
    assert torch.allclose(flat, torch.full((2, 2), 0.5), atol=1e-4)
    with pytest.raises(ValueError, match='labels'):
        combine_teachers(z, weighting='softmin_sample')


def test_teacher_ensemble_stays_frozen_in_eval_mode():
    torch.manual_seed(0)
    rgb = nn.Sequential(nn.Linear(6, 4), nn.Dropout(0.5))
    flow = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    ensemble = TeacherEnsemble([rgb, flow], ['RGB', 'Flow'])
    ensemble.train()
    assert not ensemble.training and not any(m.training for m in ensemble.modules())
    assert not any(p.requires_grad for p in ensemble.parameters())
    parent = nn.Module()
    parent.teachers = ensemble
    parent.train(True)  # a student's train() that recurses into children
    assert not any(m.training for m in ensemble.modules())

    x = {'RGB': torch.randn(3, 6), 'Flow': torch.randn(3, 4)}
    logits = ensemble(x)
    assert logits.shape == (2, 3, 4)  # (K, B, C)
    assert torch.equal(logits, ensemble(x))  # dropout off: deterministic
    assert torch.allclose(logits[0], rgb[0](x['RGB'])) and not logits.requires_grad

    student = nn.Linear(6, 4)
    total, _, _ = distill_loss(student(x['RGB']), combine_teachers(logits), torch.tensor([0, 1, 2]))
    total.backward()
    assert student.weight.grad is not None
    assert all(p.grad is None for p in ensemble.parameters())
    assert ensemble.required_modalities == ('RGB', 'Flow')
    with pytest.raises(KeyError, match='Flow'):
        ensemble({'RGB': x['RGB']})


def write_scores(path, **overrides):
    arrays = dict(
        scores=np.array([[[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]],      # video a: mean (2, 2, 2)
                         [[0.0, 4.0, 0.0], [0.0, 2.0, 2.0]],      # video b: mean (0, 3, 1)
                         [[5.0, 0.0, 1.0], [1.0, 0.0, 1.0]]],     # video c: mean (3, 0, 1)
                        dtype=np.float32),
        labels=np.array([2, 1, 0]),
        video_ids=np.array(['a/v1', 'b/v2', 'c/v3']),
        protocol=np.array('1 clip x 2 crops'),
    )
    arrays.update(overrides)
    np.savez(path, **arrays)
    return path


def test_teacher_scores_round_trip(tmp_path):
    scores = TeacherScores(write_scores(tmp_path / 'scores.npz'))
    assert len(scores) == 3 and scores.num_class == 3 and scores.protocol == '1 clip x 2 crops'
    logits = scores.lookup(['c/v3', 'a/v1', 'c/v3'])
    assert logits.dtype == torch.float32
    assert torch.equal(logits, torch.tensor([[3.0, 0.0, 1.0], [2.0, 2.0, 2.0], [3.0, 0.0, 1.0]]))
    assert torch.equal(scores.lookup(('b/v2',), labels=torch.tensor([1])), torch.tensor([[0.0, 3.0, 1.0]]))


def test_teacher_scores_errors_name_file_and_video(tmp_path):
    path = write_scores(tmp_path / 'scores.npz')
    scores = TeacherScores(path)
    with pytest.raises(KeyError, match=r"scores\.npz.*'zz/v9'"):
        scores.lookup(['a/v1', 'zz/v9', 'yy/v8'])
    with pytest.raises(ValueError, match="'b/v2' has label 1"):
        scores.lookup(['a/v1', 'b/v2'], labels=torch.tensor([2, 0]))
    bad = tmp_path / 'no_ids.npz'
    np.savez(bad, scores=np.zeros((1, 1, 2)), labels=np.zeros(1), protocol=np.array('x'))
    with pytest.raises(ValueError, match=r"no_ids\.npz.*video_ids"):
        TeacherScores(bad)
    garbage = tmp_path / 'garbage.npz'
    garbage.write_bytes(b'not a zip')
    with pytest.raises(ValueError, match='garbage.npz: not a score file'):   # the one score-file reader
        TeacherScores(garbage)


def test_load_teachers_errors_name_the_file(tmp_path):
    missing = tmp_path / 'missing.pth'
    with pytest.raises(RuntimeError, match='missing.pth'):
        distill.load_teachers([str(missing)])
    no_config = tmp_path / 'no_config.pth'
    torch.save({'state_dict': {'w': torch.zeros(1)}}, no_config)
    with pytest.raises((ValueError, RuntimeError), match='no_config.pth'):
        distill.load_teachers(str(no_config))


# ---- issue 15: held-out teacher weighting, soft targets in the ground-truth term ----

def test_held_out_records_select_the_listed_training_videos_of_every_modality(tmp_path):
    from ops.distill_setup import held_out_records
    from ops.dataset import VideoRecord
    rgb = [VideoRecord(f'v{i}', 10 + i, i % 3) for i in range(5)]
    flow = [VideoRecord(f'v{i}', 9 + i, i % 3) for i in range(5)]
    listed = tmp_path / 'held.txt'
    listed.write_text('v3 13 0\nv1 11 1\n')
    held = held_out_records(str(listed), {'RGB': rgb, 'Flow': flow}, 'frames')
    assert [r.video_id for r in held['RGB']] == ['v1', 'v3'] and [r.num_frames for r in held['Flow']] == [10, 12]
    listed.write_text('v1 11 1\nv9 3 0\n')
    with pytest.raises(SystemExit, match='not in the training list'):
        held_out_records(str(listed), {'RGB': rgb}, 'frames')


def test_distill_gt_term_takes_soft_targets():
    z = torch.tensor([[2.0, 0.0, 0.0]])
    soft = torch.tensor([[0.5, 0.5, 0.0]])
    lse = math.log(math.exp(2) + 2)
    total, ce, _ = distill_loss(z, z, soft, distill_weight=0.0, gt_weight=1.0)
    assert ce.item() == pytest.approx(-(0.5 * (2 - lse) + 0.5 * (0 - lse)), abs=1e-6)
    assert total.item() == pytest.approx(ce.item())


@pytest.mark.slow
def test_softmin_dataset_on_a_held_out_list(tiny_toy, run_cli, tmp_path, tiny_checkpoint):
    rgb = tiny_checkpoint(tmp_path / 'rgb.pth.tar', 'RGB', 0)
    flow = tiny_checkpoint(tmp_path / 'flow.pth.tar', 'Flow', 1)
    import os
    lines = open(os.path.join(tiny_toy, 'toy', 'train_rgb.txt')).read().splitlines()[:5]
    held = tmp_path / 'held.txt'
    held.write_text('\n'.join(lines) + '\n')
    out = run_cli(['main.py', 'toy', 'RGB', '--data_root', tiny_toy, '--root_model', str(tmp_path / 'ck'),
                   '--root_log', str(tmp_path / 'log'), '--arch', 'resnet18', '--num_segments', '4',
                   '--input_size', '32', '--batch-size', '4', '-j', '0', '--no_progress', '--epochs', '1',
                   '--max_steps_per_epoch', '1', '--distill_from', f'{rgb},{flow}', '--teacher_weighting',
                   'softmin_dataset', '--teacher_weight_list', str(held)], cwd=tmp_path).stderr
    assert 'teacher CE on 5 held-out videos' in out and 'softmin_dataset teacher weights' in out
