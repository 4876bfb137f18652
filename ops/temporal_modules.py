"""The temporal modules TSN inserts into a 2-D backbone: one name -> insert-function table.

Every entry changes ``net`` in place as ``insert(net, n_segment, **options)`` and returns it:
tsm (temporal shift, bi- or uni-directional; ops/temporal_shift.py), tin (temporal interlace;
ops/tin.py), non_local (non-local blocks; ops/non_local.py), tpool (temporal max-pooling before layer2).
MSN and TDN are not inserts: they are backbones of their own (archs/msn.py).
"""
import logging

import torchvision

from archs.bn_inception import BNInception
from archs.mobilenet_v2 import InvertedResidual, MobileNetV2
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


TEMPORAL_INSERTS = {
    'tsm': make_temporal_shift,
    'tin': make_temporal_interlace,
    'non_local': make_non_local,
    'tpool': make_temporal_pool,
}
