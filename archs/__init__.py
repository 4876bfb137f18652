"""Backbone registry: one dict from name to entry (constructor and traits), and ``create_backbone``.

The traits of an entry (``Backbone``: family, whether it is a video backbone, recipe defaults,
normalisation) are what callers query (``backbone_traits(name)``) instead of testing names; which temporal
modules a backbone takes follows from its family in ops/temporal_modules.py's table. Every backbone
returned by ``create_backbone`` carries plain attributes that the TSN wrapper reads:
``last_layer_name`` (the classifier attribute TSN replaces), ``input_mean``/``input_std`` (per RGB
channel, in the backbone's input range), ``flow_mean``, ``input_space`` ('RGB' or 'BGR') and
``input_range`` (1 for [0, 1] pixels, 255 for Caffe-style 0-255 pixels).

``pretrain``: 'imagenet', 'none' or a path to a local weights file (archs/imagenet.py for the 2D
backbones; each video family says what it accepts). No silent fallback.
"""
import dataclasses
import functools
from typing import Callable, Optional

from archs import bn_inception, ila, imagenet, msn
from archs.backbone import FamilyOptions, VideoBackbone
from archs.ila import CLIP_CONFIGS, ILA_ARCHS
from archs.swin3d import SWIN3D_ARCHS
from ops.transforms import IMAGENET_MEAN, IMAGENET_STD


def _msn(depth, variant='msn'):
    """MSN (or TDN) ResNet (archs/msn.py)."""
    def build(pretrain='imagenet', num_segments=8, **kw):
        return msn.msn_resnet(depth=depth, num_segments=num_segments, pretrain=pretrain, variant=variant, **kw)
    return build


def _ila(name):
    """ILA video transformer (archs/ila.py, ILA_ARCHS).

    CLIP weights come from ``clip_weights`` or, when that is None, from ``pretrain`` if it is a path;
    'imagenet' does not apply to CLIP towers and raises unless ``clip_weights`` is given.
    """
    def build(pretrain='none', num_segments=8, clip_weights=None, **kw):
        if clip_weights is None and pretrain == 'imagenet':
            raise ValueError(f"{name} starts from CLIP weights, not ImageNet: pass --clip_weights "
                             "/path/to/clip.pt (a local CLIP checkpoint) or --pretrain none")
        if clip_weights is not None and pretrain not in ('imagenet', 'none', clip_weights):
            raise ValueError(f'{name}: both clip_weights={clip_weights!r} and pretrain={pretrain!r} given')
        if clip_weights is None and pretrain != 'none':
            clip_weights = pretrain
        return ILA_ARCHS[name](num_segments, clip_weights=clip_weights, **kw)
    return build


def _stlt(name):
    """STLT layout transformer (archs/stlt.py, STLT_CONFIGS); trained from scratch, as the reference."""
    def build(pretrain='none', num_segments=8, input_size=None):
        from archs.stlt import stlt
        if pretrain != 'none':
            raise ValueError(f"{name} is trained from scratch: --pretrain none (got {pretrain!r}); "
                             "start from a checkpoint with --tune_from")
        return stlt(name, num_segments=num_segments, input_size=input_size)
    return build


@dataclasses.dataclass(frozen=True)
class Normalization:
    """Pixels a backbone expects: per-channel mean/std (RGB order, in its input range), the Flow mean,
    the channel order ('RGB' or 'BGR') and the range (1: [0, 1] pixels, 255: Caffe-style 0-255)."""
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    flow_mean: float = 0.5
    space: str = 'RGB'
    range: int = 1


