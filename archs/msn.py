"""Motion Sensitive Network (MSN, built on TDN; Wang et al. CVPR 2021) on a torchvision ResNet.

Input per segment: 5 consecutive RGB frames stacked on channels, (N*T, 15, H, W), frame k in
channels 3k:3k+3. The 2-D main stream sees the centre frame (channels 6:9).

- Short-term branch (STP-ME, `ShortTermPyramid`): a pyramid of frame differences (raw frames,
  shallow features, deeper features), (N*T, 64, H/4, W/4); fused into the main stream after the
  stem (alpha/beta from the number of segments, as TDN) and, through a second layer1, after
  layer1 (0.75/0.25, as the MSN code).
- Long-term module (DS-ME, `MotionExcitation`) in every block of layer2-4 after conv1/bn1/relu,
  followed by a learnable temporal shift (`LearnableShift`, a depthwise temporal conv that starts
  as the TSM shift with fold C/8).

variant='tdn' builds TDN itself from the same parts: S-TDM (`ShortTermDifference`, at H/8 and
upsampled for both fusions, alpha/beta at both) and L-TDM (`LongTermDifference`) instead of DS-ME.

Differences from the reference code (its defects): every parameter is a registered submodule of a
standard type (the deformable kernels are nn.Conv2d weights, so optimiser policies see them), DS-ME
uses the model's number of segments (the reference hard-codes 8), and no squeeze() breaks batch 1.
Convolutions whose bias is cancelled exactly (by a following BatchNorm in training, or by a
difference of two outputs of the same conv) are bias-free, so no parameter is dead.

Initialisation (init='reference', the default): as the reference backbone constructor (FBResNet in
TDN's and MSN's ops/base_module.py), every nn.Conv2d inside the blocks' new modules (DS-ME / L-TDM,
the DCN offset convs included) is drawn from N(0, sqrt(2 / (k*k*C_out))) after the model is built;
the DCN kernels and their biases keep nn.Conv2d's default (kaiming-uniform) init, like the
reference's DeformConv. init='zero_offset' keeps PyTorch's default init for those convs and starts
every DCN as the plain bias-free conv (zero offsets, zero bias).
"""
import copy
import logging
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from archs import imagenet
from archs.backbone import FamilyOptions, Option, VideoBackbone
from ops.weights_io import read_state_dict

logger = logging.getLogger(__name__)

RESNET_DEPTHS = (18, 34, 50, 101, 152)
FRAMES_PER_SEGMENT = 5
CENTRE_FRAME = FRAMES_PER_SEGMENT // 2
PRETRAIN_CHOICES = ('none', 'imagenet')  # anything else is a path to a local weights file
LAYER1_FUSE = (0.75, 0.25)  # MSN's layer1 fusion, fixed for any number of segments
VARIANTS = ('msn', 'tdn')
MOTION_INITS = ('reference', 'zero_offset')
# The command-line option of the MSN/TDN family (opts.py adds it).
CLI_OPTIONS = FamilyOptions('MSN/TDN', train=(
    Option(('--motion_init',), (('default', 'reference'), ('choices', MOTION_INITS), (
        'help', "MSN/TDN new modules: reference = the FBResNet re-init N(0, sqrt(2/(k*k*C_out))) (DCN offsets "
                "start random); zero_offset = PyTorch defaults, DCNs start as plain convs"))),
))


def stem_fusion_weights(num_segments):
    """TDN's (alpha, beta) for the stem fusion: (0.5, 0.5) for 8 segments, else (0.75, 0.25)."""
    return (0.5, 0.5) if num_segments == 8 else (0.75, 0.25)


