"""The 2D ImageNet backbones (torchvision ResNets, MobileNetV2, BNInception) and their pretrained weights.

``pretrain``: 'imagenet' (torchvision's IMAGENET1K_V1 weights, the ones TSM used, or the released
Caffe-converted weights for BNInception; taken from the torch hub cache or downloaded), 'none'
(random init) or a path to a local file (a state dict with the backbone's ImageNet keys, read by
ops.weights_io.read_state_dict). No silent fallback. Each constructor returns the torchvision-style
module (archs.backbone.VideoBackbone; ``last_layer_name`` names the classifier TSN replaces).
"""
import functools
import logging
import os

import torch
import torchvision
from torchvision.models.resnet import BasicBlock, Bottleneck

from archs import bn_inception
from archs.backbone import VideoBackbone
from archs.mobilenet_v2 import MobileNetV2, convert_torchvision_state_dict
from ops.weights_io import read_state_dict

logger = logging.getLogger(__name__)


_TORCHVISION_WEIGHTS = {
    'resnet18': 'ResNet18_Weights.IMAGENET1K_V1',
    'resnet34': 'ResNet34_Weights.IMAGENET1K_V1',
    'resnet50': 'ResNet50_Weights.IMAGENET1K_V1',
    'resnet101': 'ResNet101_Weights.IMAGENET1K_V1',
    'resnet152': 'ResNet152_Weights.IMAGENET1K_V1',
    'mobilenetv2': 'MobileNet_V2_Weights.IMAGENET1K_V1',
}
# Caffe-converted BN-Inception ImageNet weights released with TSN/TSM.
BNINCEPTION_URL = 'https://www.dropbox.com/s/3cvod6kzwluijcw/BNInception-9baff57459f5a1744.pth?dl=1'


def _supply_hint(url):
    filename = os.path.basename(url.split('?')[0])
    cache = os.path.join(torch.hub.get_dir(), 'checkpoints')
    return (f'Download {url} on a machine with internet access and either copy it to {cache}/{filename} '
            f'or pass --pretrain /path/to/{filename}')


def _imagenet_state_dict(name):
    """ImageNet weights from torchvision's cache (or a download). Raises with instructions on failure."""
    if name == 'BNInception':
        url = BNINCEPTION_URL
        fetch = functools.partial(torch.hub.load_state_dict_from_url, url, map_location='cpu',
                                  progress=False, weights_only=True)
    else:
        weights = torchvision.models.get_weight(_TORCHVISION_WEIGHTS[name])
        url = weights.url
        fetch = functools.partial(weights.get_state_dict, progress=False)
    try:
        return fetch()
    except Exception as e:  # URLError, HTTPError, OSError, hash mismatch: all mean "not available"
        raise RuntimeError(f"--pretrain imagenet: the ImageNet weights for {name} could not be obtained "
                           f"({type(e).__name__}: {e}). {_supply_hint(url)}") from e


def _load_into(model, name, pretrain):
    """Load 'imagenet' or a local file into ``model`` (strict except for the classifier)."""
    if pretrain == 'imagenet':
        sd = _imagenet_state_dict(name)
        source = 'imagenet'
    else:
        sd = read_state_dict(pretrain)
        source = pretrain
    if name == 'mobilenetv2':
        sd = convert_torchvision_state_dict(sd)
    head = model.last_layer_name + '.'
    own = model.state_dict()
    # The classifier is replaced by TSN anyway, so a file without it (or with another class count) is fine.
    sd = {k: v for k, v in sd.items() if not (k.startswith(head) and (k not in own or own[k].shape != v.shape))}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith(head)]
    if missing or unexpected:
        raise RuntimeError(f'--pretrain {source}: weights do not match {name}: missing {missing[:10]} '
                           f'({len(missing)}), unexpected {unexpected[:10]} ({len(unexpected)})')
    logger.info('%s: loaded pretrained weights from %s', name, source)


def _check_pretrain(pretrain):
    if pretrain in ('imagenet', 'none'):
        return
    if not isinstance(pretrain, str) or not pretrain:
        raise ValueError(f"pretrain must be 'imagenet', 'none' or a file path, got {pretrain!r}")
    if not os.path.isfile(pretrain):
        raise FileNotFoundError(f"--pretrain {pretrain}: no such file (use 'imagenet', 'none' or a weights file)")


class ResNet(VideoBackbone, torchvision.models.ResNet):
    """torchvision's ResNet, declared a backbone (archs/backbone.py)."""


# Block type and blocks per stage of torchvision's resnet18 ... resnet152 builders.
_RESNET_LAYERS = {
    'resnet18': (BasicBlock, (2, 2, 2, 2)),
    'resnet34': (BasicBlock, (3, 4, 6, 3)),
    'resnet50': (Bottleneck, (3, 4, 6, 3)),
    'resnet101': (Bottleneck, (3, 4, 23, 3)),
    'resnet152': (Bottleneck, (3, 8, 36, 3)),
}


def resnet(name, pretrain='imagenet', num_classes=1000):
    _check_pretrain(pretrain)
    model = ResNet(*_RESNET_LAYERS[name], num_classes=1000)
    if pretrain != 'none':
        _load_into(model, name, pretrain)
    if num_classes != 1000:
        model.fc = torch.nn.Linear(model.fc.in_features, num_classes)
    return model


def mobilenetv2(pretrain='imagenet', num_classes=1000):
    _check_pretrain(pretrain)
    model = MobileNetV2(num_classes=1000)
    if pretrain != 'none':
        _load_into(model, 'mobilenetv2', pretrain)
    if num_classes != 1000:
        model.classifier = torch.nn.Linear(model.last_channel, num_classes)
    return model


def bninception(pretrain='imagenet', num_classes=1000):
    _check_pretrain(pretrain)
    model = bn_inception.BNInception(num_classes=1000)
    if pretrain != 'none':
        _load_into(model, 'BNInception', pretrain)
    if num_classes != 1000:
        model.fc = torch.nn.Linear(1024, num_classes)
    return model
