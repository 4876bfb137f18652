"""Video Swin Transformer backbones (Liu et al., CVPR 2022) on torchvision's ``SwinTransformer3d``.

Patch 2x4x4, window 8x7x7, shifted windows in every second block: the network of the paper's Swin-T/S/B
(and of the multimodal-distillation student, Radevski et al., ICCV 2023). The classifier is removed: the
backbone returns the final-norm features mean-pooled over (T', H', W') and TSN puts ``new_fc`` (with its
dropout) on top. State-dict keys are torchvision's (``patch_embed.proj``, ``features.{2i}.{j}`` for block
j of stage i, ``features.{2i+1}`` for the patch merging after stage i, ``norm``); the original Video Swin /
mmaction layout (``backbone.layers.i.blocks.j``, ``layers.i.downsample``, ``mlp.fc1/fc2``) is converted
by ``convert_videoswin_state_dict``.

Flow: one flow frame (x, y) per segment, given to the 3-channel patch embedding as (x, y, 0) after
normalisation, as the distillation paper's flow teachers take it.
"""
import logging
import re

import torch.nn.functional as F
from torchvision.models.video.swin_transformer import SwinTransformer3d

from archs.backbone import VideoBackbone
from ops.weights_io import read_state_dict, strip_prefixes

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


class Swin3DBackbone(VideoBackbone, SwinTransformer3d):
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


# Original Video Swin (SwinTransformer/Video-Swin-Transformer, mmaction 0.x) and mmaction2 1.x key layout
# -> torchvision's SwinTransformer3d: stage i's blocks are features.{2i}, its patch merging features.{2i+1}.
_VIDEOSWIN_RULES = (
    (re.compile(r'^layers\.(\d+)\.blocks\.(\d+)\.(.+)$'), lambda m: f'features.{2 * int(m[1])}.{m[2]}.{m[3]}'),
    (re.compile(r'^layers\.(\d+)\.downsample\.(.+)$'), lambda m: f'features.{2 * int(m[1]) + 1}.{m[2]}'),
    (re.compile(r'^(patch_embed\.(?:proj|norm)\.\w+)$'), lambda m: m[1]),
    (re.compile(r'^norm3?\.(weight|bias)$'), lambda m: f'norm.{m[1]}'),  # mmaction2 1.x: norm3 (out index 3)
    (re.compile(r'^cls_head\.fc_cls\.(weight|bias)$'), lambda m: f'head.{m[1]}'),
)
_VIDEOSWIN_MLP = {'.mlp.fc1.': '.mlp.0.', '.mlp.fc2.': '.mlp.3.'}
_VIDEOSWIN_DROPPED = ((re.compile(r'^data_preprocessor\.'), 'input normalisation buffers (the model normalises)'),)


def videoswin_key(key):
    """Key of the original Video Swin / mmaction layout (``backbone.`` already removed, or ``cls_head.``)
    -> torchvision's SwinTransformer3d key; None when no rule covers it."""
    for pattern, target in _VIDEOSWIN_RULES:
        m = pattern.match(key)
        if m:
            out = target(m)
            for old, new in _VIDEOSWIN_MLP.items():
                out = out.replace(old, new)
            return out
    return None


def convert_videoswin_state_dict(state_dict, own=None):
    """A Video Swin state dict in torchvision's layout or the original / mmaction one -> (state dict in
    torchvision's layout, report). ``own``: the target model's state dict (keys it lacks are dropped,
    shapes are checked against it); None: every key with a rule is kept, unchecked.

    Report: 'layout' ('torchvision' or 'videoswin'), 'mapped' [(file key, model key)], 'dropped'
    [(file key, reason)], 'inflated' [(model key, how)]. ``relative_position_index`` buffers are a
    function of the window size: a file without them (or with a 2D window's) gets the model's. A 2D
    (ImageNet) Swin is inflated as Video Swin's ``inflate_weights`` does: the patch kernel repeated over
    the temporal patch size and divided by it, each relative-position table repeated over the 2*Wd-1
    temporal offsets (same spatial window only). A table of another window size raises naming the shapes.
    The classifier comes out as ``head.*``.
    """
    src = strip_prefixes(state_dict)
    layout = 'torchvision' if any(k.startswith('features.') for k in src) else 'videoswin'
    out, report = {}, {'layout': layout, 'mapped': [], 'dropped': []}
    for original, (key, value) in zip(state_dict, src.items()):
        reason = next((why for pattern, why in _VIDEOSWIN_DROPPED if pattern.search(key)), None)
        if layout == 'torchvision':
            target = key
        else:
            target = videoswin_key(key[len('backbone.'):] if key.startswith('backbone.') else key)
        if own is not None and target is not None and target not in own and not target.startswith('head.'):
            target = None
        if reason or target is None:
            report['dropped'].append((original, reason or 'no rule for this key (not part of the Swin backbone)'))
            continue
        out[target] = value
        report['mapped'].append((original, target))
    if own is None:
        return out, report
    report['inflated'] = _inflate_2d_swin(out, own)
    _check_videoswin_shapes(out, own)
    for key in own:
        if key.endswith('.relative_position_index') and key not in out:
            out[key] = own[key]
            report['mapped'].append(('(model)', key))
    return out, report


def _inflate_2d_swin(converted, own):
    """2D Swin tensors of ``converted`` made 3D in place (see convert_videoswin_state_dict) -> [(key, how)]."""
    conv, own_conv = converted.get('patch_embed.proj.weight'), own['patch_embed.proj.weight']
    if conv is None or conv.dim() != 4 or own_conv.dim() != 5:
        return []
    depth = own_conv.shape[2]                            # temporal patch size
    converted['patch_embed.proj.weight'] = conv.unsqueeze(2).repeat(1, 1, depth, 1, 1) / depth
    inflated = [('patch_embed.proj.weight', f'{tuple(conv.shape)} repeated {depth}x in time, / {depth}')]
    for key in [k for k in converted if k.endswith('.relative_position_bias_table')]:
        table, rows = converted[key], own[key].shape[0]
        if rows % table.shape[0] == 0 and table.shape[0] < rows:
            # 3D index = d * (2Wh-1)(2Ww-1) + h * (2Ww-1) + w: the 2D table once per temporal offset d
            converted[key] = table.repeat(rows // table.shape[0], 1)
            inflated.append((key, f'{tuple(table.shape)} repeated {rows // table.shape[0]}x'))
    for key in [k for k in converted if k.endswith('.relative_position_index')]:
        if converted[key].shape != own[key].shape:     # the 2D window's: recomputed for the 3D window
            converted[key] = own[key]
            inflated.append((key, "the model's (3D window)"))
    return inflated


def _check_videoswin_shapes(converted, own):
    for key, value in converted.items():
        if key in own and value.shape != own[key].shape:
            what = ' (another attention window: the model uses 8x7x7, whose table has 15*13*13 = 2535 rows)' \
                if key.endswith('relative_position_bias_table') else ''
            raise ValueError(f'{key}: file {tuple(value.shape)} vs model {tuple(own[key].shape)}{what}')


def load_swin3d_weights(model, path):
    """Load a local file into ``model``: torchvision's layout or the original Video Swin / mmaction one
    (converted by convert_videoswin_state_dict). The file's classifier is dropped; any other tensor the
    model needs and the file lacks is an error. Returns the conversion report."""
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
