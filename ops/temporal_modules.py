"""The temporal modules of TSN: one table keyed by the ``--temporal_module`` values, and the inserts.

``TEMPORAL_MODULES`` says what each module is:

- an ``Insert`` into a 2-D backbone, which changes ``net`` in place as ``insert(net, n_segment, **options)``:
  tsm (temporal shift, bi- or uni-directional; ops/temporal_shift.py) and tin (temporal interlace;
  ops/tin.py); the entry names the registry families it is defined for and, for tsm, the shift places;
- a ``MotionNetwork``: msn and tdn (archs/msn.py) are backbones of their own, registry variants of a 2-D
  ResNet with 5 RGB frames per segment.

TSN, the parser's choices and help, and the backbones' temporal traits (which modules and shift places a
registry backbone takes, whether it models time itself) all derive from this table, so a new module is an
entry here plus its implementation file. Non-local blocks and temporal pooling are inserts too, but with
flags of their own (``--non_local``, ``--temporal_pool``), not ``--temporal_module`` values:
``FLAG_INSERTS``. ``TemporalConfig`` holds all of TSN's temporal options.
"""
import dataclasses
import logging
from typing import Callable, Optional

import torchvision

import archs
from archs.bn_inception import BNInception
from archs.mobilenet_v2 import InvertedResidual, MobileNetV2
from archs.msn import FRAMES_PER_SEGMENT
from ops.non_local import make_non_local
from ops.temporal_shift import SHIFT_DIRECTIONS, SHIFT_PLACES, TemporalPool, TemporalShift, TemporalShiftUni
from ops.tin import make_temporal_interlace

logger = logging.getLogger(__name__)


