"""Backbone registry: one dict from name to constructor, and ``create_backbone``.

Every backbone returned by ``create_backbone`` carries plain attributes that the TSN wrapper reads:
``last_layer_name`` (the classifier attribute TSN replaces), ``input_mean``/``input_std`` (per RGB
channel, in the backbone's input range), ``flow_mean``, ``input_space`` ('RGB' or 'BGR') and
``input_range`` (1 for [0, 1] pixels, 255 for Caffe-style 0-255 pixels).

``pretrain``: 'imagenet' (torchvision's IMAGENET1K_V1 weights, the ones TSM used, or the released
Caffe-converted weights for BNInception; taken from the torch hub cache or downloaded), 'none'
(random init) or a path to a local file (a state dict with the backbone's ImageNet keys, as
``.pth``/``.pt``/``.tar`` loaded with ``weights_only=True``, or ``.safetensors``). No silent fallback.
"""
import functools
import logging
import os

import torch
import torchvision

from ops.transforms import IMAGENET_MEAN, IMAGENET_STD

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
    from ops.checkpoint import read_state_dict
    from archs.mobilenet_v2 import convert_torchvision_state_dict

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


def _with_defaults(model):
    """Attributes TSN reads; ImageNet / RGB / [0, 1] defaults unless the backbone defines them."""
    if not hasattr(model, 'input_mean'):
        model.input_mean, model.input_std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    for attr, default in (('flow_mean', 0.5), ('input_space', 'RGB'), ('input_range', 1), ('last_layer_name', 'fc')):
        if not hasattr(model, attr):
            setattr(model, attr, default)
    return model


def _resnet(name, pretrain='imagenet', num_classes=1000):
    _check_pretrain(pretrain)
    model = getattr(torchvision.models, name)(weights=None, num_classes=1000)
    model.last_layer_name = 'fc'
    _with_defaults(model)
    if pretrain != 'none':
        _load_into(model, name, pretrain)
    if num_classes != 1000:
        model.fc = torch.nn.Linear(model.fc.in_features, num_classes)
    return model


def _mobilenetv2(pretrain='imagenet', num_classes=1000):
    from archs.mobilenet_v2 import MobileNetV2
    _check_pretrain(pretrain)
    model = MobileNetV2(num_classes=1000)
    model.last_layer_name = 'classifier'
    _with_defaults(model)
    if pretrain != 'none':
        _load_into(model, 'mobilenetv2', pretrain)
    if num_classes != 1000:
        model.classifier = torch.nn.Linear(model.last_channel, num_classes)
    return model


def _bninception(pretrain='imagenet', num_classes=1000):
    from archs import bn_inception
    _check_pretrain(pretrain)
    model = bn_inception.BNInception(num_classes=1000)
    model.last_layer_name = 'fc'
    model.input_mean, model.input_std = bn_inception.INPUT_MEAN, bn_inception.INPUT_STD
    model.flow_mean, model.input_space, model.input_range = bn_inception.FLOW_MEAN, 'BGR', 255
    if pretrain != 'none':
        _load_into(model, 'BNInception', pretrain)
    if num_classes != 1000:
        model.fc = torch.nn.Linear(1024, num_classes)
    return model


def _msn(depth, variant='msn'):
    """MSN (or TDN) ResNet (archs/msn.py), imported only when used."""
    def build(pretrain='imagenet', num_segments=8, **kw):
        from archs.msn import msn_resnet
        return _with_defaults(msn_resnet(depth=depth, num_segments=num_segments, pretrain=pretrain,
                                         variant=variant, **kw))
    build.external = 'archs.msn'
    return build


def _ila(name):
    """ILA video transformer (archs/ila.py, ILA_ARCHS), imported only when used.

    CLIP weights come from ``clip_weights`` or, when that is None, from ``pretrain`` if it is a path;
    'imagenet' does not apply to CLIP towers and raises unless ``clip_weights`` is given.
    """
    def build(pretrain='none', num_segments=8, clip_weights=None, **kw):
        from archs.ila import ILA_ARCHS
        if clip_weights is None and pretrain == 'imagenet':
            raise ValueError(f"{name} starts from CLIP weights, not ImageNet: pass --clip_weights "
                             "/path/to/clip.pt (a local CLIP checkpoint) or --pretrain none")
        if clip_weights is not None and pretrain not in ('imagenet', 'none', clip_weights):
            raise ValueError(f'{name}: both clip_weights={clip_weights!r} and pretrain={pretrain!r} given')
        if clip_weights is None and pretrain != 'none':
            clip_weights = pretrain
        return _with_defaults(ILA_ARCHS[name](num_segments, clip_weights=clip_weights, **kw))
    build.external = 'archs.ila'
    return build


BACKBONES = {
    'resnet18': functools.partial(_resnet, 'resnet18'),
    'resnet34': functools.partial(_resnet, 'resnet34'),
    'resnet50': functools.partial(_resnet, 'resnet50'),
    'resnet101': functools.partial(_resnet, 'resnet101'),
    'resnet152': functools.partial(_resnet, 'resnet152'),
    'mobilenetv2': _mobilenetv2,
    'BNInception': _bninception,
    # MSN (motion-sensitive network) and TDN (Wang et al., CVPR 2021, which MSN builds on), in archs/msn.py.
    'msn_resnet18': _msn(18),
    'msn_resnet34': _msn(34),
    'msn_resnet50': _msn(50),
    'msn_resnet101': _msn(101),
    'tdn_resnet18': _msn(18, 'tdn'),
    'tdn_resnet34': _msn(34, 'tdn'),
    'tdn_resnet50': _msn(50, 'tdn'),
    'tdn_resnet101': _msn(101, 'tdn'),
    # ILA (Tu et al., 2023) video transformers, in archs/ila.py (flagged is_video_model).
    'ila_vit_tiny': _ila('ila_vit_tiny'),
    'ila_vit_b32': _ila('ila_vit_b32'),
    'ila_vit_b16': _ila('ila_vit_b16'),
    'ila_vit_l14': _ila('ila_vit_l14'),
    'ila_vit_l14_336': _ila('ila_vit_l14_336'),
}
MSN_BACKBONES = tuple(k for k in BACKBONES if k.startswith('msn_'))
TDN_BACKBONES = tuple(k for k in BACKBONES if k.startswith('tdn_'))
ILA_BACKBONES = tuple(k for k in BACKBONES if k.startswith('ila_'))


def create_backbone(name, pretrain='imagenet', **kwargs):
    """Build backbone ``name``; keyword arguments that are None are dropped (constructor defaults)."""
    if name not in BACKBONES:
        raise ValueError(f'unknown backbone {name!r}; choose from {sorted(BACKBONES)}')
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return BACKBONES[name](pretrain=pretrain, **kwargs)
