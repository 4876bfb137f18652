"""TSN wrapper (Wang et al., 2016) with the TSM family of temporal modules.

Keeps TSM's class name and state-dict layout (``base_model.*``, ``new_fc.*``), so checkpoints written for
TSM port unchanged. The temporal options (TSM's ``is_shift``, ``shift_div``, ``shift_place``,
``temporal_pool``, ``non_local`` and ours) are one ``TemporalConfig``; ``TSN.config()`` and
``TSN.from_config`` keep TSM's flat keywords, which checkpoints store. Input ``(B, T*F*C, H, W)``
(segment-major, then frame, then channel), output logits ``(B, num_class)``.
"""
import dataclasses
import logging

import torch
import torch.nn as nn

import archs
from ops.heads import check_heads, heads_text
from ops.modality import CHANNELS, MODALITIES, default_new_length, frames_per_segment, replace_first_conv
from ops.transforms import normalization_constants, normalize_uint8
from ops.temporal_modules import (MOTION_MODULES, TEMPORAL_MODULES, TemporalConfig, backbone_entry,
                                   backbone_models_time, insert_temporal_modules, motion_module_of)

logger = logging.getLogger(__name__)

CONSENSUS_TYPES = ('avg', 'identity')
FIRST_CONV_LR = ('tsm', 'mml')
RGBDIFF_STD = 0.452  # TSM's (unused) std for difference channels, kept for input_std
NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f'unknown {name} {value!r}; allowed: {allowed}')


def to_channels_last(module):
    """Store every 4-D parameter and buffer of ``module`` channels_last, in place; returns ``module``.

    ``module.to(memory_format=torch.channels_last)`` raises on 5-D tensors (the Conv3d weights of
    non-local blocks, MSN and ILA); they keep their layout here, so --channels_last works for every model.
    """
    return module._apply(lambda t: t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t)


class MultiHeadLinear(nn.ModuleDict):
    """One Linear classifier per head (ops/heads.py), named by the head: state-dict keys
    ``new_fc.<head>.weight`` / ``.bias`` (``base_model.fc.<head>.*`` without dropout). forward returns
    the heads' logits side by side, (..., sum of classes) in head order."""

    def __init__(self, in_features, heads):
        super().__init__({name: nn.Linear(in_features, size) for name, size in heads})
        self.in_features = in_features

    def forward(self, x):
        return torch.cat([fc(x) for fc in self.values()], dim=-1)

    # The heads' parameters stacked (sum of classes, in_features): what one Linear with the same outputs
    # would hold (feature files store them as the head).
    @property
    def weight(self):
        return torch.cat([fc.weight for fc in self.values()])

    @property
    def bias(self):
        return torch.cat([fc.bias for fc in self.values()])


def classifier(in_features, num_class, heads=None):
    """The new head: one Linear (single label) or a MultiHeadLinear, initialised as TSM's new_fc."""
    head = MultiHeadLinear(in_features, heads) if heads else nn.Linear(in_features, num_class)
    for fc in (head.values() if heads else [head]):
        nn.init.normal_(fc.weight, 0, 0.001)
        nn.init.zeros_(fc.bias)
    return head


def is_temporal(config):
    """Whether frames of a clip interact inside the TSN that ``config`` (its keywords) describes; else it
    can be evaluated frame by frame, as TSM does."""
    return bool(config.get('is_shift') or config.get('temporal_module') or config.get('non_local')
                or config.get('temporal_pool')) or backbone_models_time(config['base_model'])


def has_text_head(config):
    """Whether the TSN that ``config`` describes classifies with a text head (ILA --ila_head text), which
    takes any list of class names."""
    return (config.get('backbone_kwargs') or {}).get('head') == 'text'


def with_class_names(config, class_names):
    """TSN keywords of the model ``config`` describes classifying over ``class_names`` (zero-shot): only a
    text-head model can; a linear classifier keeps its trained classes, and other names raise."""
    names = [str(n) for n in class_names]
    if has_text_head(config):
        return dict(config, num_class=len(names), backbone_kwargs={**config['backbone_kwargs'], 'class_names': names})
    if len(names) != config['num_class']:
        raise ValueError(f"{len(names)} class names given, but the model has a linear classifier over "
                         f"{config['num_class']} trained classes; only a text-head model (ILA, --ila_head text) "
                         "classifies other class names")
    return config


