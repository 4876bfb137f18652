"""Video Swin Transformer backbones (Liu et al., CVPR 2022) on torchvision's ``SwinTransformer3d``.

Patch 2x4x4, window 8x7x7, shifted windows in every second block: the network of the paper's Swin-T/S/B
(and of the multimodal-distillation student, Radevski et al., ICCV 2023). The classifier is removed: the
backbone returns the final-norm features mean-pooled over (T', H', W') and TSN puts ``new_fc`` (with its
dropout) on top. State-dict keys are torchvision's (``patch_embed.proj``, ``features.{2i}.{j}`` for block
j of stage i, ``features.{2i+1}`` for the patch merging after stage i, ``norm``); the original Video Swin /
mmaction layout (``backbone.layers.i.blocks.j``, ``layers.i.downsample``, ``mlp.fc1/fc2``) is converted
by ``ops.checkpoint.convert_videoswin_state_dict``.

Flow: one flow frame (x, y) per segment, given to the 3-channel patch embedding as (x, y, 0) after
normalisation, as the distillation paper's flow teachers take it.
"""
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.video.swin_transformer import SwinTransformer3d

logger = logging.getLogger(__name__)

PATCH_SIZE = (2, 4, 4)
WINDOW_SIZE = (8, 7, 7)
# torchvision's swin3d_t/s/b (the published Video Swin sizes); 'swin3d_toy' is for tests and toy runs.
SWIN3D_CONFIGS = {
    'swin3d_t': dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    'swin3d_s': dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    'swin3d_b': dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    'swin3d_toy': dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4)),
}
# Stochastic depth: 0.2 is the distillation paper's Swin-T (its SwinModel); torchvision's builders use 0.1.
DROP_PATH = {'swin3d_t': 0.2, 'swin3d_s': 0.1, 'swin3d_b': 0.1, 'swin3d_toy': 0.0}
# torchvision's Kinetics-400 weights for each size (``--pretrain`` takes the downloaded file).
TORCHVISION_WEIGHTS = {'swin3d_t': 'Swin3D_T_Weights.KINETICS400_V1', 'swin3d_s': 'Swin3D_S_Weights.KINETICS400_V1',
                       'swin3d_b': 'Swin3D_B_Weights.KINETICS400_V1'}
VIDEOSWIN_FILES = {'swin3d_t': 'swin_tiny_patch244_window877_kinetics400_1k.pth',
                   'swin3d_s': 'swin_small_patch244_window877_kinetics400_1k.pth',
                   'swin3d_b': 'swin_base_patch244_window877_kinetics400_1k.pth'}


class Swin3DBackbone(SwinTransformer3d):
    """torchvision's SwinTransformer3d without its head. forward: (B, T, C, H, W) -> (B, feature_dim),
    C = 3 (RGB) or 2 (Flow x, y; a zero third channel is appended)."""

    def __init__(self, embed_dim, depths, num_heads, drop_path=0.0):
        super().__init__(patch_size=list(PATCH_SIZE), embed_dim=embed_dim, depths=list(depths),
                         num_heads=list(num_heads), window_size=list(WINDOW_SIZE),
                         stochastic_depth_prob=drop_path, num_classes=1)
        del self.head, self.avgpool     # TSN's new_fc classifies the pooled features
        self.feature_dim = self.num_features

    def forward(self, x):
        if x.dim() != 5 or x.shape[2] not in (2, 3):
            raise ValueError(f'expected (B, T, 3, H, W) or Flow (B, T, 2, H, W), got {tuple(x.shape)}')
        x = x.transpose(1, 2)                               # (B, C, T, H, W)
        if x.shape[1] == 2:
            x = F.pad(x, (0, 0, 0, 0, 0, 0, 0, 1))           # (B, 3, T, H, W): (x, y, 0)
        x = self.pos_drop(self.patch_embed(x))              # (B, T/2, H/4, W/4, C)
        x = self.norm(self.features(x))                     # (B, T', H', W', D)
        return x.mean(dim=(1, 2, 3))                        # (B, D)


def load_swin3d_weights(model, path):
    """Load a local file into ``model``: torchvision's layout or the original Video Swin / mmaction one
    (converted by ops.checkpoint.convert_videoswin_state_dict). The file's classifier is dropped; any
    other tensor the model needs and the file lacks is an error. Returns the conversion report."""
    from ops.checkpoint import convert_videoswin_state_dict, read_state_dict

    own = model.state_dict()
    converted, report = convert_videoswin_state_dict(read_state_dict(path), own)
    for key in [k for k in converted if k.startswith('head.')]:
        del converted[key]
        report['dropped'].append((key, 'classifier of the file (TSN adds new_fc)'))
    missing = [k for k in own if k not in converted]
    if missing:
        raise RuntimeError(f'--pretrain {path}: {len(missing)} tensors of the model are not in the file, e.g. '
                           f'{missing[:8]} (dropped from the file: {[k for k, _ in report["dropped"]][:8]})')
    model.load_state_dict(converted)
    logger.info('%s: %d tensors loaded (%s layout), %d dropped: %s', path, len(report['mapped']),
                report['layout'], len(report['dropped']), [k for k, _ in report['dropped']][:8])
    return report


def _constructor(name):
    def build(pretrain='none', num_segments=8, input_size=None):
        del num_segments, input_size    # Swin takes any clip length and size (windows are clipped / padded)
        if pretrain == 'imagenet':
            from torchvision.models import get_weight
            url = get_weight(TORCHVISION_WEIGHTS[name]).url if name in TORCHVISION_WEIGHTS else None
            raise ValueError(f'{name} starts from Kinetics-400 video weights, not ImageNet: pass --pretrain '
                             f'PATH to a local copy of torchvision\'s {url} or of Video Swin\'s '
                             f'{VIDEOSWIN_FILES.get(name)}, or --pretrain none')
        model = Swin3DBackbone(**SWIN3D_CONFIGS[name], drop_path=DROP_PATH[name])
        if pretrain == 'none':
            logger.warning('%s built without --pretrain: randomly initialised (expected only for tests, toy '
                           'runs, or when a checkpoint is loaded next)', name)
        else:
            load_swin3d_weights(model, pretrain)
        return model
    build.__name__ = build.__qualname__ = name
    build.__doc__ = f'Video Swin {name}: (B, T, C, H, W) -> (B, D) features.'
    return build


SWIN3D_ARCHS = {name: _constructor(name) for name in SWIN3D_CONFIGS}
