import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.ops import deform_conv2d

from archs.msn import DeformableConv2d
from ops.flops import deform_conv2d_flops, forward_flops


def test_deform_conv2d_counts_like_a_dense_convolution_of_the_same_shape():
    x = torch.randn(2, 4, 9, 7)
    weight = torch.randn(6, 4, 3, 3)
    offset = torch.randn(2, 18, 9, 7)
    with FlopCounterMode(display=False) as counter:
        deform_conv2d(x, offset, weight, padding=1)
    # hand count: 2 x N x C_out x H x W x C_in x 3 x 3 = 2 * 2 * 6 * 9 * 7 * 4 * 9
    assert counter.get_total_flops() == 2 * 2 * 6 * 9 * 7 * 4 * 9 == 54432
    with FlopCounterMode(display=False) as dense:
        nn.functional.conv2d(x, weight, padding=1)
    assert dense.get_total_flops() == counter.get_total_flops()


def test_modulated_and_grouped_deform_conv2d():
    x = torch.randn(1, 4, 5, 5)
    weight = torch.randn(4, 2, 3, 3)   # two groups
    offset = torch.zeros(1, 18, 3, 3)
    mask = torch.ones(1, 9, 3, 3)
    with FlopCounterMode(display=False) as counter:
        deform_conv2d(x, offset, weight, mask=mask)
    # conv: 2 * 1 * 4 * 3 * 3 * 2 * 9 = 1296; mask: 1 * 4 * 9 * 3 * 3 = 324
    assert counter.get_total_flops() == 1296 + 324
    assert deform_conv2d_flops((1, 4, 5, 5), (4, 2, 3, 3), (1, 4, 3, 3), use_mask=True) == 1620


def test_deform_conv2d_backward_is_counted():
    x = torch.randn(1, 3, 6, 6, requires_grad=True)
    weight = torch.randn(5, 3, 3, 3, requires_grad=True)
    offset = torch.zeros(1, 18, 6, 6, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        deform_conv2d(x, offset, weight, padding=1).sum().backward()
    fwd = 2 * 1 * 5 * 6 * 6 * 3 * 9
    assert counter.get_total_flops() == 3 * fwd


def test_msn_deformable_module_counts_offset_conv_and_deformable_conv():
    module = DeformableConv2d(4, 4, 3, padding=1)
    x = torch.randn(1, 4, 8, 8)
    dense_conv = 2 * 4 * 8 * 8 * 4 * 9
    offset_conv = 2 * 18 * 8 * 8 * 4 * 9
    assert forward_flops(module, x) == dense_conv + offset_conv
    assert module.training   # restored