@dataclasses.dataclass(frozen=True)
class Backbone:
    """One registry entry: the constructor and the traits callers would otherwise guess from the name."""
    build: Callable
    family: str                       # 'resnet', 'mobilenetv2', 'bninception', 'msn', 'tdn', 'ila', 'swin3d' or 'stlt'
    video: bool = False               # takes the whole clip (B, T, 3, H, W) -> (B, feature_dim) (ILA, Swin)
    video_modalities: tuple = ('RGB',)  # a video backbone's modalities (Swin: Flow as (B, T, 2, H, W) too)
    kwargs: tuple = ()                # keywords of TSN's backbone_kwargs it takes
    weight_kwargs: tuple = ()         # those naming weight files (not read when a checkpoint has the weights)
    recipe: tuple = ()                # ((option, value), ...): training defaults over the generic ones (opts.py)
    recipe_over_dataset: tuple = ()   # recipe options the model needs: a dataset's train_defaults keep off them
    input_size: Optional[int] = None  # its own resolution (ILA: the CLIP tower's), used over a dataset's generic 224
    norm: Normalization = Normalization()
    modality: Optional[str] = None    # the one modality it reads when that is not images ('Layout': STLT)
    options: Optional[FamilyOptions] = None  # command-line options its family owns (opts.py adds them)


def _resnet_entry(depth):
    return Backbone(functools.partial(imagenet.resnet, f'resnet{depth}'), 'resnet')


def _motion_entry(variant, depth):
    return Backbone(_msn(depth, variant), variant, options=msn.CLI_OPTIONS)


# The ILA recipe: CLIP weights come from --clip_weights, BatchNorm of the alignment modules must train,
# AdamW with per-group learning rates; the dataset may still set the weight decay.
_ILA_RECIPE = (('pretrain', 'none'), ('no_partialbn', True), ('optimizer', 'adamw'), ('weight_decay', 3e-3))


def _ila_entry(name):
    # The published recipe normalises with ImageNet statistics (not CLIP's), as TSN does by default.
    return Backbone(_ila(name), 'ila', video=True,
                    kwargs=('clip_weights', 'trust_jit_checkpoint', 'finetune_backbone', 'pair_net', 'head',
                            'class_names'),
                    weight_kwargs=('clip_weights',), recipe=_ILA_RECIPE,
                    recipe_over_dataset=('pretrain', 'no_partialbn', 'optimizer'),
                    input_size=CLIP_CONFIGS[name[len('ila_'):]]['input_resolution'], options=ila.CLI_OPTIONS)


# The multimodal-distillation recipe (Radevski et al., 2023, configs/something-video.yaml): AdamW, lr 1e-4,
# weight decay 0.02 (the Video Swin paper's), gradient norm clipped at 5, a plain linear head (no dropout).
_SWIN3D_RECIPE = (('pretrain', 'none'), ('no_partialbn', True), ('optimizer', 'adamw'), ('lr', 1e-4),
                  ('weight_decay', 0.02), ('clip_gradient', 5.0), ('dropout', 0.0))


def _swin3d_entry(name):
    # Kinetics normalisation of torchvision's swin3d weights and of Video Swin's img_norm_cfg
    # (mean 123.675/116.28/103.53, std 58.395/57.12/57.375 on 0-255): the ImageNet constants.
    return Backbone(SWIN3D_ARCHS[name], 'swin3d', video=True, video_modalities=('RGB', 'Flow'),
                    recipe=_SWIN3D_RECIPE, recipe_over_dataset=('pretrain', 'no_partialbn', 'optimizer'),
                    input_size=224)


# The STLT recipe of the multimodal-distillation reference (configs/something-else-detections.yaml): AdamW,
# lr 1e-4, weight decay 0.02, 16 frames, 30 epochs with 3 warm-up epochs; no dropout before the classifier.
_STLT_RECIPE = (('pretrain', 'none'), ('no_partialbn', True), ('optimizer', 'adamw'), ('lr', 1e-4),
                ('weight_decay', 0.02), ('num_segments', 16), ('epochs', 30), ('warmup_epochs', 3.0),
                ('lr_type', 'cos'), ('dropout', 0.0))


def _stlt_entry(name):
    return Backbone(_stlt(name), 'stlt', video=True, recipe=_STLT_RECIPE,
                    recipe_over_dataset=('pretrain', 'no_partialbn', 'dropout'), modality='Layout')


