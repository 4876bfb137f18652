"""Temporal Interlacing Network (TIN; Shao et al., AAAI 2020) in pure PyTorch.

TIN replaces TSM's fixed +-1 shift by learned fractional shifts. In every residual block of
layer1-4 (before conv1, residual branch only, like TSM 'blockres') the first C/shift_div channels
are split into 4 groups; group g is moved along time by offset o_g (linear interpolation, zero
padding) and multiplied by a per-frame weight. Per video, an offset net predicts 2 offsets used as
[o0, o1, -o0, -o1]; a weight net predicts 2 per-frame weights used as [w0, w1, w0, w1].

The shift is a gather along time, so autograd gives the true adjoint for the feature gradient
(the mmcv `tin_shift` CUDA backward used by mmaction2 applies the forward shift instead; we do not
reproduce that) and the interpolation weight gives the offset gradient x[t-o-1] - x[t-o].
"""
import logging
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)

NUM_GROUPS = 4
OFFSET_BOUND = 2.0
# fc2 bias = logit(0.625) so that 4 * (sigmoid(bias) - 0.5) = +0.5: groups start half a frame apart.
OFFSET_INIT_BIAS = math.log(0.625 / 0.375)
# Parameters that exist only in TIN; ops.checkpoint.NEW_MODULE_PARTS must list them.
TIN_OWN_KEY_PARTS = ('.offset_net.', '.weight_net.')
# The shift_div values TIN takes in a torchvision ResNet (--tin_shift_div): the conv1 inputs of its blocks
# have 64 * 2^k channels, and C // shift_div must be a positive multiple of NUM_GROUPS for each of them,
# which holds for the powers of two up to 64 / NUM_GROUPS only (e.g. 5: 64 // 5 = 12 but 128 // 5 = 25).
RESNET_SHIFT_DIVS = (1, 2, 4, 8, 16)


def linear_temporal_shift(x, offsets):
    """Move each channel group along time by a fractional offset, zero padded.

    x: (N, T, G, D) features (D = channels per group * H * W); offsets: (N, G), any real values.
    out[n, t, g] = (1 - lam) * x[n, t - k, g] + lam * x[n, t - k - 1, g] with k = floor(o),
    lam = o - k, and x[n, tau] = 0 outside [0, T). A positive offset moves content forward in time.
    Differentiable in x (gather, true adjoint) and in offsets (through lam).
    """
    n, t, g, _ = x.shape
    if offsets.shape != (n, g):
        raise ValueError(f"offsets must have shape {(n, g)} for x of shape {tuple(x.shape)}, "
                         f"got {tuple(offsets.shape)}")
    floor = torch.floor(offsets).detach()
    lam = (offsets - floor).to(x.dtype)                                        # (N, G) in [0, 1)
    time = torch.arange(t, device=x.device).view(1, t, 1)
    src0 = time - floor.long().unsqueeze(1)                                   # (N, T, G): t - k
    src1 = src0 - 1                                                           # t - k - 1

    def take(src):
        valid = ((src >= 0) & (src < t)).unsqueeze(-1).to(x.dtype)            # (N, T, G, 1)
        index = src.clamp(0, t - 1).unsqueeze(-1).expand_as(x)                # (N, T, G, D)
        return torch.gather(x, 1, index) * valid

    lam = lam.view(n, 1, g, 1)
    return (1 - lam) * take(src0) + lam * take(src1)


