import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from archs.msn import (DeformableConv2d, LearnableShift,
                       LongTermDifference, MotionBlock, MotionExcitation, ShortTermDifference,
                       ShortTermPyramid, msn_resnet, stem_fusion_weights)
from ops.checkpoint import load_weights
from ops.models import TSN
from ops.temporal_modules import TemporalConfig
from ops.temporal_shift import shift

# Module types whose parameters a TSM-style get_optim_policies already sorts into groups.
STANDARD_PARAM_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm1d,
                          nn.BatchNorm2d, nn.BatchNorm3d)


def dyadic(*shape, seed=0):
    """Random multiples of 1/8 in [-4, 4): sums and differences are exact in float64."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-32, 32, shape, generator=g).double() / 8


def test_fusion_weights_follow_tdn():
    assert stem_fusion_weights(8) == (0.5, 0.5)
    assert stem_fusion_weights(16) == (0.75, 0.25)
    assert stem_fusion_weights(4) == (0.75, 0.25)
    assert msn_resnet(18, num_segments=8).stem_fuse == (0.5, 0.5)


def test_short_term_branch_ignores_static_background():
    torch.manual_seed(0)
    stp = ShortTermPyramid().double()
    clip = dyadic(4, 15, 32, 32)
    background = dyadic(4, 3, 32, 32, seed=1).repeat(1, 5, 1, 1)    # same image in all 5 frames
    assert torch.equal(stp(clip + background), stp(clip))


def test_short_term_branch_static_clip_is_constant_map():
    torch.manual_seed(0)
    stp = ShortTermPyramid().eval()
    frame = torch.randn(2, 3, 16, 16)
    out = stp(frame.repeat(1, 5, 1, 1))
    # zero differences: D3 = 0, D1 and D2 are ReLU(BN(0)) = ReLU(bias - mean*scale) per channel
    assert torch.allclose(out, out[:1, :, :1, :1].expand_as(out))


@pytest.mark.slow
def test_shapes_at_224():
    torch.manual_seed(0)
    model = msn_resnet(50, num_segments=2).eval()
    x = torch.randn(2, 15, 224, 224)
    seen = {}
    model.layer1.register_forward_hook(lambda m, i, o: seen.update(layer1=o.shape))
    with torch.no_grad():
        assert model.short_term(x).shape == (2, 64, 56, 56)
        assert model(x).shape == (2, 1000)
    assert seen['layer1'] == (2, 256, 56, 56)
    assert model.fc.in_features == 2048
    tdn = msn_resnet(50, num_segments=2, variant='tdn').eval()
    with torch.no_grad():
        s0 = tdn.short_term(x)
        assert s0.shape == (2, 64, 28, 28)
        assert tdn.motion_layer1(s0).shape == (2, 256, 28, 28)
        assert tdn(x).shape == (2, 1000)


def test_main_stream_sees_centre_frame():
    model = msn_resnet(18, num_segments=2).eval()
    seen = []
    model.conv1.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    x = torch.randn(2, 15, 32, 32)
    with torch.no_grad():
        model(x)
    assert torch.equal(seen[0], x[:, 6:9])


def test_deformable_conv_with_zero_offsets_is_plain_conv():
    torch.manual_seed(0)
    for k, p in ((3, 1), (5, 2)):
        dcn = DeformableConv2d(4, 6, k, padding=p)
        x = torch.randn(3, 4, 9, 7)
        assert torch.count_nonzero(dcn.offset(x)) == 0
        torch.testing.assert_close(dcn(x), dcn.conv(x), atol=1e-5, rtol=1e-5)


def test_deformable_conv_unit_offset_samples_the_next_column():
    # torchvision's offset layout is (dy, dx) per kernel tap: dx = 1 everywhere reads x[..., j+1]
    torch.manual_seed(0)
    dcn = DeformableConv2d(2, 3, 3, padding=1)
    nn.init.constant_(dcn.offset.bias[1::2], 1.0)
    x = torch.randn(1, 2, 6, 6)
    moved = F.pad(x[..., 1:], (0, 1))
    # column 0: the DCN's left tap reads x[..., 0], the plain conv reads its zero padding
    torch.testing.assert_close(dcn(x)[..., 1:], dcn.conv(moved)[..., 1:], atol=1e-5, rtol=1e-5)


def test_deformable_conv_with_non_finite_offsets_does_not_crash():
    # A NaN offset used to reach torchvision's kernel as an integer index outside the map (segfault).
    torch.manual_seed(0)
    dcn = DeformableConv2d(2, 3, 3, padding=1)
    x = torch.randn(2, 2, 6, 6)
    with torch.no_grad():
        dcn.offset.bias.fill_(float('nan'))
    torch.testing.assert_close(dcn(x), dcn.conv(x), atol=1e-5, rtol=1e-5)   # NaN offset = regular grid
    with torch.no_grad():
        dcn.offset.bias.fill_(float('inf'))
    assert torch.equal(dcn(x), torch.zeros(2, 3, 6, 6))                    # every tap outside the map
    x[0, 0, 2, 2] = float('nan')
    with torch.no_grad():
        dcn.offset.bias.zero_()
    out = dcn(x)
    assert torch.isnan(out[0]).any() and torch.isfinite(out[1]).all()      # NaN input still propagates


def test_excitation_gain_within_half_and_three_halves():
    torch.manual_seed(0)
    t = 3
    m = MotionExcitation(16, num_segments=t)
    for p in m.parameters():
        p.data.normal_(0, 2)   # push the attention towards its bounds
    x = torch.rand(2 * t, 16, 5, 5) + 0.1
    gain = m(x) / x
    assert gain.min() >= 0.5 and gain.max() <= 1.5
    assert gain.max() - gain.min() > 0.5


def test_excitation_uses_all_segments_together():
    # The reference hard-codes 8 frames: a 16-frame clip would be two independent halves. Here the
    # temporal context of the last frame averages all 16, so frame 0 reaches frame 15.
    torch.manual_seed(0)
    t = 16
    m = MotionExcitation(8, num_segments=t).eval()
    x = torch.rand(t, 8, 4, 4)
    y = x.clone()
    y[0] += 1
    a, b = m.attention(x), m.attention(y)
    assert not torch.allclose(a[t - 1], b[t - 1])
    assert torch.equal(a[1:t - 1], b[1:t - 1])   # middle frames: only their own pair and context


def test_learnable_shift_at_init_is_tsm_shift():
    t = 4
    m = LearnableShift(16, num_segments=t)
    x = torch.randn(2 * t, 16, 3, 3)
    assert torch.equal(m(x), shift(x, t, fold_div=8))
    m(x).sum().backward()
    assert m.conv.weight.grad.abs().sum() > 0


def test_learnable_shift_matches_depthwise_temporal_conv():
    torch.manual_seed(0)
    t, c = 5, 6
    m = LearnableShift(c, num_segments=t)
    m.conv.weight.data.normal_()
    x = torch.randn(2 * t, c, 2, 3)
    # reference: Conv1d over time for every pixel, (N*H*W, C, T)
    seq = x.view(2, t, c, 2, 3).permute(0, 3, 4, 2, 1).reshape(-1, c, t)
    expected = m.conv(seq).view(2, 2, 3, c, t).permute(0, 4, 3, 1, 2).reshape(2 * t, c, 2, 3)
    torch.testing.assert_close(m(x), expected)


def test_motion_block_keeps_torchvision_keys():
    block = torchvision.models.resnet50(weights=None).layer2[0]
    keys = set(block.state_dict())
    wrapped = MotionBlock(block, num_segments=2)
    new_keys = set(wrapped.state_dict())
    assert keys <= new_keys
    assert {k.split('.')[0] for k in new_keys - keys} == {'excite', 'shift'}


def every_parameter_has_gradient(model):
    return [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]


def test_msn_resnet18_forward_backward_every_param_gets_gradient():
    torch.manual_seed(0)
    t = 3
    model = msn_resnet(18, num_segments=t)
    out = model(torch.randn(2 * t, 15, 32, 32))
    assert out.shape == (2 * t, 1000) and model.fc.in_features == 512
    out.square().mean().backward()
    assert every_parameter_has_gradient(model) == []


def test_all_parameters_live_in_standard_modules():
    # so TSN's optimiser policies see every parameter (the reference lost its DCN kernels)
    model = msn_resnet(18, num_segments=2)
    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            assert isinstance(module, STANDARD_PARAM_MODULES), name


def test_batch_of_one_video():
    torch.manual_seed(0)
    model = msn_resnet(18, num_segments=2)
    out = model(torch.randn(2, 15, 48, 48))
    out.sum().backward()
    assert out.shape == (2, 1000) and torch.isfinite(out).all()


def test_bad_inputs_raise():
    model = msn_resnet(18, num_segments=4)
    with pytest.raises(ValueError, match="15"):
        model(torch.randn(4, 3, 32, 32))
    with pytest.raises(ValueError, match="multiple of num_segments"):
        model(torch.randn(6, 15, 32, 32))
    with pytest.raises(ValueError, match="18"):
        msn_resnet(depth=20)
    with pytest.raises(FileNotFoundError, match="imagenet"):
        msn_resnet(18, pretrain='imagenett')
    with pytest.raises(ValueError, match="tdn"):
        msn_resnet(18, variant='tsm')


def test_pretrain_from_resnet_file_and_msn_file(tmp_path):
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None)
    path = tmp_path / 'resnet18.pth'
    torch.save(resnet.state_dict(), path)
    model = msn_resnet(18, num_segments=2, pretrain=str(path))
    state = model.state_dict()
    for k, v in resnet.state_dict().items():
        assert torch.equal(state[k], v), k
        if k.startswith('layer1.'):
            assert torch.equal(state['motion_' + k], v), k
    msn_path = tmp_path / 'msn.pth'
    torch.save({'state_dict': state}, msn_path)
    again = msn_resnet(18, num_segments=2, pretrain=str(msn_path))
    for k, v in again.state_dict().items():
        assert torch.equal(v, state[k]), k


# ---------------------------------------------------------------------- TDN variant
def test_tdn_short_term_ignores_static_background_and_inflates_stem():
    torch.manual_seed(0)
    stem = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
    stdm = ShortTermDifference(stem).double()
    # every one of the 12 input channels holds the RGB mean of the stem kernel
    assert torch.allclose(stdm.conv.weight.sum(1), 4 * stem.weight.double().sum(1))
    clip = dyadic(3, 15, 32, 32)
    background = dyadic(3, 3, 32, 32, seed=1).repeat(1, 5, 1, 1)
    assert torch.equal(stdm(clip + background), stdm(clip))


def test_tdn_long_term_end_padding_and_gain():
    torch.manual_seed(0)
    t = 4
    m = LongTermDifference(32, num_segments=t)
    x = torch.rand(2 * t, 32, 6, 6) + 0.1
    d_f, d_b = (d.view(2, t, 2, 6, 6) for d in m.differences(x))
    assert torch.equal(d_f[:, -1], torch.zeros_like(d_f[:, -1]))
    assert torch.equal(d_b[:, 0], torch.zeros_like(d_b[:, 0]))
    for p in m.parameters():
        p.data.normal_(0, 2)
    gain = m(x) / x
    assert gain.min() >= 0.5 and gain.max() <= 1.5
    assert gain.max() - gain.min() > 0.5


def test_tdn_long_term_each_direction_uses_its_own_difference():
    # m(d) = (d + up(BN(conv3x3(avgpool2(d)))) + BN(conv3x3(d))) / 3 for d_f and for d_b alike (the
    # reference feeds the backward full-resolution term from the forward one; not copied).
    torch.manual_seed(1)
    t = 3
    m = LongTermDifference(32, num_segments=t).eval()
    for bn in (m.reduce_bn, m.coarse_bn, m.fine_bn, m.expand_bn):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
    x = torch.rand(2 * t, 32, 4, 4) + 0.1
    with torch.no_grad():
        d_f, d_b = m.differences(x)

        def gate(d):
            coarse = m.coarse_bn(F.conv2d(F.avg_pool2d(d, 2), m.coarse.weight, padding=1))
            fine = m.fine_bn(F.conv2d(d, m.fine.weight, padding=1))
            mix = (d + coarse.repeat_interleave(2, 2).repeat_interleave(2, 3) + fine) / 3
            return torch.sigmoid(m.expand_bn(F.conv2d(mix, m.expand.weight))) - 0.5
        expected = x + x * (gate(d_f) + gate(d_b)) / 2
        torch.testing.assert_close(m(x), expected, atol=1e-6, rtol=1e-5)


def test_tdn_resnet18_forward_backward_every_param_gets_gradient():
    torch.manual_seed(0)
    t = 3
    model = msn_resnet(18, num_segments=t, variant='tdn')
    assert model.layer1_fuse == model.stem_fuse == (0.75, 0.25)
    out = model(torch.randn(2 * t, 15, 64, 64))   # L-TDM avg-pools layer4 maps: keep them >= 2x2
    assert out.shape == (2 * t, 1000)
    out.square().mean().backward()
    assert every_parameter_has_gradient(model) == []


def test_deformable_conv_under_bf16_autocast():
    # torchvision's CPU deform_conv2d has no bf16 kernel: the module computes in float32
    torch.manual_seed(0)
    dcn = DeformableConv2d(4, 4, 3, padding=1)
    x = torch.randn(2, 4, 6, 6)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = dcn(x)
    torch.testing.assert_close(y.float(), dcn.conv(x), atol=1e-5, rtol=1e-5)


# ---- issue 15: reference training statistics, initialisation, optimiser policy, view softmax ----

def test_stp_me_runs_per_segment_in_training_with_t_running_stat_updates():
    torch.manual_seed(0)
    model = msn_resnet(18, num_segments=3).train()
    x = torch.randn(2 * 3, 15, 32, 32)
    out = model.short_term_motion(x)
    # Per segment index t: the branch on the N clips of that index alone (BN over N clips).
    ref = copy.deepcopy(model.short_term)
    ref.diff_bn.reset_running_stats()
    ref.shallow_diff_bn.reset_running_stats()
    segments = x.view(2, 3, 15, 32, 32)
    expected = torch.stack([ref(segments[:, t]) for t in range(3)], 1).flatten(0, 1)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    batched = copy.deepcopy(ref).train()(x)             # one call over N*T frames: other statistics
    assert (batched - out).abs().max() > 1e-3
    # running_mean after T updates with momentum 0.1 from 0, each with one segment's batch mean.
    bn = model.short_term.diff_bn
    assert int(bn.num_batches_tracked) == 3
    running = torch.zeros(bn.num_features)
    for t in range(3):
        pre = model.short_term.diff_conv(model.short_term.pool(
            (segments[:, t].view(2, 5, 3, 32, 32)[:, 1:] - segments[:, t].view(2, 5, 3, 32, 32)[:, :-1])
            .reshape(2, 12, 32, 32)))
        running = 0.9 * running + 0.1 * pre.mean(dim=(0, 2, 3))
    torch.testing.assert_close(bn.running_mean, running, rtol=0, atol=1e-6)


def test_stp_me_eval_is_batched_and_batch_one_any_t_trains():
    torch.manual_seed(0)
    model = msn_resnet(18, num_segments=5).eval()
    x = torch.randn(5, 15, 32, 32)
    torch.testing.assert_close(model.short_term_motion(x), model.short_term(x))
    model.train()
    assert model.features(x).shape == (5, 512)            # N = 1, T = 5 in training mode


def _std(t):
    return float(t.detach().double().std())


def test_reference_init_draws_fbresnet_normal_for_new_convs_and_random_dcn_offsets():
    torch.manual_seed(0)
    model = msn_resnet(18, num_segments=2)                   # default init='reference'
    excite = model.layer2[0].excite                          # width 128 -> C' = 32
    off3, off5 = excite.dcn3.offset, excite.dcn5.offset
    assert abs(_std(off3.weight) / (2 / (3 * 3 * 18)) ** 0.5 - 1) < 0.05    # 5184 draws
    assert abs(_std(off5.weight) / (2 / (5 * 5 * 50)) ** 0.5 - 1) < 0.05
    assert torch.equal(off3.bias, torch.zeros(18)) and torch.equal(off5.bias, torch.zeros(50))
    assert abs(_std(excite.expand.weight) / (2 / 128) ** 0.5 - 1) < 0.05
    assert abs(_std(excite.reduce.weight) / (2 / 32) ** 0.5 - 1) < 0.05
    # DCN kernel and bias: nn.Conv2d's default (kaiming-uniform, bias in +-1/sqrt(fan_in)), bias non-zero.
    bound = 1 / (32 * 9) ** 0.5
    assert excite.dcn3.conv.bias.abs().max() <= bound and excite.dcn3.conv.bias.abs().min() > 0
    assert excite.dcn3.conv.weight.abs().max() <= bound
    # Offsets start away from zero: the DCN is not the plain conv at init.
    u = torch.randn(2, 32, 14, 14)
    plain = F.conv2d(u, excite.dcn3.conv.weight, excite.dcn3.conv.bias, padding=1)
    assert (excite.dcn3(u) - plain).abs().max() > 1e-2
    # TDN's L-TDM convs get the same rule (depthwise: k*k*C_out = 9 * 8).
    tdn = msn_resnet(18, num_segments=2, variant='tdn')
    lt = tdn.layer2[0].excite
    assert abs(_std(lt.reduce.weight) / (2 / 8) ** 0.5 - 1) < 0.1
    assert abs(_std(lt.smooth.weight) / (2 / 72) ** 0.5 - 1) < 0.35     # only 72 draws
    assert abs(_std(lt.expand.weight) / (2 / 128) ** 0.5 - 1) < 0.1


def test_zero_offset_init_starts_every_dcn_as_the_plain_bias_free_conv():
    torch.manual_seed(0)
    model = msn_resnet(18, num_segments=2, init='zero_offset')
    excite = model.layer2[0].excite
    assert not excite.dcn3.offset.weight.any() and not excite.dcn5.conv.bias.any()
    u = torch.randn(2, 32, 14, 14)
    torch.testing.assert_close(excite.dcn3(u), F.conv2d(u, excite.dcn3.conv.weight, padding=1),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match='zero_offset'):
        msn_resnet(18, num_segments=2, init='random')


def test_uniform_param_groups_train_everything_at_lr_x1_with_decay():
    import argparse
    from ops.run_model import build_optimizer
    model = TSN(5, 2, 'RGB', base_model='resnet18', temporal=TemporalConfig('tdn'), pretrain='none', fc_lr5=True,
                partial_bn=True)
    model.partialBN(True)
    args = argparse.Namespace(lr=0.01, momentum=0.9, weight_decay=5e-4, optimizer='sgd', adam_betas=[0.9, 0.999],
                              param_groups='uniform')
    opt = build_optimizer(args, model)
    assert len(opt.param_groups) == 1
    group = opt.param_groups[0]
    assert group['lr_mult'] == 1 and group['decay_mult'] == 1 and group['weight_decay'] == 5e-4
    tsm = build_optimizer(argparse.Namespace(**dict(vars(args), param_groups='tsm')), model)
    assert {id(p) for p in group['params']} == {id(p) for g in tsm.param_groups for p in g['params']}
    assert any(g['lr_mult'] == 5 for g in tsm.param_groups)                  # TSM keeps the x5 head
    frozen = model.base_model.layer1[0].bn1.weight                            # partial BN stays out
    assert all(p is not frozen for p in group['params'])


def test_view_softmax_averages_per_view_probabilities():
    import math
    from ops.scores import video_scores
    views = [[[0.0, math.log(3)], [0.0, 0.0]]]                      # one video, two views
    torch.testing.assert_close(torch.from_numpy(video_scores(views, view_softmax=True)),
                               torch.tensor([[0.375, 0.625]]))           # mean of (.25, .75) and (.5, .5)
    r3 = math.sqrt(3)
    torch.testing.assert_close(torch.from_numpy(video_scores(views, softmax=True)),
                               torch.tensor([[1 / (1 + r3), r3 / (1 + r3)]]))   # softmax of mean logits
    with pytest.raises(ValueError, match='exclusive'):
        video_scores(views, softmax=True, view_softmax=True)


def test_checkpoints_without_dcn_bias_still_load_as_zero_bias():
    torch.manual_seed(0)
    model = msn_resnet(18, num_segments=2, init='zero_offset')
    old = {k: v for k, v in model.state_dict().items() if not k.endswith(('dcn3.conv.bias', 'dcn5.conv.bias'))}
    assert len(old) < len(model.state_dict())
    fresh = msn_resnet(18, num_segments=2)
    fresh.load_state_dict(old)                                    # strict
    assert not fresh.layer3[1].excite.dcn5.conv.bias.any()
    # Through the project's loader too (evaluation, fine-tuning, export, conversion), strict as they use it.
    tsn = TSN(5, 2, 'RGB', base_model='resnet18', temporal=TemporalConfig('msn', motion_init='zero_offset'),
              pretrain='none', input_size=32)
    old = {k: v for k, v in tsn.state_dict().items() if not k.endswith(('dcn3.conv.bias', 'dcn5.conv.bias'))}
    rebuilt = TSN.from_config(tsn.config())
    report = load_weights(rebuilt, old, strict=True)
    assert report['missing'] == [] and not rebuilt.base_model.layer3[1].excite.dcn5.conv.bias.any()