BACKBONES = {
    'resnet18': _resnet_entry(18),
    'resnet34': _resnet_entry(34),
    'resnet50': _resnet_entry(50),
    'resnet101': _resnet_entry(101),
    'resnet152': _resnet_entry(152),
    'mobilenetv2': Backbone(imagenet.mobilenetv2, 'mobilenetv2'),
    'BNInception': Backbone(imagenet.bninception, 'bninception',
                            norm=Normalization(bn_inception.INPUT_MEAN, bn_inception.INPUT_STD,
                                               bn_inception.FLOW_MEAN, 'BGR', 255)),
    # MSN (motion-sensitive network) and TDN (Wang et al., CVPR 2021, which MSN builds on), in archs/msn.py;
    # ops/temporal_modules.py names them the msn/tdn variants of resnet18..101.
    'msn_resnet18': _motion_entry('msn', 18),
    'msn_resnet34': _motion_entry('msn', 34),
    'msn_resnet50': _motion_entry('msn', 50),
    'msn_resnet101': _motion_entry('msn', 101),
    'tdn_resnet18': _motion_entry('tdn', 18),
    'tdn_resnet34': _motion_entry('tdn', 34),
    'tdn_resnet50': _motion_entry('tdn', 50),
    'tdn_resnet101': _motion_entry('tdn', 101),
    # ILA (Tu et al., 2023) video transformers, in archs/ila.py.
    'ila_vit_tiny': _ila_entry('ila_vit_tiny'),
    'ila_vit_b32': _ila_entry('ila_vit_b32'),
    'ila_vit_b16': _ila_entry('ila_vit_b16'),
    'ila_vit_l14': _ila_entry('ila_vit_l14'),
    'ila_vit_l14_336': _ila_entry('ila_vit_l14_336'),
    # Video Swin Transformers (archs/swin3d.py); swin3d_toy is a small one for tests and toy runs.
    'swin3d_t': _swin3d_entry('swin3d_t'),
    'swin3d_s': _swin3d_entry('swin3d_s'),
    'swin3d_b': _swin3d_entry('swin3d_b'),
    'swin3d_toy': _swin3d_entry('swin3d_toy'),
    # STLT layout transformers (Radevski et al., 2021) for the Layout modality, in archs/stlt.py.
    'stlt': _stlt_entry('stlt'),
    'stlt_tiny': _stlt_entry('stlt_tiny'),
}


def layout_archs():
    """Registry names of the models that read the Layout modality."""
    return tuple(name for name, entry in BACKBONES.items() if entry.modality == 'Layout')


def family_options():
    """The FamilyOptions of the registry, each once, in registry order."""
    return tuple(dict.fromkeys(entry.options for entry in BACKBONES.values() if entry.options is not None))


def backbone_traits(name):
    """The registry entry of backbone ``name``; an unknown name raises ValueError listing the valid ones."""
    if name not in BACKBONES:
        raise ValueError(f'unknown backbone {name!r}; choose from {sorted(BACKBONES)}')
    return BACKBONES[name]


def create_backbone(name, pretrain='imagenet', **kwargs):
    """Build backbone ``name``; keyword arguments that are None are dropped (constructor defaults).

    The built module is a VideoBackbone (archs/backbone.py: the hooks TSN calls) carrying the attributes
    TSN reads (see the module docstring), the normalisation taken from the registry entry."""
    entry = backbone_traits(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    model = entry.build(pretrain=pretrain, **kwargs)
    if not isinstance(model, VideoBackbone):
        raise TypeError(f'{name}: its constructor returned a {type(model).__name__}, which does not declare '
                        'the backbone hooks (inherit archs.backbone.VideoBackbone)')
    norm = entry.norm
    model.input_mean, model.input_std = list(norm.mean), list(norm.std)
    model.flow_mean, model.input_space, model.input_range = norm.flow_mean, norm.space, norm.range
    return model