def temporal_interlace(x, n_segment, offsets, weights, shift_div=4):
    """Interlace the first C // shift_div channels of x; the others pass unchanged.

    x: (N*T, C, H, W); offsets: (N, 4) per-group offsets; weights: (N, T, 4) per-frame group
    weights. Returns (N*T, C, H, W). Groups are contiguous blocks of fold // 4 channels.
    """
    nt, c, h, w = x.shape
    if nt % n_segment:
        raise ValueError(f"batch dimension {nt} is not a multiple of n_segment={n_segment}")
    n = nt // n_segment
    fold = c // shift_div
    if fold % NUM_GROUPS:
        raise ValueError(f"C // shift_div = {c} // {shift_div} = {fold} must be divisible by "
                         f"{NUM_GROUPS} (the interlacing groups)")
    head = x[:, :fold].reshape(n, n_segment, NUM_GROUPS, (fold // NUM_GROUPS) * h * w)
    moved = linear_temporal_shift(head, offsets)                             # (N, T, 4, D)
    moved = moved * weights.to(x.dtype).unsqueeze(-1)
    return torch.cat([moved.reshape(nt, fold, h, w), x[:, fold:]], dim=1)


class OffsetNet(nn.Module):
    """Per-video offsets (N, 2) in (-2, 2) from the pooled descriptor (N, fold, T)."""

    def __init__(self, fold, n_segment):
        super().__init__()
        self.conv = nn.Conv1d(fold, 1, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(n_segment, n_segment)
        self.fc2 = nn.Linear(n_segment, 2)
        nn.init.constant_(self.fc2.bias, OFFSET_INIT_BIAS)

    def forward(self, desc):
        h = self.conv(desc).flatten(1)                                        # (N, T)
        h = self.fc2(F.relu(self.fc1(h)))                                     # (N, 2)
        return 2 * OFFSET_BOUND * (torch.sigmoid(h) - 0.5)


class WeightNet(nn.Module):
    """Per-frame weights (N, T, 2) in (0, 2), exactly 1 at init (conv zero-initialised)."""

    def __init__(self, fold):
        super().__init__()
        self.conv = nn.Conv1d(fold, 2, kernel_size=3, padding=1)
        # Zero weight and bias: output is 1 whatever the input; the weight still receives gradient.
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, desc):
        return 2 * torch.sigmoid(self.conv(desc)).transpose(1, 2)


class TemporalInterlace(nn.Module):
    """TIN wrapper: forward(x) = net(interlace(x)). `net` keeps the TSM checkpoint key layout."""

    def __init__(self, net, n_segment, shift_div=4):
        super().__init__()
        channels = net.in_channels
        fold = channels // shift_div if shift_div >= 1 else 0
        if fold <= 0 or fold % NUM_GROUPS:
            raise ValueError(f"TIN needs {channels} // shift_div={shift_div} to be a positive "
                             f"multiple of {NUM_GROUPS}")
        self.net = net
        self.n_segment = n_segment
        self.shift_div = shift_div
        self.fold = fold
        self.offset_net = OffsetNet(fold, n_segment)
        self.weight_net = WeightNet(fold)

    def offsets_and_weights(self, x):
        """Return group offsets (N, 4) and group weights (N, T, 4) for x (N*T, C, H, W)."""
        nt = x.shape[0]
        if nt % self.n_segment:
            raise ValueError(f"batch dimension {nt} is not a multiple of n_segment="
                             f"{self.n_segment} (TIN's offset net is built for a fixed T)")
        # The tiny nets run in their parameters' dtype, autocast off: under autocast x is bf16/fp16 while
        # they stay float32 (bf16 would quantise the fractional offsets); a model moved to float64 keeps
        # float64 throughout.
        desc = x[:, :self.fold].to(self.offset_net.fc2.weight.dtype).mean(dim=(2, 3))   # (N*T, fold)
        desc = desc.view(nt // self.n_segment, self.n_segment, self.fold).transpose(1, 2)
        with torch.autocast(device_type=x.device.type, enabled=False):
            o = self.offset_net(desc)                                         # (N, 2)
            w = self.weight_net(desc)                                         # (N, T, 2)
        return torch.cat([o, -o], dim=1), w.repeat(1, 1, 2)

    def forward(self, x):
        offsets, weights = self.offsets_and_weights(x)
        return self.net(temporal_interlace(x, self.n_segment, offsets, weights, self.shift_div))

    def extra_repr(self):
        return f"n_segment={self.n_segment}, shift_div={self.shift_div}"


def make_temporal_interlace(net, n_segment, shift_div=4):
    """Wrap conv1 of every residual block of layer1-4 of a torchvision ResNet with TIN (in place).

    Keys become layerX.i.conv1.net.weight, exactly TSM 'blockres' keys, so a TSM checkpoint
    (the Kinetics recipe fine-tunes from one) fills every backbone conv; only TIN's own
    layerX.i.conv1.offset_net.* and .weight_net.* (TIN_OWN_KEY_PARTS) are new. Blocks that TSM
    leaves unshifted (R101/R152 shift every other block) differ only by the `.net` level, which
    ops.checkpoint.load_weights removes when matching keys. Returns net.
    """
    stages = [getattr(net, f"layer{i}", None) for i in range(1, 5)]
    if any(stage is None for stage in stages):
        raise TypeError(f"make_temporal_interlace needs a torchvision-style ResNet with "
                        f"layer1..layer4, got {type(net).__name__}")
    count = 0
    for stage in stages:
        for block in stage:
            if isinstance(block.conv1, TemporalInterlace):
                raise ValueError("TIN is already inserted in this network")
            block.conv1 = TemporalInterlace(block.conv1, n_segment, shift_div=shift_div)
            count += 1
    logger.info("inserted %d temporal interlace modules (n_segment=%d, shift_div=%d)",
                count, n_segment, shift_div)
    return net
