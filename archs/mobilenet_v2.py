"""MobileNetV2 in the layout of TSM's ``archs/mobilenet_v2.py`` (state-dict compatible).

Each inverted residual holds one flat ``conv`` Sequential: 8 entries with an expansion layer
(1x1 conv, BN, ReLU6, 3x3 depthwise, BN, ReLU6, 1x1 conv, BN), 5 without. TSM inserts its shift as
``conv.0`` -> keys ``features.N.conv.0.net.weight``; the head is ``classifier`` (a Linear).
torchvision's MobileNetV2 nests ``Conv2dNormActivation`` blocks (``features.N.conv.0.0.weight``) and
wraps the classifier in a Sequential, so its weights are renamed by ``convert_torchvision_state_dict``.
"""
import re

import torch.nn as nn

from archs.backbone import VideoBackbone

# (expand ratio t, output channels c, repeats n, first stride s)
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _conv_bn(inp, oup, kernel, stride, groups=1, relu=True):
    layers = [nn.Conv2d(inp, oup, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(oup)]
    if relu:
        layers.append(nn.ReLU6(inplace=True))
    return layers


class InvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.expand = expand_ratio != 1
        self.use_res_connect = stride == 1 and inp == oup
        layers = _conv_bn(inp, hidden, 1, 1) if self.expand else []
        layers += _conv_bn(hidden, hidden, 3, stride, groups=hidden)
        layers += _conv_bn(hidden, oup, 1, 1, relu=False)
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(VideoBackbone, nn.Module):
    last_layer_name = 'classifier'

    def __init__(self, num_classes=1000, width_mult=1.0):
        super().__init__()
        inp = 32 if width_mult <= 1.0 else int(32 * width_mult)
        self.last_channel = 1280 if width_mult <= 1.0 else int(1280 * width_mult)
        features = [nn.Sequential(*_conv_bn(3, inp, 3, 2))]
        for t, c, n, s in _SETTINGS:
            oup = int(c * width_mult) if t > 1 else c
            for i in range(n):
                features.append(InvertedResidual(inp, oup, s if i == 0 else 1, t))
                inp = oup
        features.append(nn.Sequential(*_conv_bn(inp, self.last_channel, 1, 1)))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.last_channel, num_classes)
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.avgpool(self.features(x)).flatten(1)  # (B, 1280)
        return self.classifier(x)


# torchvision sub-path -> TSM flat index, for blocks with / without the expansion layer.
_TV_EXPANDED = {'0.0': '0', '0.1': '1', '1.0': '3', '1.1': '4', '2': '6', '3': '7'}
_TV_PLAIN = {'0.0': '0', '0.1': '1', '1': '3', '2': '4'}
_TV_KEY = re.compile(r'^features\.(\d+)\.conv\.(\d(?:\.\d)?)\.([a-z_]+)$')


def is_torchvision_layout(state_dict):
    return any(re.match(r'^features\.\d+\.conv\.0\.0\.weight$', k) for k in state_dict)


def convert_torchvision_state_dict(state_dict):
    """Rename torchvision MobileNetV2 keys to this layout; a state dict in this layout is returned as is."""
    if not is_torchvision_layout(state_dict):
        return dict(state_dict)
    out = {}
    for k, v in state_dict.items():
        m = _TV_KEY.match(k)
        if m:
            n, sub, leaf = m.groups()
            # torchvision's expanded block ends with conv.3 (BN); the plain one with conv.2.
            table = _TV_EXPANDED if f'features.{n}.conv.3.weight' in state_dict else _TV_PLAIN
            k = f'features.{n}.conv.{table[sub]}.{leaf}'
        elif k.startswith('classifier.1.'):
            k = 'classifier.' + k[len('classifier.1.'):]
        out[k] = v
    return out


def mobilenet_v2(num_classes=1000):
    return MobileNetV2(num_classes=num_classes)
