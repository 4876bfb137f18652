import math

import numpy as np
import pytest
import torch
import torchvision
from hypothesis import given, settings, strategies as st

from ops.checkpoint import (NEW_MODULE_PARTS, canonical_key, load_checkpoint, load_weights,
                            model_config_from_checkpoint, save_checkpoint)
from ops.models import TSN
from ops.temporal_modules import TemporalConfig
from ops.temporal_shift import shift
from ops.tin import (OFFSET_INIT_BIAS, RESNET_SHIFT_DIVS, TIN_OWN_KEY_PARTS, TemporalInterlace, linear_temporal_shift,
                     make_temporal_interlace, temporal_interlace)


def arange_clip(n=1, t=4, c=16, h=1, w=1, dtype=torch.float32):
    """(N*T, C, H, W) with value 100*t + c (+ 1000*n) at every pixel: easy to read back."""
    v = (torch.arange(n).view(n, 1, 1) * 1000 + torch.arange(t).view(1, t, 1) * 100
         + torch.arange(c).view(1, 1, c)).to(dtype)
    return v.view(n * t, c, 1, 1).expand(n * t, c, h, w).contiguous()


def group_offsets(n, *values):
    return torch.tensor([list(values)] * n, dtype=torch.float32)


def test_zero_offsets_unit_weights_is_identity():
    n, t = 2, 5
    x = torch.randn(n * t, 16, 3, 3)
    out = temporal_interlace(x, t, torch.zeros(n, 4), torch.ones(n, t, 4))
    assert torch.equal(out, x)


def test_integer_offsets_reproduce_tsm_shift():
    # TIN groups on C/4 = [o0, o1, -o0, -o1]; o = -1 on groups 0, 1 (first C/8 channels) takes t+1,
    # +1 on groups 2, 3 takes t-1: exactly TSM's shift with fold_div 8.
    n, t = 2, 4
    x = torch.randn(n * t, 32, 2, 3)
    out = temporal_interlace(x, t, group_offsets(n, -1, -1, 1, 1), torch.ones(n, t, 4))
    assert torch.equal(out, shift(x, t, fold_div=8))


def test_positive_and_negative_unit_offsets_on_arange():
    t = 4
    x = arange_clip(t=t, c=16)
    # fold = 4, groups of one channel: offsets +1, -1, 0, 2
    out = temporal_interlace(x, t, group_offsets(1, 1, -1, 0, 2), torch.ones(1, t, 4))
    out = out[:, :, 0, 0]
    assert out[:, 0].tolist() == [0, 0, 100, 200]                              # x[t-1]
    assert out[:, 1].tolist() == [101, 201, 301, 0]                            # x[t+1]
    assert out[:, 2].tolist() == [2, 102, 202, 302]                            # unchanged
    assert out[:, 3].tolist() == [0, 0, 3, 103]                                # x[t-2]
    assert torch.equal(out[:, 4:], x[:, 4:, 0, 0])                             # channels >= C/4


def test_half_offset_averages_neighbours():
    t = 4
    x = arange_clip(t=t, c=4, dtype=torch.float64)
    y = linear_temporal_shift(x.view(1, t, 4, 1), torch.tensor([[0.5, -0.5, 1.5, -2.5]],
                                                               dtype=torch.float64))[0, :, :, 0]
    # offset 0.5: 0.5 x[t] + 0.5 x[t-1], zero before frame 0
    assert y[:, 0].tolist() == [0.0, 50.0, 150.0, 250.0]
    # offset -0.5: 0.5 x[t] + 0.5 x[t+1]
    assert y[:, 1].tolist() == [51.0, 151.0, 251.0, 150.5]
    # offset 1.5: 0.5 x[t-1] + 0.5 x[t-2]
    assert y[:, 2].tolist() == [0.0, 1.0, 52.0, 152.0]
    # offset -2.5: 0.5 x[t+2] + 0.5 x[t+3]
    assert y[:, 3].tolist() == [253.0, 151.5, 0.0, 0.0]


def test_offsets_beyond_clip_give_zeros():
    x = torch.randn(2, 3, 4, 5)
    y = linear_temporal_shift(x, torch.tensor([[3.0, -3.0, 7.25, -4.5]] * 2))
    assert torch.equal(y, torch.zeros_like(y))