class ShortTermPyramid(nn.Module):
    """STP-ME: (N*T, 15, H, W) -> (N*T, out_channels, H/4, W/4), a sum of three difference maps.

    D1: consecutive raw-frame differences (12 channels) -> maxpool -> 7x7/2 conv -> BN -> ReLU.
    D2: differences of shallow features f_k = conv7x7/2(I_k) of frames 1, 3, 5 -> maxpool -> 5x5
        conv -> BN -> ReLU.
    D3: difference of deeper features g_k = conv5x5(f_k) of frames 1 and 5 -> maxpool.
    f and g are linear, so f5 - f3 = f(I5 - I3) etc.; computing on differences is the same map and
    makes the branch exactly invariant to a static image added to all frames.
    """

    def __init__(self, out_channels=64, shallow_channels=16):
        super().__init__()
        diff_channels = 3 * (FRAMES_PER_SEGMENT - 1)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.diff_conv = nn.Conv2d(diff_channels, out_channels, 7, stride=2, padding=3, bias=False)
        self.diff_bn = nn.BatchNorm2d(out_channels)
        self.shallow_conv = nn.Conv2d(3, shallow_channels, 7, stride=2, padding=3, bias=False)
        self.shallow_diff_conv = nn.Conv2d(2 * shallow_channels, out_channels, 5, padding=2,
                                           bias=False)
        self.shallow_diff_bn = nn.BatchNorm2d(out_channels)
        self.deep_conv = nn.Conv2d(shallow_channels, out_channels, 5, padding=2, bias=False)

    def forward(self, x):
        nt, _, h, w = x.shape
        frames = x.view(nt, FRAMES_PER_SEGMENT, 3, h, w)
        diffs = (frames[:, 1:] - frames[:, :-1]).reshape(nt, -1, h, w)        # (NT, 12, H, W)
        d1 = F.relu(self.diff_bn(self.diff_conv(self.pool(diffs))))
        f53 = self.shallow_conv(frames[:, 4] - frames[:, 2])                  # (NT, 16, H/2, W/2)
        f31 = self.shallow_conv(frames[:, 2] - frames[:, 0])
        d2 = F.relu(self.shallow_diff_bn(self.shallow_diff_conv(self.pool(torch.cat([f53, f31], 1)))))
        d3 = self.pool(self.deep_conv(f53 + f31))                              # g5 - g1
        return d1 + d2 + d3


class ShortTermDifference(nn.Module):
    """TDN S-TDM: (N*T, 15, H, W) -> (N*T, 64, H/8, W/8).

    Consecutive frame differences (12 channels) -> avgpool 2 -> 7x7/2 conv -> BN -> ReLU ->
    maxpool. The conv starts from the stem conv averaged over RGB and copied to the 12 channels.
    """

    def __init__(self, stem_conv):
        super().__init__()
        diff_channels = 3 * (FRAMES_PER_SEGMENT - 1)
        out = stem_conv.out_channels
        self.conv = nn.Conv2d(diff_channels, out, 7, stride=2, padding=3, bias=False)
        with torch.no_grad():
            rgb_mean = stem_conv.weight.mean(dim=1, keepdim=True)               # (64, 1, 7, 7)
            self.conv.weight.copy_(rgb_mean.expand_as(self.conv.weight))
        self.bn = nn.BatchNorm2d(out)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, x):
        nt, _, h, w = x.shape
        frames = x.view(nt, FRAMES_PER_SEGMENT, 3, h, w)
        diffs = (frames[:, 1:] - frames[:, :-1]).reshape(nt, -1, h, w)        # (NT, 12, H, W)
        return self.pool(F.relu(self.bn(self.conv(F.avg_pool2d(diffs, 2)))))


def _num_videos(nt, t):
    """N of an (N*T, ...) batch; a clear error when N*T is not a multiple of T."""
    if nt % t:
        raise ValueError(f"batch dimension {nt} is not a multiple of num_segments={t}")
    return nt // t


class DeformableConv2d(nn.Module):
    """DCNv1: `offset` (a conv) predicts 2 k*k sampling offsets per pixel for the kernel `conv`.

    The kernel and its bias live in an nn.Conv2d (`conv`), so optimiser policies that collect Conv2d
    weights train them (the reference's DeformConvPack kernel and bias were silently left out of the
    optimiser, so its bias stayed at its random init). Built with zero offsets; MSNResNet's init
    decides the rest (see the module docstring).
    """

    def __init__(self, in_channels, out_channels, kernel_size, padding=0, bias=False):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
        self.offset = nn.Conv2d(in_channels, 2 * kernel_size * kernel_size, kernel_size,
                                padding=padding)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before the DS-ME DCNs had a bias hold none: that conv is a zero bias.
        key = prefix + 'conv.bias'
        if self.conv.bias is not None and key not in state_dict and prefix + 'conv.weight' in state_dict:
            state_dict[key] = torch.zeros_like(self.conv.bias)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x):
        # torchvision's kernels turn a NaN sampling position into an integer index and read outside the
        # map (a segfault on CPU). A NaN offset samples the regular grid instead; a NaN in x still
        # propagates to the output (and the loss), so a diverged run stops with main.py's NaN message.
        offset = torch.nan_to_num(self.offset(x).float(), nan=0.0)
        bias = None if self.conv.bias is None else self.conv.bias.float()
        # float32: torchvision's CPU kernel has no bf16/fp16 version (its CUDA autocast casts too)
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = deform_conv2d(x.float(), offset, self.conv.weight.float(), bias,
                                stride=self.conv.stride, padding=self.conv.padding,
                                dilation=self.conv.dilation)
        return out.to(x.dtype)


