"""ILA: CLIP ViT with implicit temporal modelling by learnable alignment.

Tu et al., "Implicit Temporal Modeling with Learnable Alignment for Video Recognition", ICCV 2023.

A frozen OpenAI CLIP ViT image encoder runs on every frame. Before the (frozen) attention and MLP of
each transformer block an alignment module looks at every pair of adjacent frames, predicts one
interactive point per frame, pools the tokens of both frames under a tent-shaped mask around their
points and feeds the masked maps (and the pair features) back into the frame tokens through
zero-initialised linear layers. At initialisation the network therefore equals CLIP on each frame.
A small temporal transformer over the per-frame class tokens gives the video feature; the TSN wrapper
puts the classifier on top.

Tensor layout inside the ViT is batch-first: tokens (N, L, d) with N = B*T frames ordered
``b*T + t`` and L = 1 + G*G (class token, then the G x G patch grid in row-major order).
"""
import argparse
import logging
import math
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from archs.backbone import FamilyOptions, Option, VideoBackbone
from archs.clip_blocks import CLIPTransformer, ResidualAttentionBlock
from archs.ila_text import TEXT_CONFIGS, ILATextHead, load_text_weights

logger = logging.getLogger(__name__)

# Architecture of the OpenAI CLIP image towers (visual part only). 'vit_tiny' is for tests and toy runs.
CLIP_CONFIGS = {
    'vit_b32': dict(width=768, layers=12, heads=12, patch_size=32, input_resolution=224, output_dim=512),
    'vit_b16': dict(width=768, layers=12, heads=12, patch_size=16, input_resolution=224, output_dim=512),
    'vit_l14': dict(width=1024, layers=24, heads=16, patch_size=14, input_resolution=224, output_dim=768),
    'vit_l14_336': dict(width=1024, layers=24, heads=16, patch_size=14, input_resolution=336,
                        output_dim=768),
    'vit_tiny': dict(width=32, layers=2, heads=2, patch_size=8, input_resolution=32, output_dim=16),
}
# Pair networks of the alignment module: ILA's master branch (Kinetics) and its SSV2 branch.
PAIR_NETS = ('k400', 'ssv2')
# Classifiers: linear on the video feature (SSV2 branch), or cosine against CLIP text features of the class
# names (master branch, archs/ila_text.py).
HEADS = ('linear', 'text')
# The command-line options of the ILA family (opts.py adds them; 'auto' values follow the dataset).
CLI_OPTIONS = FamilyOptions(
    'ILA (CLIP ViT)',
    train=(
        Option(('--clip_weights',), (('default', None),
                                     ('help', 'local CLIP weights (state dict / safetensors / jit)'))),
        Option(('--trust_jit_checkpoint',), (('action', 'store_true'), (
            'help', 'allow the OpenAI TorchScript archive: torch.jit.load runs code from the file'))),
        Option(('--finetune_backbone',), (('action', 'store_true'), ('help', 'unfreeze the CLIP weights'))),
        Option(('--align_weight',), (('type', float), ('default', 1.0),
                                     ('help', 'weight of the ILA alignment loss'))),
        Option(('--ila_pair_net',), (('default', 'auto'), ('choices', ('auto', *PAIR_NETS)), (
            'help', "ILA pair network: k400 (depthwise-separable, ILA master) or ssv2 (two 3x3 convs, ILA's SSV2 "
                    "branch); auto = the dataset's registry trait (ssv2 on Something v1/v2)"))),
        Option(('--ila_head',), (('default', 'auto'), ('choices', ('auto', *HEADS)), (
            'help', "ILA classifier: linear (ILA's SSV2 branch) or text (ILA's Kinetics model: cosine against "
                    "CLIP text features of the class names of --category_file, which then works zero-shot "
                    "with other names); auto = the dataset's registry trait (text on Kinetics)"))),
    ),
    test=(Option(('--trust_jit_checkpoint',), (('action', 'store_true'), ('help', argparse.SUPPRESS))),),
    from_dataset=(('ila_pair_net', 'ila_pair_net'), ('ila_head', 'ila_head')),
)
# Channels of the alignment module's pair network (the published model uses 256 for every size).
ALIGN_DIMS = {'vit_b32': 256, 'vit_b16': 256, 'vit_l14': 256, 'vit_l14_336': 256, 'vit_tiny': 16}