def test_weights_scale_groups_per_frame():
    t = 3
    x = torch.ones(t, 16, 1, 1)
    weights = torch.tensor([[[0.5, 1.5, 0.5, 1.5], [1.0, 2.0, 1.0, 2.0], [0.0, 0.25, 0.0, 0.25]]])
    out = temporal_interlace(x, t, torch.zeros(1, 4), weights)[:, :, 0, 0]
    # fold = 4: one channel per group, weights as given per group and frame
    assert out[:, :4].tolist() == weights[0].tolist()
    assert torch.equal(out[:, 4:], torch.ones(t, 12))


def test_gradcheck_features_and_offsets():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4, 3, dtype=torch.float64, requires_grad=True)
    o = torch.tensor([[0.3, -1.7, 1.2, -0.45], [2.6, 0.8, -0.1, -3.3]], dtype=torch.float64,
                     requires_grad=True)
    assert torch.autograd.gradcheck(linear_temporal_shift, (x, o))


def test_feature_gradient_is_adjoint():
    # <shift(x), g> = <x, adjoint(g)> with adjoint(g)[t] = (1-l) g[t+k] + l g[t+k+1]
    t, o = 6, torch.tensor([[1.25]], dtype=torch.float64)
    x = torch.randn(1, t, 1, 3, dtype=torch.float64, requires_grad=True)
    g = torch.randn(1, t, 1, 3, dtype=torch.float64)
    (linear_temporal_shift(x, o) * g).sum().backward()
    gp = torch.cat([g, torch.zeros(1, 3, 1, 3, dtype=torch.float64)], dim=1)  # zero beyond T-1
    expected = 0.75 * gp[:, 1:t + 1] + 0.25 * gp[:, 2:t + 2]
    assert torch.allclose(x.grad, expected, atol=1e-12)


def test_offset_gradient_is_neighbour_difference():
    x = arange_clip(t=4, c=1, dtype=torch.float64).view(1, 4, 1, 1)
    o = torch.tensor([[0.5]], dtype=torch.float64, requires_grad=True)
    linear_temporal_shift(x, o)[0, 2, 0, 0].backward()
    assert o.grad.item() == pytest.approx(100.0 - 200.0)   # x[t-1] - x[t] at t = 2


def test_module_init_offsets_and_weights():
    torch.manual_seed(0)
    t = 8
    m = TemporalInterlace(torch.nn.Conv2d(32, 8, 1), n_segment=t)
    x = torch.randn(3 * t, 32, 4, 4)
    offsets, weights = m.offsets_and_weights(x)
    assert offsets.shape == (3, 4) and weights.shape == (3, t, 4)
    assert torch.equal(weights, torch.ones_like(weights))           # exactly 1 at init
    assert torch.equal(offsets[:, 2:], -offsets[:, :2])
    # default init (random conv/fc1) gives offsets near +0.5; bounded in (-2, 2)
    assert (offsets[:, :2] - 0.5).abs().max() < 0.5
    # hidden activation forced to 0: offsets are exactly +-4 (sigmoid(fc2 bias) - 0.5)
    for p in (m.offset_net.conv.weight, m.offset_net.conv.bias, m.offset_net.fc1.weight,
              m.offset_net.fc1.bias, m.offset_net.fc2.weight):
        torch.nn.init.zeros_(p)
    offsets, _ = m.offsets_and_weights(x)
    expected = 4 * (1 / (1 + math.exp(-OFFSET_INIT_BIAS)) - 0.5)
    assert expected == pytest.approx(0.5)
    assert torch.allclose(offsets, torch.tensor([expected, expected, -expected, -expected]))


def test_offsets_and_weights_stay_in_range():
    torch.manual_seed(1)
    t = 4
    m = TemporalInterlace(torch.nn.Conv2d(16, 4, 1), n_segment=t)
    for p in m.parameters():
        p.data.normal_(0, 3)   # far from init, close to saturation
    offsets, weights = m.offsets_and_weights(torch.randn(2 * t, 16, 3, 3) * 10)
    # open intervals mathematically; float32 sigmoid saturates to the closed bounds
    assert offsets.abs().max() <= 2 and offsets.abs().max() > 1.5
    assert weights.min() >= 0 and weights.max() <= 2 and weights.std() > 0.1


def test_module_rejects_bad_shapes():
    m = TemporalInterlace(torch.nn.Conv2d(16, 4, 1), n_segment=4)
    with pytest.raises(ValueError, match="multiple of n_segment"):
        m(torch.randn(6, 16, 2, 2))
    with pytest.raises(ValueError, match="multiple of 4"):
        TemporalInterlace(torch.nn.Conv2d(24, 4, 1), n_segment=4)


