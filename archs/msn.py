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

Differences from the reference code (its defects): every parameter is a registered submodule of a
standard type (the deformable kernels are nn.Conv2d weights, so optimiser policies see them), DS-ME
uses the model's number of segments (the reference hard-codes 8), and no squeeze() breaks batch 1.
Convolutions whose bias is cancelled exactly (by a following BatchNorm in training, or by a
difference of two outputs of the same conv) are bias-free, so no parameter is dead.
"""
import copy
import logging
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.ops import deform_conv2d

logger = logging.getLogger(__name__)

RESNET_DEPTHS = (18, 34, 50, 101, 152)
FRAMES_PER_SEGMENT = 5
CENTRE_FRAME = FRAMES_PER_SEGMENT // 2
PRETRAIN_CHOICES = ('none', 'imagenet')  # anything else is a path to a local state dict
LAYER1_FUSE = (0.75, 0.25)


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


class DeformableConv2d(nn.Module):
    """DCNv1 with an offset conv that starts at zero, so it starts as the plain conv `conv`.

    The kernel lives in an nn.Conv2d (`conv`), so optimiser policies that collect Conv2d weights
    train it (the reference's DeformConvPack kernels were silently left out of the optimiser).
    """

    def __init__(self, in_channels, out_channels, kernel_size, padding=0, bias=False):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
        self.offset = nn.Conv2d(in_channels, 2 * kernel_size * kernel_size, kernel_size,
                                padding=padding)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)

    def forward(self, x):
        return deform_conv2d(x, self.offset(x), self.conv.weight, self.conv.bias,
                             stride=self.conv.stride, padding=self.conv.padding,
                             dilation=self.conv.dilation)


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
        self.dcn3 = DeformableConv2d(mid, mid, 3, padding=1)
        self.dcn5 = DeformableConv2d(mid, mid, 5, padding=2)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
        self.point = nn.Conv2d(mid, mid, 1, bias=False)
        self.point_bn = nn.BatchNorm2d(mid)
        self.expand = nn.Conv2d(mid, channels, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(channels)

    def attention(self, x):
        """Return a (N*T, C, 1, 1) in (-0.5, 0.5)."""
        nt, _, h, w = x.shape
        t = self.num_segments
        if nt % t:
            raise ValueError(f"batch dimension {nt} is not a multiple of num_segments={t}")
        u = self.reduce_bn(self.reduce(x))
        mid = u.shape[1]
        u = u.view(nt // t, t, mid, h, w)
        context = self.context_bn(self.context(u.transpose(1, 2)))           # (N, C', T, H, W)
        context = context.mean(dim=2, keepdim=True).transpose(1, 2)          # (N, 1, C', H, W)
        pre = u[:, :-1].reshape(-1, mid, h, w)                                # (N*(T-1), C', H, W)
        post = u[:, 1:].reshape(-1, mid, h, w)
        motion = (self.dcn3(post) + self.dcn5(post) + self.point_bn(self.point(self.pool(post)))
                  - 3 * pre).abs()
        motion = torch.cat([motion.view(nt // t, t - 1, mid, h, w), context], dim=1)
        pooled = motion.reshape(nt, mid, h, w).mean(dim=(2, 3), keepdim=True)  # (NT, C', 1, 1)
        return torch.sigmoid(self.expand_bn(self.expand(pooled))) - 0.5

    def forward(self, x):
        return x + x * self.attention(x)


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
        if nt % t:
            raise ValueError(f"batch dimension {nt} is not a multiple of num_segments={t}")
        padded = F.pad(x.view(nt // t, t, c, h, w), (0, 0, 0, 0, 0, 0, 1, 1))  # (N, T+2, C, H, W)
        k = self.conv.weight.squeeze(1).t().reshape(3, 1, 1, c, 1, 1).to(x.dtype)  # taps t-1, t, t+1
        out = k[0] * padded[:, :-2] + k[1] * padded[:, 1:-1] + k[2] * padded[:, 2:]
        return out.reshape(nt, c, h, w)


class MotionBlock(nn.Module):
    """A torchvision BasicBlock/Bottleneck with excitation + learnable shift after conv1/bn1/relu.

    Submodule names of the wrapped block are kept (conv1, bn1, ..., downsample), so ImageNet and
    checkpoint keys stay layerX.i.conv1.weight; the new parts are `excite` and `shift`.
    """

    def __init__(self, block, num_segments, excite=True):
        super().__init__()
        for name, module in block.named_children():
            setattr(self, name, module)
        if not hasattr(block, 'downsample'):
            self.downsample = None
        self.bottleneck = hasattr(block, 'conv3')
        width = block.conv1.out_channels
        self.excite = MotionExcitation(width, num_segments) if excite else nn.Identity()
        self.shift = LearnableShift(width, num_segments)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(self.shift(self.excite(out))))
        if self.bottleneck:
            out = self.bn3(self.conv3(self.relu(out)))
        return self.relu(out + identity)


class MSNResNet(nn.Module):
    """MSN on a torchvision ResNet: (N*T, 15, H, W) -> fc(features) with features (N*T, fc.in_features).

    Attribute names follow torchvision (conv1 ... layer4, avgpool, fc) so TSN can replace `fc` and
    ImageNet keys load unchanged; `motion_layer1` and `short_term` form the short-term branch.
    """

    def __init__(self, resnet, num_segments, stem_fuse=None, layer1_fuse=LAYER1_FUSE):
        super().__init__()
        if num_segments < 1:
            raise ValueError(f"num_segments must be >= 1, got {num_segments}")
        self.num_segments = num_segments
        self.stem_fuse = tuple(stem_fuse or stem_fusion_weights(num_segments))
        self.layer1_fuse = tuple(layer1_fuse)
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.relu = resnet.relu
        self.maxpool = resnet.maxpool
        self.layer1 = resnet.layer1
        for name in ('layer2', 'layer3', 'layer4'):
            stage = getattr(resnet, name)
            setattr(self, name, nn.Sequential(*[MotionBlock(b, num_segments) for b in stage]))
        self.avgpool = resnet.avgpool
        self.fc = resnet.fc
        # The reference builds a second ImageNet ResNet for this layer1; a copy is the same weights.
        self.motion_layer1 = copy.deepcopy(resnet.layer1)
        self.short_term = ShortTermPyramid(out_channels=resnet.conv1.out_channels)

    def features(self, x):
        """(N*T, 15, H, W) -> pooled features (N*T, fc.in_features)."""
        if x.dim() != 4 or x.shape[1] != 3 * FRAMES_PER_SEGMENT:
            raise ValueError(f"MSN expects (N*T, {3 * FRAMES_PER_SEGMENT}, H, W) (5 RGB frames per "
                             f"segment), got {tuple(x.shape)}")
        if x.shape[0] % self.num_segments:
            raise ValueError(f"batch dimension {x.shape[0]} is not a multiple of num_segments="
                             f"{self.num_segments}")
        centre = x[:, 3 * CENTRE_FRAME:3 * CENTRE_FRAME + 3]
        motion = self.short_term(x)                                           # (NT, 64, H/4, W/4)
        a, b = self.stem_fuse
        out = a * self.maxpool(self.relu(self.bn1(self.conv1(centre)))) + b * motion
        a, b = self.layer1_fuse
        out = a * self.layer1(out) + b * self.motion_layer1(motion)
        out = self.layer4(self.layer3(self.layer2(out)))
        return torch.flatten(self.avgpool(out), 1)

    def forward(self, x):
        return self.fc(self.features(x))


def resnet_imagenet_state_dict(depth):
    """torchvision's ImageNet weights for resnet{depth}; a clear error when they cannot be had."""
    weights = torchvision.models.get_weight(f"ResNet{depth}_Weights.IMAGENET1K_V1")
    try:
        return weights.get_state_dict(progress=False)
    except OSError as err:  # no network and nothing in the torch hub cache
        cache = os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(weights.url))
        raise RuntimeError(f"ImageNet weights for resnet{depth} are unavailable ({err}); download "
                           f"{weights.url} to {cache}, or pass pretrain=PATH to a local file, or "
                           f"pretrain='none'") from err