# Keys of the CLIP image tower that are not inside a transformer block.
CLIP_STEM_KEYS = ('conv1.weight', 'class_embedding', 'positional_embedding', 'ln_pre.weight', 'ln_pre.bias',
                  'ln_post.weight', 'ln_post.bias', 'proj')
PARAM_GROUP_NAMES = ('align', 'skip', 'temporal', 'head', 'backbone')
# Published recipe: TRAIN.LR = 8e-6 is the base; alignment 5e-4, skip layers 8e-5, temporal transformer 4e-4.
DEFAULT_LR_MULT = {'align': 62.5, 'skip': 10.0, 'temporal': 50.0, 'head': 50.0, 'backbone': 1.0}
# None means "the weight_decay argument" (TRAIN.WEIGHT_DECAY = 3e-3 in the published recipe).
DEFAULT_WEIGHT_DECAY = {'align': 1e-2, 'skip': 1e-3, 'temporal': None, 'head': None, 'backbone': None}

# Tent mask: 1 within FLAT of the point, then falling with SLOPE, reaching 0 at FLAT + 1/SLOPE.
MASK_FLAT = 0.25
MASK_SLOPE = 1.5
POINT_RANGE = 0.75  # points = POINT_RANGE * tanh(.), so |p| < 0.75 in grid units of [-1, 1]
# Training jitter: the point and its 8 neighbours at distance delta (in each axis), masks averaged.
JITTER_OFFSETS = ((0, 0), (0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1))


class CLIPVisionTransformer(nn.Module):
    """The OpenAI CLIP image encoder. forward: (N, 3, S, S) -> (N, output_dim)."""

    def __init__(self, width, layers, heads, patch_size, input_resolution, output_dim, block_factory=None):
        super().__init__()
        if input_resolution < patch_size:
            raise ValueError(f'input_resolution {input_resolution} is smaller than patch_size {patch_size}')
        self.width = width
        self.patch_size = patch_size
        self.input_resolution = input_resolution
        self.output_dim = output_dim
        self.grid_size = input_resolution // patch_size
        scale = width ** -0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(1 + self.grid_size ** 2, width))
        self.ln_pre = nn.LayerNorm(width)
        # block_factory(width, heads, grid_size) -> block; plain CLIP blocks by default
        block_factory = block_factory or (lambda w, h, g: ResidualAttentionBlock(w, h))
        self.transformer = CLIPTransformer([block_factory(width, heads, self.grid_size) for _ in range(layers)])
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def embed(self, x):
        # x: (N, 3, S, S) -> tokens (N, 1 + G*G, d)
        if x.shape[-2:] != (self.input_resolution, self.input_resolution):
            raise ValueError(f'expected frames of {self.input_resolution}x{self.input_resolution}, '
                             f'got {tuple(x.shape[-2:])}')
        x = self.conv1(x).flatten(2).transpose(1, 2)  # (N, G*G, d), row-major grid
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        return self.ln_pre(x)

    def project(self, x):
        # x: (N, L, d) -> class-token feature (N, output_dim)
        return self.ln_post(x[:, 0]) @ self.proj

    def forward(self, x):
        x = self.embed(x)
        for block in self.transformer.resblocks:
            x = block(x)
        return self.project(x)


def merge_pairs(first, second):
    """Per-pair maps back to per-frame maps.

    first, second: (B, T-1, ...) for the pairs (t, t+1): ``first`` belongs to frame t, ``second`` to
    frame t+1. Returns (B, T, ...): frame 0 takes first[0], frame T-1 takes second[T-2], every inner
    frame the average of its two contributions.
    """
    pad = torch.zeros_like(first[:, :1])
    total = torch.cat([first, pad], dim=1) + torch.cat([pad, second], dim=1)  # (B, T, ...)
    num_frames = first.shape[1] + 1
    counts = torch.full((num_frames,), 2.0, dtype=total.dtype, device=total.device)
    counts[0] = counts[-1] = 1.0
    return total / counts.view(1, num_frames, *([1] * (total.dim() - 2)))