def tin_resnet18(t):
    return make_temporal_interlace(torchvision.models.resnet18(weights=None), t)


def test_make_temporal_interlace_keys_and_placement():
    net = tin_resnet18(4)
    wrapped = [name for name, m in net.named_modules() if isinstance(m, TemporalInterlace)]
    assert wrapped == [f"layer{s}.{i}.conv1" for s in range(1, 5) for i in range(2)]
    keys = net.state_dict().keys()
    assert 'layer1.0.conv1.net.weight' in keys and 'layer1.0.conv1.weight' not in keys
    assert 'layer3.1.conv1.offset_net.fc2.bias' in keys
    assert 'layer3.1.conv1.weight_net.conv.weight' in keys
    with pytest.raises(ValueError, match="already"):
        make_temporal_interlace(net, 4)
    with pytest.raises(TypeError, match="layer1..layer4"):
        make_temporal_interlace(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1)), 4)


def test_resnet18_with_tin_forward_backward_every_param_gets_gradient():
    torch.manual_seed(0)
    # T = 8: the offset net's hidden layer has T ReLU units; with very few, all can be inactive for
    # a batch (then its conv/fc1 get no gradient, a property of the reference design).
    t = 8
    net = tin_resnet18(t)
    out = net(torch.randn(2 * t, 3, 32, 32))
    assert out.shape == (2 * t, 1000)
    out.square().mean().backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def tsn(module, arch='resnet18', t=4):
    return TSN(5, t, 'RGB', base_model=arch, temporal=TemporalConfig(module), pretrain='none', dropout=0.5)


def is_tin_own_key(key):
    return any(part in key for part in TIN_OWN_KEY_PARTS)


def test_tin_own_keys_are_new_modules_for_the_loader():
    assert all(part in NEW_MODULE_PARTS for part in TIN_OWN_KEY_PARTS)


@pytest.mark.parametrize('arch', ['resnet18', 'resnet101'])
def test_tsm_checkpoint_fills_every_tin_conv(tmp_path, arch):
    # The Kinetics recipe fine-tunes TIN from TSM: every backbone weight must come from the file,
    # only the offset/weight nets start at init. R101 TSM shifts every other block only.
    torch.manual_seed(0)
    tsm_state = {k: v + 1 for k, v in tsn('tsm', arch).state_dict().items()}  # differ from init
    path = tmp_path / 'tsm.pth'
    torch.save({'state_dict': tsm_state}, path)
    tin = tsn('tin', arch)
    report = load_weights(tin, load_checkpoint(path)['state_dict'], allow_new_modules=True)
    assert report['unexpected'] == []
    assert report['kept_init'] and all(is_tin_own_key(k) for k in report['kept_init'])
    canon = {canonical_key(k): v for k, v in tsm_state.items()}
    for k, v in tin.state_dict().items():
        if not is_tin_own_key(k):
            assert torch.equal(v, canon[canonical_key(k)]), k
    with pytest.raises(RuntimeError, match='offset_net'):
        load_weights(tsn('tin', arch), tsm_state)   # TIN's nets are new only when allowed


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.lists(st.floats(-7.5, 7.5, allow_nan=False), min_size=3, max_size=3))
def test_shift_matches_zero_padded_linear_interpolation(t, offs):
    x = torch.randn(1, t, 3, 2, dtype=torch.float64)
    y = linear_temporal_shift(x, torch.tensor([offs], dtype=torch.float64))
    grid = np.arange(-1, t + 1)
    for g, o in enumerate(offs):
        for d in range(2):
            values = np.concatenate([[0.0], x[0, :, g, d].numpy(), [0.0]])
            expected = np.interp(np.arange(t) - o, grid, values, left=0.0, right=0.0)
            np.testing.assert_allclose(y[0, :, g, d].numpy(), expected, atol=1e-12)


def test_offsets_stay_float32_under_bf16_autocast():
    t = 4
    m = TemporalInterlace(torch.nn.Conv2d(16, 4, 1), n_segment=t)
    x = torch.randn(2 * t, 16, 3, 3).bfloat16()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        offsets, weights = m.offsets_and_weights(x)
        y = m(x)
    assert offsets.dtype == weights.dtype == torch.float32
    assert y.dtype == torch.bfloat16


