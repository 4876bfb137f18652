"""Temporal shift, temporal pooling and non-local blocks."""
import pytest
import torch
import torch.nn as nn
import torchvision

from ops.non_local import NL3DWrapper, NonLocalBlock3D, make_non_local
from ops.temporal_modules import make_temporal_pool, make_temporal_shift
from ops.temporal_shift import (TemporalPool, TemporalShift, shift, shift_fn, shift_for_export,
                                temporal_pool)


def _arange_clip(n=1, t=4, c=8):
    # value 8t + c at (time t, channel c), spatial 1x1: (N*T, C, 1, 1)
    return torch.arange(n * t * c, dtype=torch.float32).reshape(n * t, c, 1, 1)


def test_shift_matches_hand_computed_example():
    out = shift(_arange_clip(), n_segment=4, fold_div=8)  # fold = 1
    expected = torch.tensor([
        [8, 0, 2, 3, 4, 5, 6, 7],        # c0 <- t+1, c1 <- t-1 (zero at t=0)
        [16, 1, 10, 11, 12, 13, 14, 15],
        [24, 9, 18, 19, 20, 21, 22, 23],
        [0, 17, 26, 27, 28, 29, 30, 31],  # c0 zero at the last step
    ], dtype=torch.float32)
    assert torch.equal(out[:, :, 0, 0], expected)


@pytest.mark.parametrize('direction,first_rows', [
    ('bi', [[8, 0, 2, 3, 4, 5, 6, 7], [16, 1, 10, 11, 12, 13, 14, 15]]),
    ('uni', [[0, 1, 2, 3, 4, 5, 6, 7], [0, 9, 10, 11, 12, 13, 14, 15]])])
def test_export_shift_is_the_shift_of_its_direction(direction, first_rows):
    x = _arange_clip(n=2, t=4, c=8)
    out = shift_for_export(x, 4, 8, direction=direction)
    assert torch.equal(out[:2, :, 0, 0], torch.tensor(first_rows, dtype=torch.float32))
    for fold_div in (2, 4, 8):
        assert torch.equal(shift_for_export(x, 4, fold_div, direction), shift_fn(direction)(x, 4, fold_div))
    with pytest.raises(ValueError, match="unknown shift direction 'both'"):
        shift_for_export(x, 4, 8, direction='both')


def test_shift_keeps_videos_separate_and_fold_sizes():
    x = _arange_clip(n=2, t=3, c=8)
    out = shift(x, n_segment=3, fold_div=4).reshape(2, 3, 8)
    x5 = x.reshape(2, 3, 8)
    assert torch.equal(out[1, 0, :2], x5[1, 1, :2])     # from the next step of the same video
    assert torch.equal(out[1, 2, :2], torch.zeros(2))    # not from video 0
    assert torch.equal(out[1, 0, 2:4], torch.zeros(2))
    assert torch.equal(out[:, :, 4:], x5[:, :, 4:])


def test_shift_channels_last_and_gradient():
    x = torch.randn(2 * 4, 16, 3, 5)
    ref = shift(x, 4, 8)
    xc = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    out = shift(xc, 4, 8)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, ref)
    out.sum().backward()
    # every input element reaches the output at most once; 2 folds lose one border step each
    assert xc.grad.sum().item() == x.numel() - 2 * (16 // 8) * 3 * 5 * 2


def test_shift_rejects_bad_batch():
    with pytest.raises(ValueError, match='multiple of n_segment'):
        shift(torch.zeros(5, 8, 1, 1), 4, 8)


def test_temporal_pool_values():
    x = _arange_clip(n=1, t=4, c=2)  # channel 0 over time: 0, 2, 4, 6
    out = temporal_pool(x, 4)
    # windows (pad, 0, 2) -> 2, (2, 4, 6) -> 6
    assert out.shape == (2, 2, 1, 1)
    assert out[:, 0, 0, 0].tolist() == [2.0, 6.0]


def _resnet(name):
    return getattr(torchvision.models, name)(weights=None)


def test_blockres_and_block_placement_resnet50():
    net = make_temporal_shift(_resnet('resnet50'), 8, place='blockres')
    assert all(isinstance(b.conv1, TemporalShift) for layer in (net.layer1, net.layer2, net.layer3, net.layer4)
               for b in layer)
    net = make_temporal_shift(_resnet('resnet50'), 8, place='block')
    assert all(isinstance(b, TemporalShift) for b in net.layer3)


def test_blockres_n_round_resnet101():
    net = make_temporal_shift(_resnet('resnet101'), 8, place='blockres')
    shifted = [(name, i) for name in ('layer1', 'layer2', 'layer3', 'layer4')
               for i, b in enumerate(getattr(net, name)) if isinstance(b.conv1, TemporalShift)]
    assert len(shifted) == 18
    assert all(i % 2 == 0 for _, i in shifted)


def test_temporal_pool_segments_per_stage():
    net = make_temporal_shift(_resnet('resnet18'), 8, place='blockres', temporal_pool=True)
    make_temporal_pool(net, 8)
    assert isinstance(net.layer2, TemporalPool)
    assert net.layer1[0].conv1.n_segment == 8
    assert net.layer2.net[0].conv1.n_segment == 4
    with pytest.raises(ValueError, match='even'):
        make_temporal_pool(_resnet('resnet18'), 3)


def test_unknown_place_and_backbone_raise():
    with pytest.raises(ValueError, match='blockres'):
        make_temporal_shift(_resnet('resnet18'), 8, place='res')
    with pytest.raises(NotImplementedError):
        make_temporal_shift(nn.Sequential(nn.Conv2d(3, 3, 1)), 8)


def test_non_local_identity_at_init_and_positions():
    nl = NonLocalBlock3D(8)
    x = torch.randn(2, 8, 3, 4, 4)
    assert torch.equal(nl(x), x)
    net = make_non_local(_resnet('resnet50'), 4)
    assert [isinstance(b, NL3DWrapper) for b in net.layer2] == [True, False, True, False]
    assert [isinstance(b, NL3DWrapper) for b in net.layer3] == [True, False] * 3
    deep = make_non_local(_resnet('resnet101'), 4)
    assert len(deep.layer3) == 23  # not truncated
    assert sum(isinstance(b, NL3DWrapper) for b in deep.layer3) == 12


@pytest.mark.parametrize("channels_last", [False, True])
def test_shift_backward_is_the_adjoint_gradcheck(channels_last):
    x = torch.randn(2 * 3, 8, 3, 3, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: shift(t, 3, 4), (x,))