def tent_profile(points, grid_size):
    """1-D mask profile. points: (...) coordinates in [-1, 1] -> (..., grid_size) values in [0, 1]."""
    coords = torch.linspace(-1.0, 1.0, grid_size, device=points.device, dtype=points.dtype)
    dist = (coords - points.unsqueeze(-1)).abs()
    return (1.0 - MASK_SLOPE * (dist - MASK_FLAT).clamp(min=0.0)).clamp(min=0.0)


def point_mask(points, grid_size):
    """Separable tent mask. points: (..., 2) as (x, y) -> (..., G, G) indexed [row (y), column (x)]."""
    rows = tent_profile(points[..., 1], grid_size)
    cols = tent_profile(points[..., 0], grid_size)
    return rows.unsqueeze(-1) * cols.unsqueeze(-2)


def jittered_mask(points, grid_size, delta):
    """Average of the masks of the point and its 8 neighbours at distance delta. points (..., 2)."""
    offsets = delta * torch.tensor(JITTER_OFFSETS, dtype=points.dtype, device=points.device)  # (9, 2)
    return point_mask(points.unsqueeze(-2) + offsets, grid_size).mean(dim=-3)


def cosine_alignment_loss(a, b):
    """mean(1 - cos(a, b)) over all leading dims; a, b: (..., d). Lies in [0, 2]; 0 when collinear."""
    return (1.0 - F.cosine_similarity(a.float(), b.float(), dim=-1)).mean()