class MotionExcitation(nn.Module):
    """DS-ME: channel attention from multi-scale deformable motion; y = x + x * a, a in (-0.5, 0.5).

    x: (N*T, C, H, W). u = BN(conv1x1(x)) with C/4 channels. Motion between frames t and t+1:
    |DCN3(u[t+1]) + DCN5(u[t+1]) + BN(conv1x1(maxpool(u[t+1]))) - 3 u[t]| for t < T-1; the last
    slot holds the temporal context (3-D conv + BN, averaged over time). a = sigmoid(BN(conv1x1(
    spatial mean))) - 0.5 per frame and channel.
    """

    def __init__(self, channels, num_segments, reduction=4):
        super().__init__()
        mid = channels // reduction
        self.num_segments = num_segments
        self.reduce = nn.Conv2d(channels, mid, 1, bias=False)
        self.reduce_bn = nn.BatchNorm2d(mid)
        self.context = nn.Conv3d(mid, mid, 3, padding=1, bias=False)
        self.context_bn = nn.BatchNorm3d(mid)
        # The reference's DCNs have a bias; it is not cancelled (no BN follows before the abs).
        self.dcn3 = DeformableConv2d(mid, mid, 3, padding=1, bias=True)
        self.dcn5 = DeformableConv2d(mid, mid, 5, padding=2, bias=True)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
        self.point = nn.Conv2d(mid, mid, 1, bias=False)
        self.point_bn = nn.BatchNorm2d(mid)
        self.expand = nn.Conv2d(mid, channels, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(channels)

    def attention(self, x):
        """Return a (N*T, C, 1, 1) in (-0.5, 0.5)."""
        nt, _, h, w = x.shape
        t = self.num_segments
        n = _num_videos(nt, t)
        u = self.reduce_bn(self.reduce(x))
        mid = u.shape[1]
        u = u.view(n, t, mid, h, w)
        context = self.context_bn(self.context(u.transpose(1, 2)))           # (N, C', T, H, W)
        context = context.mean(dim=2, keepdim=True).transpose(1, 2)          # (N, 1, C', H, W)
        pre = u[:, :-1].reshape(-1, mid, h, w)                                # (N*(T-1), C', H, W)
        post = u[:, 1:].reshape(-1, mid, h, w)
        motion = (self.dcn3(post) + self.dcn5(post) + self.point_bn(self.point(self.pool(post)))
                  - 3 * pre).abs()
        motion = torch.cat([motion.view(n, t - 1, mid, h, w), context], dim=1)
        pooled = motion.reshape(nt, mid, h, w).mean(dim=(2, 3), keepdim=True)  # (NT, C', 1, 1)
        return torch.sigmoid(self.expand_bn(self.expand(pooled))) - 0.5

    def forward(self, x):
        return x + x * self.attention(x)


class LongTermDifference(nn.Module):
    """TDN L-TDM: spatial attention from differences with the neighbouring frames.

    x: (N*T, C, H, W). b = BN(conv1x1(x)) with C/16 channels, c = depthwise 3x3 conv of b.
    Forward difference d_f[t] = c[t+1] - b[t] (0 at t = T-1), backward d_b[t] = c[t-1] - b[t]
    (0 at t = 0). Each goes through m(d) = (d + up(BN(conv3x3(avgpool2(d)))) + BN(conv3x3(d))) / 3
    and a(d) = sigmoid(BN(conv1x1(m(d)))) - 0.5 (weights shared by both directions);
    y = x + x * (a(d_f) + a(d_b)) / 2. The reference's backward direction takes its full-resolution
    term from the already convolved forward one (BN(conv(BN(conv(d_f))))); here it is BN(conv(d_b)).
    """

    def __init__(self, channels, num_segments, reduction=16):
        super().__init__()
        mid = channels // reduction
        self.num_segments = num_segments
        self.reduce = nn.Conv2d(channels, mid, 1, bias=False)
        self.reduce_bn = nn.BatchNorm2d(mid)
        self.smooth = nn.Conv2d(mid, mid, 3, padding=1, groups=mid, bias=False)
        self.coarse = nn.Conv2d(mid, mid, 3, padding=1, bias=False)
        self.coarse_bn = nn.BatchNorm2d(mid)
        self.fine = nn.Conv2d(mid, mid, 3, padding=1, bias=False)
        self.fine_bn = nn.BatchNorm2d(mid)
        self.expand = nn.Conv2d(mid, channels, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(channels)

    def differences(self, x):
        """Return (d_f, d_b), each (N*T, C/16, H, W)."""
        nt, _, h, w = x.shape
        t = self.num_segments
        n = _num_videos(nt, t)
        b = self.reduce_bn(self.reduce(x))
        c = self.smooth(b)
        mid = b.shape[1]
        b, c = b.view(n, t, mid, h, w), c.view(n, t, mid, h, w)
        zero = torch.zeros_like(b[:, :1])
        d_f = torch.cat([c[:, 1:] - b[:, :-1], zero], dim=1)
        d_b = torch.cat([zero, c[:, :-1] - b[:, 1:]], dim=1)
        return d_f.reshape(nt, mid, h, w), d_b.reshape(nt, mid, h, w)

    def _gate(self, d):
        # The reference pools 2x2 unconditionally and fails on maps under 2 px (layer4 of inputs < 64 px);
        # there the coarse path sees the map itself.
        pooled = F.avg_pool2d(d, 2) if min(d.shape[-2:]) >= 2 else d
        coarse = self.coarse_bn(self.coarse(pooled))
        coarse = F.interpolate(coarse, size=d.shape[-2:], mode='nearest')
        m = (d + coarse + self.fine_bn(self.fine(d))) / 3
        return torch.sigmoid(self.expand_bn(self.expand(m))) - 0.5

    def attention(self, x):
        """Return a (N*T, C, H, W) in (-0.5, 0.5)."""
        d_f, d_b = self.differences(x)
        return (self._gate(d_f) + self._gate(d_b)) / 2

    def forward(self, x):
        return x + x * self.attention(x)


def init_motion_modules_(excite_modules, init):
    """Initialise the new modules of the blocks (DS-ME or L-TDM) in place; see the module docstring.

    reference: nn.Conv2d weights ~ N(0, sqrt(2 / (k_h k_w C_out))), offset convs included (their
    biases stay 0), except the DCN kernels, which keep nn.Conv2d's default weight and random bias
    like the reference's DeformConv. zero_offset: PyTorch's default init, DCN offsets and bias zero.
    """
    if init not in MOTION_INITS:
        raise ValueError(f"unknown init {init!r}; allowed: {MOTION_INITS}")
    for excite in excite_modules:
        dcn_kernels = {id(m.conv) for m in excite.modules() if isinstance(m, DeformableConv2d)}
        for m in excite.modules():
            if isinstance(m, DeformableConv2d):
                nn.init.zeros_(m.offset.bias)
                if init == 'zero_offset':
                    nn.init.zeros_(m.offset.weight)
                    if m.conv.bias is not None:
                        nn.init.zeros_(m.conv.bias)
            elif init == 'reference' and isinstance(m, nn.Conv2d) and id(m) not in dcn_kernels:
                k_h, k_w = m.kernel_size
                with torch.no_grad():
                    m.weight.normal_(0, (2.0 / (k_h * k_w * m.out_channels)) ** 0.5)


class LearnableShift(nn.Module):
    """Depthwise temporal conv (kernel 3, zero padding) that starts as the TSM shift.

    Channels [0, fold) take frame t+1, [fold, 2 fold) take frame t-1, the rest are copied
    (fold = C // fold_div). The kernel is an nn.Conv1d weight (C, 1, 3) so optimiser policies see
    it; the forward applies it as three multiply-adds over (N, T, C, H, W) without permuting.
    """

    def __init__(self, channels, num_segments, fold_div=8):
        super().__init__()
        self.num_segments = num_segments
        self.fold_div = fold_div
        self.conv = nn.Conv1d(channels, channels, 3, padding=1, groups=channels, bias=False)
        fold = channels // fold_div
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:fold, 0, 2] = 1                                 # out[t] = x[t+1]
            self.conv.weight[fold:2 * fold, 0, 0] = 1                         # out[t] = x[t-1]
            self.conv.weight[2 * fold:, 0, 1] = 1                             # out[t] = x[t]

    def forward(self, x):
        nt, c, h, w = x.shape
        t = self.num_segments
        n = _num_videos(nt, t)
        padded = F.pad(x.view(n, t, c, h, w), (0, 0, 0, 0, 0, 0, 1, 1))  # (N, T+2, C, H, W)
        k = self.conv.weight.squeeze(1).t().reshape(3, 1, 1, c, 1, 1).to(x.dtype)  # taps t-1, t, t+1
        out = k[0] * padded[:, :-2] + k[1] * padded[:, 1:-1] + k[2] * padded[:, 2:]
        return out.reshape(nt, c, h, w)


class MotionBlock(nn.Module):
    """A torchvision BasicBlock/Bottleneck with excitation + learnable shift after conv1/bn1/relu.

    excite: class called as excite(width, num_segments) (default MotionExcitation, MSN's DS-ME).

    Submodule names of the wrapped block are kept (conv1, bn1, ..., downsample), so ImageNet and
    checkpoint keys stay layerX.i.conv1.weight; the new parts are `excite` and `shift`.
    """

    def __init__(self, block, num_segments, excite=None):
        super().__init__()
        for name, module in block.named_children():
            setattr(self, name, module)
        if block.downsample is None:  # a plain attribute, not a child
            self.downsample = None
        self.bottleneck = hasattr(block, 'conv3')
        width = block.conv1.out_channels
        self.excite = (excite or MotionExcitation)(width, num_segments)
        self.shift = LearnableShift(width, num_segments)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(self.shift(self.excite(out))))
        if self.bottleneck:
            out = self.bn3(self.conv3(self.relu(out)))
        return self.relu(out + identity)