def test_a_model_moved_to_float64_runs_in_float64():
    # TIN's offset and weight nets used to take a float32 descriptor, which a float64 model rejects.
    t = 4
    torch.manual_seed(0)
    m = TemporalInterlace(torch.nn.Conv2d(16, 4, 1), n_segment=t).double()
    with torch.no_grad():
        m.weight_net.conv.weight.normal_(0, 0.5)            # per-frame weights != 1
    x = torch.randn(2 * t, 16, 3, 3, dtype=torch.float64, requires_grad=True)
    offsets, weights = m.offsets_and_weights(x)
    assert offsets.dtype == weights.dtype == torch.float64
    # The descriptor is the spatial mean of the first fold, in float64 (not rounded through float32).
    desc = x[:, :4].mean(dim=(2, 3)).view(2, t, 4).transpose(1, 2)
    o = m.offset_net(desc)
    torch.testing.assert_close(offsets, torch.cat([o, -o], 1), rtol=0, atol=0)
    y = m(x)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, m.net(temporal_interlace(x, t, offsets, weights)), rtol=0, atol=0)
    y.square().sum().backward()
    assert x.grad.dtype == torch.float64 and m.offset_net.fc2.weight.grad.abs().sum() > 0
    # The whole TIN TSN in float64.
    model = TSN(3, t, 'RGB', base_model='resnet18', pretrain='none', temporal=TemporalConfig('tin'), input_size=32)
    out = model.double().eval()(torch.randn(1, 3 * t, 32, 32, dtype=torch.float64))
    assert out.dtype == torch.float64 and out.shape == (1, 3)


@pytest.mark.parametrize('arch', ['resnet18', 'resnet50'])
def test_resnet_shift_divs_are_the_ones_tin_accepts(arch):
    # --tin_shift_div's choices: C // shift_div must be a positive multiple of 4 for every block input C.
    accepted = []
    with torch.device('meta'):         # shapes only: no memory, no initialisation time
        for shift_div in range(1, 34):
            try:
                make_temporal_interlace(getattr(torchvision.models, arch)(), 4, shift_div=shift_div)
                accepted.append(shift_div)
            except ValueError:
                pass
    assert tuple(accepted) == RESNET_SHIFT_DIVS
    with pytest.raises(ValueError, match='positive multiple'):
        TemporalInterlace(torch.nn.Conv2d(64, 4, 1), n_segment=4, shift_div=-4)   # -16 channels


def test_tin_shift_div_sets_the_fold_and_round_trips_through_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = TSN(5, 4, 'RGB', base_model='resnet18', pretrain='none', input_size=32,
                temporal=TemporalConfig('tin', tin_shift_div=2))
    default = TSN(5, 4, 'RGB', base_model='resnet18', pretrain='none', input_size=32, temporal=TemporalConfig('tin'))
    # layer1.0.conv1 reads 64 channels: 1/2 of them interlaced, 1/4 by default (mmaction2's TIN)
    assert (model.base_model.layer1[0].conv1.fold, default.base_model.layer1[0].conv1.fold) == (32, 16)
    assert model.base_model.layer1[0].conv1.offset_net.conv.in_channels == 32
    assert model.config()['tin_shift_div'] == 2
    path = tmp_path / 'tin.pth.tar'
    save_checkpoint({'epoch': 1, 'state_dict': model.state_dict(), 'config': model.config()}, str(path))
    ckpt = load_checkpoint(str(path))
    rebuilt = TSN.from_config(model_config_from_checkpoint(ckpt, path=str(path)))
    assert rebuilt.temporal.tin_shift_div == 2 and rebuilt.base_model.layer1[0].conv1.fold == 32
    load_weights(rebuilt, ckpt['state_dict'], strict=True)
    x = torch.rand(1, model.input_channels, 32, 32)
    torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match='size mismatch|shape'):   # the offset nets of 1/4 differ in width
        load_weights(default, ckpt['state_dict'], strict=True)


def test_tin_shift_div_option(tmp_path, capsys):
    from opts import parse_args
    from ops.run_model import temporal_config
    base = ['toy', 'RGB', '--data_root', str(tmp_path), '--temporal_module', 'tin']
    assert temporal_config(parse_args(base)).tin_shift_div == 4
    assert temporal_config(parse_args(base + ['--tin_shift_div', '8'])) == TemporalConfig('tin', tin_shift_div=8)
    for bad in ('0', '3', '32'):
        with pytest.raises(SystemExit) as exc:
            parse_args(base + ['--tin_shift_div', bad])
        assert exc.value.code == 2 and 'invalid choice' in capsys.readouterr().err