def _conv_bn_relu(cin, cout, kernel, groups=1):
    return [nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class ILAAlign(nn.Module):
    """Alignment module of one block. forward: tokens (B*T, L, d) -> (residual (B*T, L, d), loss scalar).

    The residual is zero at initialisation (``skip_align_fc`` and ``skip_inter_fc`` start at zero).
    """

    def __init__(self, width, grid_size, align_dim=256, jitter=0.2, pair_net='k400'):
        super().__init__()
        if align_dim % 4:
            raise ValueError(f'align_dim must be a multiple of 4, got {align_dim}')
        if pair_net not in PAIR_NETS:
            raise ValueError(f'unknown pair_net {pair_net!r}; allowed: {PAIR_NETS}')
        if grid_size // 4 < 1:
            # Two 2x2 max-pools rounding down (as the reference) leave no cell below 4x4.
            raise ValueError(f'ILA point prediction pools the {grid_size}x{grid_size} patch grid twice by 2 '
                             f'(rounding down) and needs a grid of at least 4x4: raise the input size or '
                             f'lower the patch size')
        self.grid_size = grid_size
        self.jitter = jitter
        self.token_fc = nn.Linear(width, width)
        self.token_ln = nn.LayerNorm(width)
        self.pair_net = pair_net
        # Pair network on (pre, cur) concatenated along channels, then a 3x3 conv. k400 (ILA master):
        # depthwise-separable conv first; ssv2 (ILA's SSV2 branch): a full 3x3 conv first.
        first = (_conv_bn_relu(2 * width, 2 * width, 3, groups=2 * width) + _conv_bn_relu(2 * width, align_dim, 1)
                 if pair_net == 'k400' else _conv_bn_relu(2 * width, align_dim, 3))
        self.interact = nn.Sequential(*first, *_conv_bn_relu(align_dim, align_dim, 3))
        hidden = align_dim // 2
        # Max-pools round down as the reference (14 -> 7 -> 3, 7 -> 3 -> 1).
        self.point_features = nn.Sequential(
            nn.Conv2d(align_dim, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden),
            nn.MaxPool2d(2), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden),
            nn.MaxPool2d(2), nn.ReLU(inplace=True),
        )
        # Two groups: the pre frame's (x, y) from the first half of the features, cur's from the second.
        self.point_head = nn.Sequential(
            nn.Conv1d(hidden, hidden // 2, 1, groups=2), nn.ReLU(inplace=True),
            nn.Conv1d(hidden // 2, 4, 1, groups=2),
        )
        nn.init.zeros_(self.point_head[-1].weight)
        nn.init.zeros_(self.point_head[-1].bias)
        # Half of the pair features goes to each frame, then a temporal conv and back to the token width.
        self.inter_temporal = nn.Conv3d(align_dim // 2, align_dim // 2, (3, 1, 1), padding=(1, 0, 0))
        self.inter_fc = nn.Linear(align_dim // 2, width)
        self.skip_align_fc = nn.Linear(width, width)
        self.skip_inter_fc = nn.Linear(width, width)
        for layer in (self.skip_align_fc, self.skip_inter_fc):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def predict_points(self, inter):
        # inter: (P, align_dim, G, G) for P pairs -> points (P, 2 frames, 2 coords (x, y)) in (-.75, .75)
        feats = self.point_features(inter).amax(dim=(-2, -1)).unsqueeze(-1)  # global max: (P, hidden, 1)
        return POINT_RANGE * torch.tanh(self.point_head(feats).view(-1, 2, 2))

    def masks(self, points):
        # points (..., 2) -> masks (..., G, G): the average over the point and its 8 jittered neighbours, in
        # evaluation too, as the reference (its ILA module is always built with is_training=True).
        if self.jitter > 0:
            return jittered_mask(points, self.grid_size, self.jitter)
        return point_mask(points, self.grid_size)

    def forward(self, x, num_frames):
        n, length, d = x.shape
        t, g = num_frames, self.grid_size
        b = n // t
        f = self.token_ln(self.token_fc(x)).view(b, t, length, d)
        cls = f[:, :, :1]  # (B, T, 1, d)
        patches = f[:, :, 1:].transpose(2, 3).reshape(b, t, d, g, g)  # (B, T, d, G, G)
        pre, cur = patches[:, :-1], patches[:, 1:]  # (B, T-1, d, G, G)
        inter = self.interact(torch.cat([pre, cur], dim=2).flatten(0, 1))  # (B*(T-1), align_dim, G, G)
        points = self.predict_points(inter).view(b, t - 1, 2, 2)
        masks = self.masks(points).to(f.dtype)  # (B, T-1, 2, G, G)
        aligned_pre = masks[:, :, 0].unsqueeze(2) * pre  # (B, T-1, d, G, G)
        aligned_cur = masks[:, :, 1].unsqueeze(2) * cur
        # Pooled tokens are sums over the grid (cosine ignores the scale anyway).
        loss = cosine_alignment_loss(aligned_pre.sum(dim=(-2, -1)), aligned_cur.sum(dim=(-2, -1)))

        aligned = merge_pairs(aligned_pre, aligned_cur).flatten(3).transpose(2, 3)  # (B, T, G*G, d)
        inter_pre, inter_cur = inter.view(b, t - 1, -1, g, g).chunk(2, dim=2)  # (B, T-1, align_dim/2, G, G)
        inter = merge_pairs(inter_pre, inter_cur).transpose(1, 2)  # (B, align_dim/2, T, G, G)
        inter = self.inter_temporal(inter).flatten(3).permute(0, 2, 3, 1)  # (B, T, G*G, align_dim/2)
        inter = self.inter_fc(inter)  # (B, T, G*G, d)
        # The class position carries the processed class token, unmasked.
        residual = (self.skip_align_fc(torch.cat([cls, aligned], dim=2))
                    + self.skip_inter_fc(torch.cat([cls, inter], dim=2)))
        return residual.reshape(n, length, d), loss


class ILABlock(ResidualAttentionBlock):
    """CLIP block preceded by the alignment stage: x + residual, then the CLIP attention and MLP."""

    def __init__(self, width, heads, grid_size, align_dim, jitter, pair_net='k400'):
        super().__init__(width, heads)
        self.ila = ILAAlign(width, grid_size, align_dim=align_dim, jitter=jitter, pair_net=pair_net)

    def forward(self, x, num_frames):
        residual, loss = self.ila(x, num_frames)
        return self.attention_mlp(x + residual), loss


class ILAVisionTransformer(CLIPVisionTransformer):
    """CLIP image encoder with an ILA block everywhere. forward: (B*T, 3, S, S), T -> ((B*T, D), loss)."""

    def __init__(self, width, layers, heads, patch_size, input_resolution, output_dim, *, align_dim=256,
                 jitter=0.2, grad_checkpoint=False, pair_net='k400'):
        super().__init__(width, layers, heads, patch_size, input_resolution, output_dim,
                         block_factory=lambda w, h, g: ILABlock(w, h, g, align_dim, jitter, pair_net))
        self.grad_checkpoint = grad_checkpoint

    def forward(self, x, num_frames, return_tokens=False):
        """-> (class features (B*T, D), alignment loss[, patch tokens (B*T, G*G, d) before ln_post])."""
        x = self.embed(x)
        total = x.new_zeros((), dtype=torch.float32)
        for block in self.transformer.resblocks:
            if self.grad_checkpoint and self.training and torch.is_grad_enabled():
                x, loss = checkpoint(block, x, num_frames, use_reentrant=False)
            else:
                x, loss = block(x, num_frames)
            total = total + loss
        if return_tokens:
            return self.project(x), total, x[:, 1:]
        return self.project(x), total


class TemporalTransformer(nn.Module):
    """X-CLIP's multi-frame integration transformer: (B, T, D) -> (B, D).

    Learnable temporal position embedding, pre-LN blocks, a residual back to the input, mean over T.
    """

    def __init__(self, dim, num_frames, layers=1):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.empty(1, num_frames, dim))
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(dim, max(1, dim // 64)) for _ in range(layers)])
        nn.init.trunc_normal_(self.positional_embedding, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        if x.shape[1] != self.positional_embedding.shape[1]:
            raise ValueError(f'built for {self.positional_embedding.shape[1]} frames, got {x.shape[1]}')
        y = x + self.positional_embedding.to(x.dtype)
        for block in self.resblocks:
            y = block(y)
        return (y + x).mean(dim=1)


class ILAVideoModel(VideoBackbone, nn.Module):
    """ILA video backbone. forward: (B, T, 3, S, S) -> features (B, feature_dim), or logits (B, num_class)
    with the text head.

    After each forward ``aux_loss`` holds the alignment loss summed over blocks (scalar tensor).
    head 'linear' (ILA's Something-Something branch): no classifier, the TSN wrapper adds ``new_fc`` (with
    dropout) on ``feature_dim`` features; ``num_class`` is None. head 'text' (ILA's Kinetics model,
    archs/ila_text.py): cosine logits against the CLIP text features of ``class_names``, the text tower
    described by ``text_config`` (archs.ila_text.TEXT_CONFIGS) and read from the same ``clip_weights``.
    """

    def __init__(self, num_segments, *, width, layers, heads, patch_size, input_resolution, output_dim,
                 align_dim=256, temporal_layers=1, jitter=0.2, jitter_decay_start=30, grad_checkpoint=False,
                 clip_weights=None, trust_jit_checkpoint=False, finetune_backbone=False, input_size=None,
                 pair_net='k400', head='linear', class_names=None, text_config=None):
        super().__init__()
        if num_segments < 2:
            raise ValueError(f'ILA aligns adjacent frames and needs num_segments >= 2, got {num_segments}')
        if head not in HEADS:
            raise ValueError(f'unknown ILA head {head!r}; allowed: {HEADS}')
        if head == 'text' and (not class_names or text_config is None):
            raise ValueError("the ILA text head needs class_names and text_config")
        if head == 'linear' and class_names is not None:
            raise ValueError("class_names apply to the ILA text head (head='text')")
        input_size = input_resolution if input_size is None else input_size
        self.num_segments = num_segments
        self.input_size = input_size
        self.feature_dim = output_dim
        self.base_jitter = jitter
        self.jitter_decay_start = jitter_decay_start
        self.visual = ILAVisionTransformer(width, layers, heads, patch_size, input_size, output_dim,
                                           align_dim=align_dim, jitter=jitter, grad_checkpoint=grad_checkpoint,
                                           pair_net=pair_net)
        self.temporal = TemporalTransformer(output_dim, num_segments, layers=temporal_layers)
        self.head = head
        if head == 'linear':
            # The SSv2 head of the published code: LayerNorm on the L2-normalised video feature (dropout
            # and the linear classifier come from TSN).
            self.norm_out = nn.LayerNorm(output_dim)
        else:
            self.text_head = ILATextHead(class_names, visual_width=width, output_dim=output_dim,
                                         text_config=text_config)
            self.num_class = len(class_names)
        self.aux_loss = torch.zeros(())
        if clip_weights is None:
            logger.warning('ILA backbone built without clip_weights: CLIP encoder randomly initialised '
                           '(expected only for tests, toy runs, or when a checkpoint is loaded next)')
        else:
            state = read_clip_state_dict(clip_weights, trust_jit_checkpoint=trust_jit_checkpoint)
            if head == 'text':      # first, so that an image-only file is refused before anything loads
                load_text_weights(self.text_head, state, clip_weights)
            load_clip_weights(self.visual, clip_weights, state=state)
        for p in clip_parameters(self.visual):
            p.requires_grad_(finetune_backbone)

    def set_epoch(self, epoch):
        """Jitter distance of the masks: halved at every epoch from ``jitter_decay_start`` on.

        A function of the epoch (not a running state), so a resumed run gets the same value.
        """
        jitter = self.base_jitter * 0.5 ** max(0, epoch - self.jitter_decay_start + 1)
        for m in self.modules():
            if isinstance(m, ILAAlign):
                m.jitter = jitter

    def get_optim_policies(self, model, *, lr, weight_decay):
        """AdamW groups of ``model``, the module holding this backbone (TSN: its head joins 'head'); see
        ``ila_param_groups``. TSN.get_optim_policies delegates here."""
        if lr is None or weight_decay is None:
            raise ValueError(f'the optimiser groups of {model.arch} need lr and weight_decay')
        return ila_param_groups(model, lr, weight_decay=weight_decay)

    def set_class_names(self, class_names):
        """Text head: classify over another list of class names (zero-shot; nothing is retrained)."""
        if self.head != 'text':
            raise ValueError('class names apply to the ILA text head; this model has a linear classifier')
        self.text_head.set_class_names(class_names)
        self.num_class = len(self.text_head.class_names)

    def frame_features(self, x, return_tokens=False):
        """x: (B, T, 3, S, S) -> per-frame CLIP class features (B, T, D) [, patch tokens (B, T, G*G, d)];
        sets ``aux_loss``."""
        if x.dim() != 5 or x.shape[2] != 3:
            raise ValueError(f'expected (B, T, 3, H, W), got {tuple(x.shape)}')
        b, t = x.shape[:2]
        out = self.visual(x.flatten(0, 1), t, return_tokens=return_tokens)
        self.aux_loss = out[1]
        feats = out[0].view(b, t, -1)
        return (feats, out[2].reshape(b, t, *out[2].shape[1:])) if return_tokens else feats

    def forward(self, x):
        if self.head == 'text':
            feats, tokens = self.frame_features(x, return_tokens=True)
            return self.text_head(self.temporal(feats), tokens)    # (B, K)
        video = self.temporal(self.frame_features(x))  # (B, D)
        return self.norm_out(F.normalize(video, dim=-1))


def clip_parameters(visual):
    """The parameters of a CLIP / ILA vision transformer that come from CLIP (everything but ``.ila``)."""
    align_ids = {id(p) for m in visual.modules() if isinstance(m, ILAAlign) for p in m.parameters()}
    return [p for p in visual.parameters() if id(p) not in align_ids]


# ---------------------------------------------------------------------------------------------------
# CLIP checkpoint reading (local files only)

def is_torchscript_archive(path):
    """True for a TorchScript zip (has code/ and constants.pkl), False for torch.save / other files."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any(n.endswith('/constants.pkl') or '/code/' in n for n in names)


def read_clip_state_dict(path, *, trust_jit_checkpoint=False):
    """Read a CLIP checkpoint file into a state dict of tensors (keys as stored in the file).

    Accepted: safetensors, a plain state dict saved with torch.save, or, with trust_jit_checkpoint=True,
    the OpenAI release archive (TorchScript).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'CLIP weights file not found: {path} (nothing is downloaded)')
    if path.suffix == '.safetensors':
        from safetensors.torch import load_file
        return load_file(str(path), device='cpu')
    if is_torchscript_archive(path):
        if not trust_jit_checkpoint:
            raise ValueError(
                f'{path} is a TorchScript archive (the format of the OpenAI CLIP release files such as '
                f'ViT-B-16.pt). Reading it needs torch.jit.load, which deserialises the code stored in the '
                f'file and can run it, unlike the weights-only loader used for every other checkpoint. '
                f'Pass trust_jit_checkpoint=True (--trust_jit_checkpoint) only for a file from a trusted '
                f'source, or convert it once to a state dict / safetensors file with the OpenAI key names.')
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', message='.*torch.jit.load.* is deprecated', category=FutureWarning)
            module = torch.jit.load(str(path), map_location='cpu')
        return dict(module.state_dict())
    state = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f'{path} is not a plain state dict of tensors (keys -> tensors)')
    return state


def filter_clip_visual(state, grid_size):
    """OpenAI key names -> keys of CLIPVisionTransformer; float32; positional embedding resized to grid.

    A full CLIP state dict (image and text towers) has its image keys under ``visual.``: only those are
    kept. The class-token row of the positional embedding is kept and the grid part is resized bicubically
    when the checkpoint was trained at another resolution.
    """
    if any(k.startswith('visual.') for k in state):
        state = {k[len('visual.'):]: v for k, v in state.items() if k.startswith('visual.')}
    missing = [k for k in CLIP_STEM_KEYS if k not in state]
    if missing:
        raise ValueError(f'not a CLIP image encoder state dict: missing {missing}')
    state = {k: v.float() for k, v in state.items()}
    pos = state['positional_embedding']  # (1 + g*g, d)
    old_grid = math.isqrt(pos.shape[0] - 1)
    if old_grid ** 2 != pos.shape[0] - 1:
        raise ValueError(f'positional_embedding of shape {tuple(pos.shape)} is not 1 + a square grid')
    if old_grid != grid_size:
        grid = pos[1:].T.reshape(1, -1, old_grid, old_grid)
        grid = F.interpolate(grid, size=(grid_size, grid_size), mode='bicubic', align_corners=False)
        state['positional_embedding'] = torch.cat([pos[:1], grid.reshape(pos.shape[1], -1).T], dim=0)
        logger.info('resized CLIP positional embedding from a %dx%d to a %dx%d grid',
                    old_grid, old_grid, grid_size, grid_size)
    return state


def load_clip_weights(visual, path, *, trust_jit_checkpoint=False, state=None):
    """Load CLIP image weights into a CLIPVisionTransformer or ILAVisionTransformer.

    Every CLIP key of the model must be filled with a tensor of the right shape; the only keys left
    alone are the alignment modules (``.ila.``). Returns the list of those untouched keys. ``state``: the
    file's state dict when the caller has read it already (``path`` then only names it in messages).
    """
    if state is None:
        state = read_clip_state_dict(path, trust_jit_checkpoint=trust_jit_checkpoint)
    state = filter_clip_visual(state, visual.grid_size)
    own = visual.state_dict()
    unexpected = sorted(set(state) - set(own))
    missing = sorted(k for k in set(own) - set(state) if '.ila.' not in k)
    wrong = [f'{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}'
             for k, v in state.items() if k in own and v.shape != own[k].shape]
    if unexpected or missing or wrong:
        raise ValueError(f'{path} does not match this CLIP architecture: missing {missing[:5]}, '
                         f'unexpected {unexpected[:5]}, shape mismatch {wrong[:5]}')
    result = visual.load_state_dict(state, strict=False)
    logger.info('loaded CLIP weights from %s (%d tensors; %d alignment tensors left at init)',
                path, len(state), len(result.missing_keys))
    return result.missing_keys


# ---------------------------------------------------------------------------------------------------
# Optimiser groups

def ila_param_groups(model, base_lr, *, weight_decay=3e-3, lr_mult=None, weight_decays=None):
    """AdamW parameter groups for a module holding one ILAVideoModel (the backbone itself or TSN).

    Groups (only parameters with requires_grad): 'align' (alignment modules without their skip layers),
    'skip' (the zero-initialised residual layers), 'temporal' (temporal transformer and output norm),
    'head' (every other trainable parameter of ``model``, e.g. TSN's new_fc) and 'backbone' (CLIP, only
    when unfrozen). Biases, norms, embeddings (every tensor with < 2 dims, plus the temporal position
    embedding) go to a '<name>_no_decay' group with weight decay 0. Each group carries 'name', 'lr'
    (= base_lr * lr_mult), 'lr_mult', 'weight_decay' and 'decay_mult' (= weight_decay of the group /
    the weight_decay argument), so a schedule that sets lr = base * lr_mult and
    weight_decay = weight_decay * decay_mult keeps the per-group values. Defaults reproduce the
    published recipe with base_lr = 8e-6 and weight_decay = 3e-3.
    """
    lr_mult = {**DEFAULT_LR_MULT, **(lr_mult or {})}
    decays = {**DEFAULT_WEIGHT_DECAY, **(weight_decays or {})}
    for given in (lr_mult, decays):
        unknown = sorted(set(given) - set(PARAM_GROUP_NAMES))
        if unknown:
            raise ValueError(f'unknown parameter group {unknown}; allowed: {PARAM_GROUP_NAMES}')
    backbones = [m for m in model.modules() if isinstance(m, ILAVideoModel)]
    if len(backbones) != 1:
        raise ValueError(f'expected exactly one ILAVideoModel inside the model, found {len(backbones)}')
    ila = backbones[0]
    category = {}
    for m in ila.modules():
        if isinstance(m, ILAAlign):
            for p in m.parameters():
                category[id(p)] = 'align'
            for p in list(m.skip_align_fc.parameters()) + list(m.skip_inter_fc.parameters()):
                category[id(p)] = 'skip'
    for p in list(ila.temporal.parameters()) + list(getattr(ila, 'norm_out', nn.Identity()).parameters()):
        category[id(p)] = 'temporal'
    for p in clip_parameters(ila.visual):
        category[id(p)] = 'backbone'
    no_decay_ids = {id(ila.temporal.positional_embedding)}

    buckets = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        name = category.get(id(p), 'head')
        no_decay = p.dim() < 2 or id(p) in no_decay_ids
        buckets.setdefault((name, no_decay), []).append(p)
    groups = []
    for name in PARAM_GROUP_NAMES:
        for no_decay in (False, True):
            params = buckets.get((name, no_decay))
            if not params:
                continue
            decay = 0.0 if no_decay else weight_decay if decays[name] is None else decays[name]
            groups.append({'params': params, 'name': f'{name}_no_decay' if no_decay else name,
                           'lr': base_lr * lr_mult[name], 'lr_mult': lr_mult[name], 'weight_decay': decay,
                           'decay_mult': decay / weight_decay if weight_decay else 0.0})
    return groups


# ---------------------------------------------------------------------------------------------------
# Registry (merged into archs.BACKBONES by the lead)

def _constructor(config):
    def build(num_segments, clip_weights=None, trust_jit_checkpoint=False, finetune_backbone=False,
              input_size=None, **kw):
        kw.setdefault('align_dim', ALIGN_DIMS[config])
        if kw.get('head') == 'text':
            kw.setdefault('text_config', TEXT_CONFIGS[config])
        return ILAVideoModel(num_segments, **CLIP_CONFIGS[config], clip_weights=clip_weights,
                             trust_jit_checkpoint=trust_jit_checkpoint, finetune_backbone=finetune_backbone,
                             input_size=input_size, **kw)
    build.__name__ = build.__qualname__ = f'ila_{config}'
    build.__doc__ = f'ILA on the CLIP {config} image encoder: (B, T, 3, S, S) -> (B, D) features.'
    return build


ILA_ARCHS = {f'ila_{config}': _constructor(config) for config in CLIP_CONFIGS}