def _resize_like(m, ref):
    """Nearest upsampling of m (N, C, h, w) to ref's spatial size; identity when they agree."""
    if m.shape[-2:] == ref.shape[-2:]:
        return m
    return F.interpolate(m, size=ref.shape[-2:], mode='nearest')


class MSNResNet(VideoBackbone, nn.Module):
    """MSN (or TDN) on a torchvision ResNet: (N*T, 15, H, W) -> fc(features (N*T, fc.in_features)).

    variant 'msn': STP-ME short-term branch, DS-ME in layer2-4, layer1 fusion 0.75/0.25.
    variant 'tdn': S-TDM short-term branch (at H/8, upsampled), L-TDM in layer2-4, both fusions
    with the stem (alpha, beta). Attribute names follow torchvision (conv1 ... layer4, avgpool,
    fc) so TSN can replace `fc` and ImageNet keys load unchanged; `short_term` and
    `motion_layer1` form the short-term branch; blocks of layer2-4 gain `excite` and `shift`.
    """

    def __init__(self, resnet, num_segments, variant='msn', stem_fuse=None, layer1_fuse=None,
                 init='reference'):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; allowed: {VARIANTS}")
        if num_segments < 1:
            raise ValueError(f"num_segments must be >= 1, got {num_segments}")
        self.num_segments = num_segments
        self.variant = variant
        self.stem_fuse = tuple(stem_fuse or stem_fusion_weights(num_segments))
        if layer1_fuse is None:
            layer1_fuse = LAYER1_FUSE if variant == 'msn' else self.stem_fuse
        self.layer1_fuse = tuple(layer1_fuse)
        excite = MotionExcitation if variant == 'msn' else LongTermDifference
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.relu = resnet.relu
        self.maxpool = resnet.maxpool
        self.layer1 = resnet.layer1
        for name in ('layer2', 'layer3', 'layer4'):
            stage = getattr(resnet, name)
            setattr(self, name, nn.Sequential(*[MotionBlock(b, num_segments, excite) for b in stage]))
        self.avgpool = resnet.avgpool
        self.fc = resnet.fc
        # The reference builds a second ImageNet ResNet for this layer1; a copy is the same weights.
        self.motion_layer1 = copy.deepcopy(resnet.layer1)
        if variant == 'msn':
            self.short_term = ShortTermPyramid(out_channels=resnet.conv1.out_channels)
        else:
            self.short_term = ShortTermDifference(resnet.conv1)
        init_motion_modules_([b.excite for name in ('layer2', 'layer3', 'layer4')
                              for b in getattr(self, name)], init)

    def short_term_motion(self, x):
        """The short-term branch on (N*T, 15, H, W).

        MSN in training runs STP-ME once per segment index, as the reference (msn_net.py loops over
        the segments): its BatchNorms normalise with the statistics of the N clips of one segment
        index and update their running statistics T times per step. In eval mode the per-segment
        and batched computations are the same function, so one batched call is made.
        """
        if not (self.training and self.variant == 'msn'):
            return self.short_term(x)
        nt, c, h, w = x.shape
        t = self.num_segments
        segments = x.view(nt // t, t, c, h, w)
        out = torch.stack([self.short_term(segments[:, i]) for i in range(t)], dim=1)  # (N, T, C', h', w')
        return out.reshape(nt, *out.shape[2:])

    def features(self, x):
        """(N*T, 15, H, W) -> pooled features (N*T, fc.in_features)."""
        if x.dim() != 4 or x.shape[1] != 3 * FRAMES_PER_SEGMENT:
            raise ValueError(f"{self.variant.upper()} expects (N*T, {3 * FRAMES_PER_SEGMENT}, H, W) "
                             f"(5 RGB frames per segment), got {tuple(x.shape)}")
        _num_videos(x.shape[0], self.num_segments)
        centre = x[:, 3 * CENTRE_FRAME:3 * CENTRE_FRAME + 3]
        motion = self.short_term_motion(x)               # MSN (NT, 64, H/4, W/4); TDN H/8, W/8
        out = self.maxpool(self.relu(self.bn1(self.conv1(centre))))
        a, b = self.stem_fuse
        out = a * out + b * _resize_like(motion, out)
        out = self.layer1(out)
        a, b = self.layer1_fuse
        out = a * out + b * _resize_like(self.motion_layer1(motion), out)
        out = self.layer4(self.layer3(self.layer2(out)))
        return torch.flatten(self.avgpool(out), 1)

    def forward(self, x):
        return self.fc(self.features(x))


def msn_resnet(depth=50, num_segments=8, pretrain='none', **kw):
    """Build MSN-R{depth} (or TDN with variant='tdn').

    pretrain: 'none', 'imagenet' or a local file, through the registry's ResNet loader
    (archs.imagenet.resnet: torchvision weights, clear error when unavailable) for the main stream;
    the short-term layer1 copies the loaded layer1 and TDN's difference conv is inflated from the
    loaded stem. A file holding a whole MSN/TDN state dict (keys 'short_term.*') is loaded strictly
    into the built model instead. Extra keywords go to MSNResNet (variant, stem_fuse, layer1_fuse,
    init: 'reference' or 'zero_offset').
    """
    if depth not in RESNET_DEPTHS:
        raise ValueError(f"unknown ResNet depth {depth}; allowed: {RESNET_DEPTHS}")
    full_state = None
    if pretrain not in PRETRAIN_CHOICES and os.path.isfile(pretrain):
        state = read_state_dict(pretrain)
        if any(k.startswith('short_term.') for k in state):
            full_state = state
    resnet = imagenet.resnet(f"resnet{depth}", pretrain='none' if full_state is not None else pretrain)
    model = MSNResNet(resnet, num_segments, **kw)
    if full_state is not None:
        model.load_state_dict(full_state)
    logger.info("built %s-R%d, %d segments, pretrain=%s", model.variant.upper(), depth,
                num_segments, pretrain)
    return model
