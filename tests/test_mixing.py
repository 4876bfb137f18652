import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from ops.mixing import (MixParams, apply_mix, batch_rng, cutmix_box, draw_mix, mix_batch, mix_inputs, mix_targets,
                        smooth_one_hot, spatial_size)


def test_label_smoothed_targets_and_soft_target_ce_hand_values():
    y = smooth_one_hot(torch.tensor([0, 3]), 4, 0.1)
    torch.testing.assert_close(y, torch.tensor([[0.925, 0.025, 0.025, 0.025], [0.025, 0.025, 0.025, 0.925]]))
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0]])
    lse = math.log(math.exp(2) + 3)
    # -(0.925 (2 - lse) + 3 * 0.025 (0 - lse)) = lse - 1.85
    ce = F.cross_entropy(logits, smooth_one_hot(torch.tensor([0]), 4, 0.1))
    assert ce.item() == pytest.approx(lse - 1.85, abs=1e-6)
    assert F.cross_entropy(logits, torch.tensor([0]), label_smoothing=0.1).item() == pytest.approx(lse - 1.85, abs=1e-6)
    assert torch.equal(smooth_one_hot(torch.tensor([1]), 3, 0.0), torch.tensor([[0.0, 1.0, 0.0]]))


def test_cutmix_box_and_kept_area():
    assert cutmix_box(0.75, 8, 8, 4, 4) == (2, 2, 6, 6)         # cut = sqrt(.25) = .5 -> 4 x 4 box
    assert cutmix_box(0.75, 8, 8, 0, 7) == (0, 5, 2, 8)         # clipped at the borders
    assert cutmix_box(1.0, 8, 8, 3, 3) == (3, 3, 3, 3)          # lam 1: empty box


def test_mixup_and_cutmix_apply_to_inputs_and_targets():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    mix = MixParams('mixup', 0.25, (1, 0), None)
    torch.testing.assert_close(apply_mix(x, mix), 0.25 * x + 0.75 * x.flip(0))
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    torch.testing.assert_close(mix_targets(targets, mix), torch.tensor([[0.25, 0.75], [0.75, 0.25]]))
    cut = MixParams('cutmix', 0.75, (1, 0), (1, 0, 3, 2))
    out = apply_mix(x, cut)
    assert torch.equal(out[0, :, 0:2, 1:3], x[1, :, 0:2, 1:3]) and torch.equal(out[1, :, 0:2, 1:3], x[0, :, 0:2, 1:3])
    outside = torch.ones(4, 4, dtype=torch.bool)
    outside[0:2, 1:3] = False
    assert torch.equal(out[..., outside], x[..., outside])
    assert torch.equal(x, torch.arange(96, dtype=torch.float32).view(2, 3, 4, 4))   # input untouched


def test_draw_mix_switch_lam_and_box_follow_the_reference_rules():
    kinds = []
    for step in range(400):
        p = draw_mix(batch_rng(0, 0, step), 6, 16, 16, mixup=0.8, cutmix=1.0, switch_prob=0.5)
        kinds.append(p.kind)
        assert sorted(p.perm) == list(range(6)) and 0 <= p.lam <= 1
        if p.kind == 'cutmix':
            x1, y1, x2, y2 = p.box
            assert p.lam == pytest.approx(1 - (x2 - x1) * (y2 - y1) / 256)
    assert 0.42 < kinds.count('cutmix') / 400 < 0.58
    assert draw_mix(batch_rng(0, 0, 0), 4, 8, 8, mixup=0.0, cutmix=0.0, switch_prob=0.5) is None
    only_mixup = {draw_mix(batch_rng(0, 0, s), 4, 8, 8, mixup=0.8, cutmix=0.0, switch_prob=0.5).kind for s in range(20)}
    assert only_mixup == {'mixup'}
    assert draw_mix(batch_rng(0, 0, 1), 4, 8, 8, mixup=0.8, cutmix=1.0, switch_prob=0.5) != \
        draw_mix(batch_rng(0, 0, 2), 4, 8, 8, mixup=0.8, cutmix=1.0, switch_prob=0.5)