def _load_state_dict_file(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrain must be one of {PRETRAIN_CHOICES} or an existing file; "
                                f"{path!r} is neither")
    state = torch.load(path, map_location='cpu', weights_only=True)
    if isinstance(state, dict) and isinstance(state.get('state_dict'), dict):
        state = state['state_dict']
    return state


def msn_resnet(depth=50, num_segments=8, pretrain='none', **kw):
    """Build MSN-R{depth}. pretrain: 'none', 'imagenet' (torchvision weights, main stream and the
    short-term layer1) or a path to a torchvision ResNet state dict or a full MSN state dict.
    Extra keywords go to MSNResNet (stem_fuse, layer1_fuse)."""
    if depth not in RESNET_DEPTHS:
        raise ValueError(f"unknown ResNet depth {depth}; allowed: {RESNET_DEPTHS}")
    resnet = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    msn_state = None
    if pretrain == 'imagenet':
        resnet.load_state_dict(resnet_imagenet_state_dict(depth))
    elif pretrain != 'none':
        state = _load_state_dict_file(pretrain)
        if any(k.startswith('short_term.') for k in state):
            msn_state = state
        else:
            resnet.load_state_dict(state)
    model = MSNResNet(resnet, num_segments, **kw)
    if msn_state is not None:
        model.load_state_dict(msn_state)
    logger.info("built MSN-R%d, %d segments, pretrain=%s", depth, num_segments, pretrain)
    return model


def msn_resnet18(num_segments=8, pretrain='none', **kw):
    return msn_resnet(18, num_segments=num_segments, pretrain=pretrain, **kw)


def msn_resnet50(num_segments=8, pretrain='none', **kw):
    return msn_resnet(50, num_segments=num_segments, pretrain=pretrain, **kw)


def msn_resnet101(num_segments=8, pretrain='none', **kw):
    return msn_resnet(101, num_segments=num_segments, pretrain=pretrain, **kw)


MSN_BACKBONES = {
    'msn_resnet18': msn_resnet18,
    'msn_resnet50': msn_resnet50,
    'msn_resnet101': msn_resnet101,
}