def _stage_segments(n_segment, temporal_pool):
    """Segments seen by layer1..layer4: temporal pooling sits before layer2."""
    if temporal_pool:
        return [n_segment] + [n_segment // 2] * 3
    return [n_segment] * 4


def make_temporal_shift(net, n_segment, n_div=8, place='blockres', temporal_pool=False, direction='bi'):
    """Insert temporal shifts into a backbone in place (and return it).

    ResNet: 'blockres' shifts the residual branch (wraps each block's conv1), 'block' shifts the
    whole block input. With >= 23 blocks in layer3 (R101/R152) blockres shifts every other block in
    every stage, as TSM does, so the released R101 checkpoints load.
    MobileNetV2: shift before the first 1x1 conv of every inverted residual block that has an
    expansion layer and a residual connection ('blockres' only).
    BNInception: the input of stages 2..12 is shifted ('block' only).
    direction 'uni' inserts the online shift (TemporalShiftUni); it is causal, so temporal pooling
    (which mixes t and t+1) is refused with it.
    """
    if place not in SHIFT_PLACES:
        raise ValueError(f'unknown shift place {place!r}; allowed: {SHIFT_PLACES}')
    wrapper = {'bi': TemporalShift, 'uni': TemporalShiftUni}.get(direction)
    if wrapper is None:
        raise ValueError(f'unknown shift direction {direction!r}; allowed: {SHIFT_DIRECTIONS}')
    if direction == 'uni' and temporal_pool:
        raise ValueError('temporal pooling mixes future frames into the present; it cannot be used with '
                         "the uni-directional (online) shift")
    if isinstance(net, torchvision.models.ResNet):
        segments = _stage_segments(n_segment, temporal_pool)
        n_round = 2 if len(net.layer3) >= 23 else 1
        for name, seg in zip(('layer1', 'layer2', 'layer3', 'layer4'), segments):
            stage = getattr(net, name)
            for i, b in enumerate(stage):
                if place == 'block':
                    stage[i] = wrapper(b, n_segment=seg, n_div=n_div)
                elif i % n_round == 0:
                    b.conv1 = wrapper(b.conv1, n_segment=seg, n_div=n_div)
        logger.info('temporal shift: %s %s, fold_div %d, n_round %d', direction, place, n_div, n_round)
        return net
    if temporal_pool:
        raise NotImplementedError(f'temporal pooling is defined for ResNets only, not {type(net).__name__}')
    if isinstance(net, MobileNetV2):
        if place != 'blockres':
            raise ValueError("MobileNetV2 supports shift_place='blockres' only (residual shift)")
        for m in net.modules():
            if isinstance(m, InvertedResidual) and m.expand and m.use_res_connect:
                m.conv[0] = wrapper(m.conv[0], n_segment=n_segment, n_div=n_div)
        return net
    if isinstance(net, BNInception):
        if place != 'block':
            # TSM's residual form relu(x + stage(shift(x))) cannot add inputs and outputs of
            # different widths (e.g. 64 -> 192 channels), so only the plain shift is defined.
            raise ValueError("BNInception supports shift_place='block' only")
        net.set_temporal_shift(n_segment, n_div, direction=direction)
        return net
    raise NotImplementedError(f'temporal shift is not defined for {type(net).__name__}; '
                              'supported: torchvision ResNet, MobileNetV2, BNInception')


def make_temporal_pool(net, n_segment):
    """Wrap ``net.layer2`` (torchvision ResNet) so time is max-pooled before it."""
    if not isinstance(net, torchvision.models.ResNet):
        raise NotImplementedError(f'temporal pooling is defined for ResNets only, not {type(net).__name__}')
    if n_segment % 2 != 0:
        raise ValueError(f'temporal pooling needs an even number of segments, got {n_segment}')
    net.layer2 = TemporalPool(net.layer2, n_segment)
    return net


@dataclasses.dataclass(frozen=True)
class Insert:
    """A module inserted into a 2-D backbone: ``insert(net, n_segment, **keywords)`` changes ``net`` in place.

    families: ((registry family, shift places), ...), the backbones it is defined for; the places are the
    ``shift_place`` values it accepts there (tsm), () where it has no place option. options: ((keyword of
    ``insert``, TemporalConfig field), ...)."""
    insert: Callable
    families: tuple
    options: tuple = ()
    summary: str = ''                 # for --help

    def defined_for(self, arch):
        return archs.backbone_traits(arch).family in dict(self.families)

    def apply(self, net, n_segment, temporal):
        return self.insert(net, n_segment, **{kw: getattr(temporal, field) for kw, field in self.options})


@dataclasses.dataclass(frozen=True)
class MotionNetwork:
    """A whole-network motion model: its own backbone in the archs registry, a variant of a 2-D ResNet.

    variants: ((2-D registry name, registry name of its variant), ...). options: ((keyword of the variant's
    constructor, TemporalConfig field), ...), besides num_segments."""
    variants: tuple
    options: tuple = ()
    summary: str = ''                 # for --help
    frames_per_segment: int = FRAMES_PER_SEGMENT
    modalities: tuple = ('RGB',)

    def defined_for(self, arch):
        return arch in dict(self.variants)

    def keywords(self, temporal):
        return {kw: getattr(temporal, field) for kw, field in self.options}


def _resnet_variants(module, depths=(18, 34, 50, 101)):
    return tuple((f'resnet{d}', f'{module}_resnet{d}') for d in depths)


# The --temporal_module values, in the order of the parser's choices.
TEMPORAL_MODULES = {
    'tsm': Insert(make_temporal_shift,
                  families=(('resnet', ('blockres', 'block')), ('mobilenetv2', ('blockres',)),
                            ('bninception', ('block',))),
                  options=(('n_div', 'shift_div'), ('place', 'shift_place'), ('temporal_pool', 'temporal_pool'),
                           ('direction', 'shift_direction')),
                  summary='same as --shift'),
    'tin': Insert(make_temporal_interlace, families=(('resnet', ()),), options=(('shift_div', 'tin_shift_div'),),
                  summary='temporal interlacing'),
    'msn': MotionNetwork(_resnet_variants('msn'), options=(('init', 'motion_init'),),
                         summary='motion-sensitive net'),
    'tdn': MotionNetwork(_resnet_variants('tdn'), options=(('init', 'motion_init'),),
                         summary='temporal difference net, which MSN builds on'),
}
MOTION_MODULES = tuple(name for name, entry in TEMPORAL_MODULES.items() if isinstance(entry, MotionNetwork))

# Inserts switched on by flags of their own, keyed by their TemporalConfig field; TSN inserts them in this
# order, after the --temporal_module insert.
FLAG_INSERTS = {
    'non_local': Insert(make_non_local, families=(('resnet', ()),), options=(('temporal_pool', 'temporal_pool'),)),
    'temporal_pool': Insert(make_temporal_pool, families=(('resnet', ()),)),
}


def temporal_module_help():
    """--temporal_module's help: each module with its summary."""
    items = [f'{name} ({entry.summary})' for name, entry in TEMPORAL_MODULES.items()]
    return ', '.join(items[:-1]) + ' or ' + items[-1]


def temporal_modules_of(arch):
    """The --temporal_module values registry backbone ``arch`` takes."""
    return tuple(name for name, entry in TEMPORAL_MODULES.items() if entry.defined_for(arch))


def shift_places_of(arch):
    """The shift places at which the temporal shift (tsm) can be inserted into ``arch``; () for none."""
    return dict(TEMPORAL_MODULES['tsm'].families).get(archs.backbone_traits(arch).family, ())


def motion_module_of(arch):
    """The motion network (a MOTION_MODULES value) registry backbone ``arch`` is, else None."""
    return next((name for name in MOTION_MODULES if arch in dict(TEMPORAL_MODULES[name].variants).values()), None)


def backbone_models_time(arch):
    """Frames of a clip interact inside backbone ``arch`` itself, whatever TSN inserts (MSN, TDN, ILA)."""
    return archs.backbone_traits(arch).video or motion_module_of(arch) is not None


def backbone_entry(base_model, temporal_module=None):
    """The archs.BACKBONES entry TSN builds: MSN and TDN replace a ResNet by their own variant of it."""
    archs.backbone_traits(base_model)              # an unknown name raises, listing the known ones
    if temporal_module not in MOTION_MODULES or motion_module_of(base_model) == temporal_module:
        return base_model
    variants = dict(TEMPORAL_MODULES[temporal_module].variants)
    if base_model not in variants:
        raise ValueError(f'temporal_module="{temporal_module}" needs a ResNet base model; '
                         f'{base_model!r} has no {temporal_module.upper()} variant '
                         f'(available: {tuple(variants.values())})')
    return variants[base_model]


def insert_temporal_modules(net, n_segment, temporal):
    """Insert into 2-D backbone ``net`` (in place; returned) what TemporalConfig ``temporal`` asks for: its
    module when that is an insert (tsm, tin) first, then non-local blocks and temporal pooling around it.
    A motion network is a backbone of its own (``backbone_entry``): nothing to insert for it."""
    module = TEMPORAL_MODULES.get(temporal.module)
    if isinstance(module, Insert):
        module.apply(net, n_segment, temporal)
    for flag, insert in FLAG_INSERTS.items():
        if getattr(temporal, flag):
            insert.apply(net, n_segment, temporal)
    return net


@dataclasses.dataclass(frozen=True)
class TemporalConfig:
    """TSN's temporal options. module: a TEMPORAL_MODULES key, or None (none; a motion network's own
    registry backbone, e.g. msn_resnet50, fills in its module). The others apply to the modules named.

    Checkpoints keep TSM's flat keywords (``is_shift``, ``temporal_module``, ``shift_div``, ...):
    ``keywords()`` writes them, ``split(config)`` reads them back."""
    module: Optional[str] = None
    shift_div: int = 8                # tsm: 1/shift_div of the channels shifted each way
    shift_place: str = 'blockres'     # tsm: SHIFT_PLACES
    shift_direction: str = 'bi'       # tsm: SHIFT_DIRECTIONS; 'uni' is the online (causal) shift
    temporal_pool: bool = False       # tsm: max-pool over time before layer2
    non_local: bool = False           # non-local blocks in layer2/layer3
    tin_shift_div: int = 4            # tin: 1/tin_shift_div of the channels interlaced
    motion_init: str = 'reference'    # msn/tdn: initialisation of the new modules (archs/msn.py)

    def __post_init__(self):
        if self.module is not None and self.module not in TEMPORAL_MODULES:
            raise ValueError(f'unknown temporal_module {self.module!r}; allowed: {tuple(TEMPORAL_MODULES)}')
        for name, allowed in (('shift_place', SHIFT_PLACES), ('shift_direction', SHIFT_DIRECTIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f'unknown {name} {getattr(self, name)!r}; allowed: {allowed}')
        if self.temporal_pool and self.module != 'tsm':
            raise ValueError('temporal_pool needs the temporal shift (is_shift / temporal_module="tsm")')
        if self.shift_direction == 'uni':
            # The online model must be causal: every frame may only see itself and the past.
            if self.module != 'tsm':
                raise ValueError("shift_direction='uni' needs the temporal shift (is_shift / temporal_module='tsm')")
            if self.temporal_pool or self.non_local:
                raise ValueError("shift_direction='uni' (online TSM) is causal; temporal_pool and non_local mix "
                                 'future frames into the present and cannot be combined with it')

    def keywords(self):
        """The flat keywords of TSN.config() (as checkpoints store them); motion_init for motion networks only."""
        kw = {'is_shift': self.module == 'tsm', 'temporal_module': self.module}
        kw.update((f.name, getattr(self, f.name)) for f in dataclasses.fields(self)
                  if f.name not in ('module', 'motion_init'))
        if self.module in MOTION_MODULES:
            kw['motion_init'] = self.motion_init
        return kw

    @classmethod
    def split(cls, config):
        """(TemporalConfig, the other keywords) of TSN.config()'s flat keywords: is_shift=True is
        temporal_module='tsm'; a temporal keyword that is absent keeps its default."""
        names = {f.name for f in dataclasses.fields(cls)} - {'module'}
        module = config.get('temporal_module')
        if config.get('is_shift'):
            if module not in (None, 'tsm'):
                raise ValueError(f'is_shift=True means temporal_module="tsm", got {module!r}')
            module = 'tsm'
        temporal = cls(module, **{k: v for k, v in config.items() if k in names})
        return temporal, {k: v for k, v in config.items() if k not in names | {'is_shift', 'temporal_module'}}