class TSN(nn.Module):
    """TSM's keywords, except that the temporal ones are one ``temporal`` (a TemporalConfig: the temporal
    module and the options of the shift, TIN, non-local blocks, temporal pooling and MSN/TDN)."""

    def __init__(self, num_class, num_segments, modality, base_model='resnet101', new_length=None,
                 consensus_type='avg', before_softmax=True, dropout=0.8, img_feature_dim=256, crop_num=1,
                 partial_bn=True, print_spec=False, pretrain='imagenet', *, temporal=TemporalConfig(),
                 fc_lr5=False, first_conv_lr='tsm', input_size=224, input_mean=None, input_std=None,
                 backbone_kwargs=None, heads=None):
        super().__init__()
        # heads: multi-head labels ((name, classes), ...), one classifier each (MultiHeadLinear); the
        # logits are theirs side by side, so num_class must be their total.
        self.heads = check_heads(heads) if heads else None
        if self.heads and num_class != sum(size for _, size in self.heads):
            raise ValueError(f'num_class {num_class} is not the total of the heads {heads_text(self.heads)}')
        pretrain = 'none' if pretrain is None else pretrain  # TSM: anything but 'imagenet' is no init
        _check_choice('modality', modality, MODALITIES)
        _check_choice('consensus_type', consensus_type, CONSENSUS_TYPES)
        _check_choice('first_conv_lr', first_conv_lr, FIRST_CONV_LR)
        traits = archs.backbone_traits(base_model)
        if (traits.modality == 'Layout') != (modality == 'Layout'):
            raise ValueError(f'modality Layout is read by the layout models {archs.layout_archs()} and they read '
                             f'nothing else; got base_model {base_model!r} with modality {modality!r}')
        if temporal.module is None:
            temporal = dataclasses.replace(temporal, module=motion_module_of(base_model))
        if not before_softmax and consensus_type != 'avg':
            raise ValueError('only avg consensus can be used after softmax (before_softmax=False)')
        if temporal.temporal_pool and num_segments % 2 != 0:
            raise ValueError(f'temporal_pool needs an even num_segments, got {num_segments}')
        motion = TEMPORAL_MODULES[temporal.module] if temporal.module in MOTION_MODULES else None
        if motion and modality not in motion.modalities:
            raise ValueError(f'{base_model} with temporal_module={temporal.module} takes '
                             f'{", ".join(motion.modalities)} input only')

        self.num_class = num_class
        self.num_segments = num_segments
        self.modality = modality
        self.arch = base_model
        self.consensus_type = consensus_type
        self.before_softmax = before_softmax
        self.dropout = dropout
        self.img_feature_dim = img_feature_dim
        self.crop_num = crop_num
        self.pretrain = pretrain
        self.temporal = temporal
        self.fc_lr5 = fc_lr5
        self.first_conv_lr = first_conv_lr
        self.input_size = input_size
        # Keywords of the backbone's own constructor (ILA: clip_weights, trust_jit_checkpoint,
        # finetune_backbone, pair_net); the registry entry lists the ones it takes.
        self.backbone_kwargs = dict(backbone_kwargs or {})
        unknown = sorted(set(self.backbone_kwargs) - set(traits.kwargs))
        if unknown:
            raise ValueError(f'backbone_kwargs {unknown} do not apply to {base_model!r} '
                             f'(it takes {list(traits.kwargs)})')
        self.is_video_model = traits.video
        if new_length is None:
            # Video backbones take one frame per segment in every modality (Flow: its x, y pair).
            new_length = motion.frames_per_segment if motion else 1 if traits.video else \
                default_new_length(modality)
        self.new_length = new_length
        self._enable_pbn = partial_bn

        self._prepare_base_model(base_model, pretrain, motion)
        self._input_mean = list(input_mean) if input_mean is not None else self._default_mean()
        self._input_std = list(input_std) if input_std is not None else self._default_std()
        # uint8 input (the loaders' default) is normalised here, on the model's device: constants of
        # normalization(), tiled over input_channels; plain attributes, so neither the state dict nor
        # DDP's buffer broadcast sees them.
        norm = self.normalization()
        self._pixel_mean, self._pixel_inv_std = normalization_constants(
            norm['mean'] or (0.0,), norm['std'] or (1.0,), norm['div'], self.input_channels)
        self._pixel_roll = norm['roll']
        feature_dim = self._prepare_head(num_class)
        if self.is_video_model and modality not in ('RGB', 'Layout'):
            if modality not in traits.video_modalities or new_length != 1:
                raise ValueError(f'{base_model} takes {", ".join(traits.video_modalities)} input with one frame '
                                 f'per segment, got {modality} with new_length {new_length}')
        elif modality not in ('RGB', 'Layout'):
            # Flow: 2L channels, RGBDiff: 3L difference channels, kernel = RGB channel mean.
            replace_first_conv(self.base_model, CHANNELS[modality] * new_length)
        if print_spec:
            logger.info('TSN: %s %s, %d segments, new_length %d, consensus %s, dropout %.2f, '
                        'temporal module %s, feature dim %d', base_model, modality, num_segments, new_length,
                        consensus_type, dropout, temporal.module, feature_dim)

    # ------------------------------------------------------------------ construction
    def _prepare_base_model(self, base_model, pretrain, motion):
        T = self.num_segments
        name = backbone_entry(base_model, self.temporal.module)
        kwargs = dict(self.backbone_kwargs)
        if motion:                                   # MSN/TDN: the ResNet's variant, built with its options
            kwargs.update(num_segments=T, **motion.keywords(self.temporal))
        elif self.is_video_model:                    # sees the whole clip: T frames of input_size
            kwargs.update(num_segments=T, input_size=self.input_size)
        net = archs.create_backbone(name, pretrain=pretrain, **kwargs)
        self.base_model = insert_temporal_modules(net, T, self.temporal)

    def _prepare_head(self, num_class):
        net = self.base_model
        if net.num_class is not None:
            # The backbone classifies itself (ILA's text head over its class names): no new_fc, no dropout.
            if net.num_class != num_class:
                raise ValueError(f'num_class {num_class} but the backbone classifies over {net.num_class} '
                                 f'class names')
            self.new_fc = self.head_dropout = None
            return net.feature_dim
        if self.is_video_model:
            feature_dim = net.feature_dim
            self.head_dropout = nn.Dropout(p=self.dropout) if self.dropout > 0 else nn.Identity()
            self.new_fc = classifier(feature_dim, num_class, self.heads)
        elif self.dropout > 0:
            feature_dim = getattr(net, net.last_layer_name).in_features
            setattr(net, net.last_layer_name, nn.Dropout(p=self.dropout))
            self.head_dropout = None
            self.new_fc = classifier(feature_dim, num_class, self.heads)
        else:
            feature_dim = getattr(net, net.last_layer_name).in_features
            self.head_dropout = None
            setattr(net, net.last_layer_name, classifier(feature_dim, num_class, self.heads))
            self.new_fc = None
        return feature_dim

    def _default_mean(self):
        rgb = list(self.base_model.input_mean)
        if self.modality == 'Flow':
            return [self.base_model.flow_mean]
        if self.modality == 'RGBDiff':
            return rgb + [0] * 3 * self.new_length
        return rgb

    def _default_std(self):
        rgb = list(self.base_model.input_std)
        if self.modality == 'Flow':
            return [sum(rgb) / len(rgb)]
        if self.modality == 'RGBDiff':
            return rgb + [RGBDIFF_STD] * 3 * self.new_length
        return rgb

    # ------------------------------------------------------------------ properties
    @property
    def crop_size(self):
        return self.input_size

    @property
    def scale_size(self):
        return self.input_size * 256 // 224

    @property
    def input_mean(self):
        return self._input_mean

    @property
    def input_std(self):
        return self._input_std

    @property
    def input_space(self):
        """'BGR' for the Caffe-converted BNInception (0-255 input), else 'RGB'."""
        return self.base_model.input_space

    @property
    def input_range(self):
        """Pixel range the backbone expects: 1 ([0, 1]) or 255 (Caffe-style BNInception)."""
        return self.base_model.input_range

    def normalization(self):
        """Keyword arguments for ops.transforms.build_transform: what this model expects of its pixels.

        RGBDiff takes raw [0, 1] pixels (the model differences them; TSM's listed mean/std are unused);
        the Caffe-converted BNInception takes BGR in 0-255 with its own mean."""
        if self.modality == 'RGBDiff':
            return dict(mean=None, std=None, div=self.input_range == 1, roll=self.input_space == 'BGR')
        if self.modality == 'Layout':     # float box coordinates, not pixels
            return dict(mean=None, std=None, div=False, roll=False)
        return dict(mean=list(self.input_mean), std=list(self.input_std), div=self.input_range == 1,
                    roll=self.input_space == 'BGR')

    @property
    def frames_per_segment(self):
        """Frames the dataset must load per segment (RGBDiff: new_length differences need one more)."""
        return frames_per_segment(self.modality, self.new_length)

    @property
    def input_channels(self):
        """Expected channel count of the forward input: T * frames_per_segment * C."""
        return self.num_segments * self.frames_per_segment * CHANNELS[self.modality]

    @classmethod
    def from_config(cls, config):
        """The TSN that ``config`` describes: the flat keywords of ``config()``, as checkpoints store them
        (TSM's names; the temporal ones become a TemporalConfig)."""
        temporal, others = TemporalConfig.split(config)
        return cls(temporal=temporal, **others)

    def config(self):
        """Plain dict of every keyword needed to rebuild this model: ``TSN.from_config(model.config())``."""
        cfg = {
            'num_class': self.num_class, 'num_segments': self.num_segments, 'modality': self.modality,
            'base_model': self.arch, 'new_length': self.new_length, 'consensus_type': self.consensus_type,
            'before_softmax': self.before_softmax, 'dropout': self.dropout,
            'img_feature_dim': self.img_feature_dim, 'crop_num': self.crop_num, 'partial_bn': self._enable_pbn,
            'pretrain': self.pretrain, 'fc_lr5': self.fc_lr5, 'first_conv_lr': self.first_conv_lr,
            'input_size': self.input_size, 'input_mean': list(self._input_mean), 'input_std': list(self._input_std),
            **self.temporal.keywords(),
        }
        if self.backbone_kwargs:
            cfg['backbone_kwargs'] = dict(self.backbone_kwargs)
        if self.heads:
            cfg['heads'] = [list(h) for h in self.heads]
        return cfg

    @property
    def is_temporal(self):
        """Frames of a clip interact inside the model (else it can be evaluated frame by frame)."""
        return is_temporal(self.config())

    # ------------------------------------------------------------------ forward
    def _get_diff(self, x):
        """(B, T*(L+1)*3, H, W) raw frames -> (B, T*L*3, H, W) consecutive differences."""
        b, _, h, w = x.shape
        x = x.reshape(b, self.num_segments, self.new_length + 1, 3, h, w)
        return (x[:, :, 1:] - x[:, :, :-1]).reshape(b, -1, h, w)

    def forward(self, x):
        if x.shape[1] != self.input_channels:
            raise ValueError(f'expected input (B, {self.input_channels}, H, W) for {self.modality} with '
                             f'{self.num_segments} segments x {self.frames_per_segment} frames, got {tuple(x.shape)}')
        b, _, h, w = x.shape
        if x.dtype == torch.uint8:
            x = self.normalize_input(x)
        if self.modality == 'RGBDiff':
            x = self._get_diff(x)
        if self.is_video_model:
            out = self.base_model(x.reshape(b, self.num_segments, -1, h, w))  # (B, D), or (B, num_class)
            return out if self.new_fc is None else self.new_fc(self.head_dropout(out))
        sample_len = CHANNELS[self.modality] * self.new_length
        out = self.base_model(x.reshape(-1, sample_len, h, w))  # (B*T', D) or (B*T', num_class)
        if self.new_fc is not None:
            out = self.new_fc(out)
        if not self.before_softmax:
            out = torch.softmax(out, dim=1)
        out = out.reshape(b, -1, self.num_class)  # (B, T', num_class); T' = T/2 after temporal pooling
        if self.consensus_type == 'avg':
            return out.mean(dim=1)
        return out  # identity consensus: per-segment logits (B, T', num_class)

    def normalize_input(self, x):
        """uint8 pixels (B, input_channels, H, W) -> the float input the backbone expects."""
        if self._pixel_mean.device != x.device:
            self._pixel_mean = self._pixel_mean.to(x.device)
            self._pixel_inv_std = self._pixel_inv_std.to(x.device)
        return normalize_uint8(x, self._pixel_mean, self._pixel_inv_std, self._pixel_roll)

    # ------------------------------------------------------------------ backbone protocol
    # The hooks of archs.backbone.VideoBackbone (aux_loss, set_epoch, get_optim_policies, num_class);
    # TSN is the one place that calls them.
    @property
    def aux_loss(self):
        """Auxiliary loss of a video backbone (ILA alignment loss) from the last forward, else None."""
        return self.base_model.aux_loss

    def set_epoch(self, epoch):
        """Tell a backbone whose training depends on the epoch (ILA: jitter of the alignment points)."""
        self.base_model.set_epoch(epoch)

    # ------------------------------------------------------------------ partial BN
    def _frozen_bns(self):
        """All BatchNorm2d of the backbone but the first (partial BN); BatchNorm3d (non-local) excluded."""
        bns = [m for m in self.base_model.modules() if isinstance(m, nn.BatchNorm2d)]
        return bns[1:] if self._enable_pbn else []

    def partialBN(self, enable):
        self._enable_pbn = enable
        if not enable:
            for m in self.base_model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.requires_grad_(True)
                    m.bias.requires_grad_(True)

    def train(self, mode=True):
        """In train mode with partial BN, freeze every BatchNorm2d but the first (stats and affine)."""
        super().train(mode)
        if mode:
            for m in self._frozen_bns():
                m.eval()
                m.weight.requires_grad_(False)
                m.bias.requires_grad_(False)
        return self

    # ------------------------------------------------------------------ optimiser groups
    @property
    def has_linear_head(self):
        """The logits are a linear layer of features (new_fc or the backbone's fc); False for ILA's text head."""
        return self.base_model.num_class is None

    def set_class_names(self, class_names):
        """A text-head model classifies over these names from now on (zero-shot); num_class follows."""
        if self.has_linear_head:
            raise ValueError(f'{self.arch} has a linear classifier over {self.num_class} trained classes; '
                             'other class names need a text head (--ila_head text)')
        self.base_model.set_class_names(class_names)
        self.num_class = self.base_model.num_class
        if self.backbone_kwargs.get('class_names') is not None:
            self.backbone_kwargs['class_names'] = list(self.base_model.text_head.class_names)

    def _head(self):
        if not self.has_linear_head:
            raise ValueError(f'{self.arch} classifies with a text head (cosine against class-name features), '
                             'not a linear layer on features')
        if self.new_fc is not None:
            return self.new_fc
        return getattr(self.base_model, self.base_model.last_layer_name)

    def get_optim_policies(self, lr=None, weight_decay=None):
        """TSM's parameter groups with lr_mult / decay_mult, or the backbone's own groups where it defines
        them (ILA's AdamW groups carry absolute lr and weight decay, so they need ``lr`` and
        ``weight_decay``; TSM's groups carry multipliers only and ignore both).

        Differences from TSM: non-local BatchNorm3d is always in the BN group (TSM left it out under
        partial BN, so the blocks stayed identities); 'fc_lr5' applies to the head only (TSM: every
        Linear, which is the same for its backbones); parameters of other module types go to
        'custom_ops'. Every parameter is either in a group or frozen by partial BN, else ValueError.
        """
        own = self.base_model.get_optim_policies(self, lr=lr, weight_decay=weight_decay)
        if own is not None:
            return own
        flow_first = self.modality == 'Flow' and self.first_conv_lr == 'tsm'
        groups = {
            'first_conv_weight': (5 if flow_first else 1, 1), 'first_conv_bias': (10 if flow_first else 2, 0),
            'normal_weight': (1, 1), 'normal_bias': (2, 0), 'BN scale/shift': (1, 0), 'custom_ops': (1, 1),
            'lr5_weight': (5, 1), 'lr10_bias': (10, 0),
        }
        params = {name: [] for name in groups}
        frozen = {id(p) for m in self._frozen_bns() for p in (m.weight, m.bias)}
        head = self._head()
        first_conv_seen = False
        for m in self.modules():
            own = dict(m.named_parameters(recurse=False))
            if not own:
                continue
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                if not first_conv_seen:
                    first_conv_seen = True
                    w, bias = 'first_conv_weight', 'first_conv_bias'
                else:
                    w, bias = 'normal_weight', 'normal_bias'
                params[w].append(m.weight)
                if m.bias is not None:
                    params[bias].append(m.bias)
            elif isinstance(m, nn.Linear):
                lr5 = self.fc_lr5 and (m is head or any(m is fc for fc in head.children()))
                w, bias = ('lr5_weight', 'lr10_bias') if lr5 else ('normal_weight', 'normal_bias')
                params[w].append(m.weight)
                if m.bias is not None:
                    params[bias].append(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                params['BN scale/shift'].extend(p for p in own.values() if id(p) not in frozen)
            elif isinstance(m, NORM_TYPES):
                params['BN scale/shift'].extend(own.values())
            else:
                params['custom_ops'].extend(own.values())
        grouped = {id(p) for ps in params.values() for p in ps}
        left_out = [n for n, p in self.named_parameters() if id(p) not in grouped and id(p) not in frozen]
        if left_out:
            raise ValueError(f'parameters in no optimiser group: {left_out}')
        if params['custom_ops']:
            logger.info('optimiser: %d tensors in custom_ops (lr x1, decay x1)', len(params['custom_ops']))
        return [{'params': params[name], 'lr_mult': lr, 'decay_mult': decay, 'name': name}
                for name, (lr, decay) in groups.items()]
