"""FLOP counting with torch.utils.flop_counter, including torchvision's deformable convolution.

FlopCounterMode counts convolutions and matrix products (FLOPs = 2 x multiply-accumulates) but has no
formula for `torchvision::deform_conv2d`, so MSN's deformable convolutions counted 0. Importing this
module registers one: the same multiply-accumulates as a dense convolution of the same shape (each
output sums C_in/groups x kh x kw sampled inputs times the kernel), plus the modulation products when a
mask is used. The bilinear interpolation that produces each sampled input (4 reads, ~3 multiply-adds
per sample) is not counted, as fvcore and mmcv count deformable convolutions; it is memory-bound work.
The backward (input, weight and offset gradients) is counted as twice the forward, like a dense conv.
"""
import torch
import torchvision  # noqa: F401  (registers the torchvision:: operators)
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula


def deform_conv2d_flops(input_shape, weight_shape, out_shape, use_mask):
    """FLOPs of one deform_conv2d: 2 x N x C_out x H_out x W_out x (C_in / groups) x kh x kw
    (+ one product per sampled input and output channel group when modulated; weight_shape[1] is
    already C_in / groups)."""
    n, c_out, h_out, w_out = out_shape
    _, c_in_per_group, kh, kw = weight_shape
    macs = n * c_out * h_out * w_out * c_in_per_group * kh * kw
    flops = 2 * macs
    if use_mask:
        # the mask multiplies every sampled input once: N x C_in x kh x kw x H_out x W_out
        flops += n * input_shape[1] * kh * kw * h_out * w_out
    return flops


@register_flop_formula(torch.ops.torchvision.deform_conv2d)
def _deform_conv2d_formula(input_shape, weight_shape, offset_shape, mask_shape, bias_shape, *rest,
                           out_shape=None, **kwargs):
    return deform_conv2d_flops(input_shape, weight_shape, out_shape, use_mask=bool(rest[-1]))


@register_flop_formula(torch.ops.torchvision._deform_conv2d_backward)
def _deform_conv2d_backward_formula(grad_shape, input_shape, weight_shape, *rest, out_shape=None, **kwargs):
    return 2 * deform_conv2d_flops(input_shape, weight_shape, grad_shape, use_mask=bool(rest[-1]))


def forward_flops(model, x):
    """FLOPs of one forward pass of model(x) in eval mode without gradients; restores the training mode."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops()