def test_mix_batch_mixes_every_modality_alike_and_off_is_identity():
    clips = {'RGB': torch.randn(4, 6, 8, 8), 'Flow': torch.randn(4, 4, 8, 8)}
    labels = torch.tensor([0, 1, 2, 1])
    same, targets = mix_batch(clips, labels, 3, seed=0, epoch=0, step=0)
    assert same is clips and targets is None
    mixed, targets = mix_batch(clips, labels, 3, seed=1, epoch=2, step=5, mixup=0.8, cutmix=1.0, smoothing=0.1)
    params = draw_mix(batch_rng(1, 2, 5), 4, 8, 8, mixup=0.8, cutmix=1.0, switch_prob=0.5)
    for k in clips:
        torch.testing.assert_close(mixed[k], apply_mix(clips[k], params))
    torch.testing.assert_close(targets, mix_targets(smooth_one_hot(labels, 3, 0.1), params))
    torch.testing.assert_close(targets.sum(1), torch.ones(4))
    with pytest.raises(ValueError, match='spatial size'):
        spatial_size({'RGB': torch.zeros(1, 3, 8, 8), 'Flow': torch.zeros(1, 2, 4, 4)})
    assert mix_inputs(clips['RGB'], None) is clips['RGB']


RANK_SCRIPT = """
import json, sys, torch
from ops.mixing import mix_batch
modality, channels = sys.argv[1], int(sys.argv[2])
torch.manual_seed(int(sys.argv[3]))       # the global torch RNG differs per rank and must not matter
clips = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, channels, 8, 8).contiguous()
out = {}
for step in range(6):
    mixed, targets = mix_batch(clips, torch.tensor([0, 1, 2, 3]), 4, seed=3, epoch=1, step=step, mixup=0.8,
                               cutmix=1.0, smoothing=0.1)
    # which partner each pixel came from: mixed == clips exactly outside a cutmix box
    out[step] = dict(targets=targets.tolist(), kept=(mixed == clips).all(1).tolist())
print(json.dumps(out))
"""


@pytest.mark.slow
def test_two_modality_ranks_with_the_same_seed_mix_identically(tmp_path):
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root, OMP_NUM_THREADS='1')
    procs = [subprocess.Popen([sys.executable, '-c', RANK_SCRIPT, m, c, s], stdout=subprocess.PIPE, env=env,
                              cwd=tmp_path) for m, c, s in (('RGB', '9', '0'), ('Flow', '10', '1'))]
    rgb, flow = (json.loads(p.communicate(timeout=300)[0]) for p in procs)
    assert all(p.returncode == 0 for p in procs)
    assert rgb == flow                                   # same targets (pairs, lam) and same box, every step
    assert len({json.dumps(v['targets']) for v in rgb.values()}) == 6


def _parse(tmp_path, *extra, dataset='mydata'):
    from opts import parse_args
    lst = tmp_path / 'list.txt'
    lst.write_text('a 10 0\n')
    return parse_args([dataset, 'RGB', '--root_path', str(tmp_path), '--train_list', str(lst), '--val_list',
                       str(lst), '--num_class', '200', *extra])


def test_recipe_options_resolve_flip_traits_and_pairs(tmp_path):
    args = _parse(tmp_path)
    assert args.hflip and args.flip_label_pairs == '' and args.ila_pair_net == 'k400'   # unregistered: flip on
    args = _parse(tmp_path, dataset='something')
    assert not args.hflip and args.flip_label_pairs == '86:87,93:94,166:167' and args.ila_pair_net == 'ssv2'
    args = _parse(tmp_path, '--flip', 'on', '--flip_pairs', '3:1', dataset='something')
    assert args.hflip and args.flip_label_pairs == '1:3'
    assert _parse(tmp_path, '--flip', 'off').hflip is False


@pytest.mark.parametrize('extra, message', [
    (['--flip_pairs', '1:2', '--flip', 'off'], 'flipping is off'),
    (['--flip_pairs', '1:250'], 'beyond'),
    (['--flip_pairs', '1-2'], '--flip_pairs'),
    (['--label_smoothing', '1.0'], '--label_smoothing'),
    (['--mixup', '-1'], 'Beta alphas'),
    (['--color_jitter', '2'], '--color_jitter'),
    (['--adam_betas', '0.9', '0.98'], 'adamw'),
    (['--mixup', '0.8', '--teacher_scores', 'x.npz'], 'unmixed'),
    (['--teacher_weight_list', 'held.txt'], 'softmin_dataset only'),
])
def test_recipe_options_reject_bad_values(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exc:
        _parse(tmp_path, *extra)
    assert exc.value.code == 2 and message in capsys.readouterr().err
