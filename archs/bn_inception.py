"""BN-Inception (Ioffe & Szegedy, 2015), Caffe-converted layout as used by TSN/TSM.

Parameter names are flat Caffe layer names (``conv1_7x7_s2``, ``inception_3a_1x1_bn``, ..., ``fc``) so
the released Caffe-converted ImageNet/Kinetics weights load unchanged. The network expects Caffe-style
input: BGR channel order, 0-255 range, mean ``[104, 117, 128]``, std 1.
"""
import torch
import torch.nn as nn

from archs.backbone import VideoBackbone
from ops.temporal_shift import shift_fn

INPUT_MEAN = [104, 117, 128]
INPUT_STD = [1, 1, 1]
FLOW_MEAN = 128

# Inception stages: (name, in_channels, 1x1, (3x3 reduce, 3x3), (double reduce, double 3x3), pool, proj)
# pool is 'avg' / 'max' (stride 1, with projection) or 'max_s2' (stride-2 reduction stage: no 1x1,
# no projection; the 3x3 convolutions use stride 2).
_STAGES = (
    ('3a', 192, 64, (64, 64), (64, 96), 'avg', 32),
    ('3b', 256, 64, (64, 96), (64, 96), 'avg', 64),
    ('3c', 320, 0, (128, 160), (64, 96), 'max_s2', 0),
    ('4a', 576, 224, (64, 96), (96, 128), 'avg', 128),
    ('4b', 576, 192, (96, 128), (96, 128), 'avg', 128),
    ('4c', 576, 160, (128, 160), (128, 160), 'avg', 128),
    ('4d', 608, 96, (128, 192), (160, 192), 'avg', 128),
    ('4e', 608, 0, (128, 192), (192, 256), 'max_s2', 0),
    ('5a', 1056, 352, (192, 320), (160, 224), 'avg', 128),
    ('5b', 1024, 352, (192, 320), (192, 224), 'max', 128),
)


class BNInception(VideoBackbone, nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self._add_conv('conv1_7x7_s2', 3, 64, 7, stride=2)
        self.pool1_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self._add_conv('conv2_3x3_reduce', 64, 64, 1)
        self._add_conv('conv2_3x3', 64, 192, 3)
        self.pool2_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        for name, cin, c1, (r3, c3), (rd, cd), pool, proj in _STAGES:
            p = f'inception_{name}_'
            stride = 2 if pool == 'max_s2' else 1
            if c1:
                self._add_conv(p + '1x1', cin, c1, 1)
            self._add_conv(p + '3x3_reduce', cin, r3, 1)
            self._add_conv(p + '3x3', r3, c3, 3, stride=stride)
            self._add_conv(p + 'double_3x3_reduce', cin, rd, 1)
            self._add_conv(p + 'double_3x3_1', rd, cd, 3)
            self._add_conv(p + 'double_3x3_2', cd, cd, 3, stride=stride)
            if pool == 'avg':
                setattr(self, p + 'pool', nn.AvgPool2d(3, stride=1, padding=1, ceil_mode=True))
            elif pool == 'max':
                setattr(self, p + 'pool', nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True))
            else:
                setattr(self, p + 'pool', nn.MaxPool2d(3, stride=2, ceil_mode=True))
            if proj:
                self._add_conv(p + 'pool_proj', cin, proj, 1)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1024, num_classes)
        self.n_segment = None
        self.fold_div = None
        self.shift_direction = 'bi'

    def _add_conv(self, name, cin, cout, k, stride=1):
        setattr(self, name, nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2))
        setattr(self, name + '_bn', nn.BatchNorm2d(cout))

    def _cbr(self, name, x):
        return torch.relu(getattr(self, name + '_bn')(getattr(self, name)(x)))

    def set_temporal_shift(self, n_segment, fold_div, direction='bi'):
        """Shift the input of every stage but the first (TSM's mask '0' + '1' * 11, 'block' form);
        direction 'uni' is the online shift (ops/temporal_shift.shift_uni)."""
        self.n_segment = n_segment
        self.fold_div = fold_div
        self.shift_direction = direction

    def _stem1(self, x):
        return self.pool1_3x3_s2(self._cbr('conv1_7x7_s2', x))

    def _stem2(self, x):
        return self.pool2_3x3_s2(self._cbr('conv2_3x3', self._cbr('conv2_3x3_reduce', x)))

    def _inception(self, stage, x):
        name, _, c1, _, _, pool, proj = stage
        p = f'inception_{name}_'
        outs = [self._cbr(p + '1x1', x)] if c1 else []
        outs.append(self._cbr(p + '3x3', self._cbr(p + '3x3_reduce', x)))
        d = self._cbr(p + 'double_3x3_1', self._cbr(p + 'double_3x3_reduce', x))
        outs.append(self._cbr(p + 'double_3x3_2', d))
        pooled = getattr(self, p + 'pool')(x)
        outs.append(self._cbr(p + 'pool_proj', pooled) if proj else pooled)
        return torch.cat(outs, 1)

    def shift_stage_input(self, x, stage_index):
        """The temporal shift before stage ``stage_index`` (1..11); the streaming model (ops/online.py)
        replaces it on its own copy with the cached per-frame shift."""
        return shift_fn(self.shift_direction)(x, self.n_segment, self.fold_div)

    def features(self, x):
        stages = [self._stem1, self._stem2] + [lambda y, s=s: self._inception(s, y) for s in _STAGES]
        for i, stage in enumerate(stages):
            if self.n_segment is not None and i > 0:
                x = self.shift_stage_input(x, i)
            x = stage(x)
        return x  # (B, 1024, H/32, W/32)

    def forward(self, x):
        return self.fc(self.global_pool(self.features(x)).flatten(1))


def bn_inception(num_classes=1000):
    return BNInception(num_classes=num_classes)
