"""Temporal Shift Module (Lin et al., ICCV 2019) and temporal max-pooling.

The shift is a pure tensor function; ``TemporalShift`` and ``TemporalPool`` are thin wrappers whose
wrapped layer is the attribute ``net`` so state-dict keys match the released TSM checkpoints
(``layer1.0.conv1.net.weight`` for blockres, ``layer1.0.net.conv1.weight`` for block,
``layer2.net.0.conv1.weight`` for temporal pooling).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

SHIFT_PLACES = ('blockres', 'block')
# 'bi': TSM's offline shift (one fold from t+1, one from t-1); 'uni': the online shift (one fold from t-1).
SHIFT_DIRECTIONS = ('bi', 'uni')


def _split_time(x, n_segment):
    """(N*T, C, H, W) -> (N, T, C, H, W); splitting dim 0 is a view for any memory format."""
    nt, c, h, w = x.shape
    if nt % n_segment != 0:
        raise ValueError(f'batch dimension {nt} is not a multiple of n_segment={n_segment}')
    return x.view(nt // n_segment, n_segment, c, h, w)


def _shift(x, n_segment, fold_div, direction='bi', adjoint=False):
    """The shift of `direction` (adjoint=False) or its adjoint, the shift in the opposite direction
    (adjoint=True): 'bi' moves channels [0, fold) from t+1 and [fold, 2*fold) from t-1, 'uni' moves
    [0, fold) from t-1; the other channels stay.

    One output allocation (same memory format as x), a slice copy and a border zero fill per moved fold,
    one copy of the kept channels.
    """
    x5 = _split_time(x, n_segment)  # (N, T, C, H, W)
    fold = x5.shape[2] // fold_div
    # (channels, +1: taken from t+1 / -1: taken from t-1)
    moves = [(slice(0, fold), 1), (slice(fold, 2 * fold), -1)] if direction == 'bi' else [(slice(0, fold), -1)]
    out = torch.empty_like(x)
    o5 = out.view(x5.shape)
    for channels, step in moves:
        if (step > 0) != adjoint:
            o5[:, :-1, channels] = x5[:, 1:, channels]
            o5[:, -1:, channels] = 0
        else:
            o5[:, 1:, channels] = x5[:, :-1, channels]
            o5[:, :1, channels] = 0
    kept = len(moves) * fold
    o5[:, :, kept:] = x5[:, :, kept:]
    return out


class _Shift(torch.autograd.Function):
    # Autograd through _shift's slice assignments would build a zero-filled full-size gradient per
    # slice and sum them (about 8x the forward's time on CPU); the adjoint of a shift is the opposite
    # shift, which costs what the forward costs.
    @staticmethod
    def forward(ctx, x, n_segment, fold_div, direction):
        ctx.n_segment, ctx.fold_div, ctx.direction = n_segment, fold_div, direction
        return _shift(x, n_segment, fold_div, direction)

    @staticmethod
    def backward(ctx, grad):
        return _shift(grad, ctx.n_segment, ctx.fold_div, ctx.direction, adjoint=True), None, None, None


def shift(x, n_segment, fold_div=8):
    """Shift 1/fold_div of the channels one step back in time and 1/fold_div one step forward.

    x: (N*T, C, H, W). With fold = C // fold_div, output at time t:
      channels [0, fold)       <- x at t+1 (zero at t = T-1)
      channels [fold, 2*fold)  <- x at t-1 (zero at t = 0)
      channels [2*fold, C)     <- x at t
    The output has x's memory format (channels_last stays channels_last).
    Under tracing (ONNX export, torch.jit.trace) or torch.export, ``shift_for_export`` computes it.
    """
    if torch.jit.is_tracing() or torch.compiler.is_exporting():
        return shift_for_export(x, n_segment, fold_div)
    return _Shift.apply(x, n_segment, fold_div, 'bi')


def shift_uni(x, n_segment, fold_div=8):
    """Online (causal) shift, as TSM's online demo: only the past reaches the present.

    x: (N*T, C, H, W). With fold = C // fold_div, output at time t:
      channels [0, fold)  <- x at t-1 (zero at t = 0)
      channels [fold, C)  <- x at t
    So the output at t depends on frames 0..t only, and a stream can compute it frame by frame from the
    previous frame's first fold (ops/online.py).
    """
    if torch.jit.is_tracing() or torch.compiler.is_exporting():
        return shift_for_export(x, n_segment, fold_div, direction='uni')
    return _Shift.apply(x, n_segment, fold_div, 'uni')


def shift_fn(direction):
    """The shift function of a direction ('bi' or 'uni')."""
    if direction == 'bi':
        return shift
    if direction == 'uni':
        return shift_uni
    raise ValueError(f'unknown shift direction {direction!r}; allowed: {SHIFT_DIRECTIONS}')


def shift_for_export(x, n_segment, fold_div=8, direction='bi'):
    """``shift`` (direction 'bi') or ``shift_uni`` ('uni') as slices and concatenations with zeros: what
    exporters can record.

    The training path (``_Shift``) writes slices into a fresh tensor through a view of it. The legacy
    TorchScript-based ONNX exporter does not carry writes made through a view back to the viewed
    tensor, so the traced graph returns the untouched ``empty_like`` buffer, folds it into a constant
    and drops x's path (no Slice/Concat left): the exported model silently runs without the shift; and
    autograd Functions do not export at all. Same values as ``shift`` / ``shift_uni`` (exactly: only
    copies and zeros), but about twice their memory traffic, so training keeps ``_Shift``.
    """
    x5 = _split_time(x, n_segment)  # (N, T, C, H, W)
    fold = x5.shape[2] // fold_div
    zero = torch.zeros_like(x5[:, :1, :fold])                               # (N, 1, fold, H, W)
    if direction == 'bi':
        back = torch.cat([x5[:, 1:, :fold], zero], dim=1)                   # t <- t+1, zero at T-1
        fwd = torch.cat([zero, x5[:, :-1, fold:2 * fold]], dim=1)           # t <- t-1, zero at 0
        parts = [back, fwd, x5[:, :, 2 * fold:]]
    elif direction == 'uni':
        past = torch.cat([zero, x5[:, :-1, :fold]], dim=1)                  # t <- t-1, zero at 0
        parts = [past, x5[:, :, fold:]]
    else:
        raise ValueError(f'unknown shift direction {direction!r}; allowed: {SHIFT_DIRECTIONS}')
    return torch.cat(parts, dim=2).reshape(x.shape)


def temporal_pool(x, n_segment):
    """Max-pool over time, kernel 3, stride 2, padding 1: (N*T, C, H, W) -> (N*ceil(T/2), C, H, W)."""
    x5 = _split_time(x, n_segment).transpose(1, 2)  # (N, C, T, H, W)
    y = F.max_pool3d(x5, kernel_size=(3, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0))
    n, c, t, h, w = y.shape
    return y.transpose(1, 2).reshape(n * t, c, h, w)


class TemporalShift(nn.Module):
    """Applies ``shift`` to the input of ``net``."""

    def __init__(self, net, n_segment=3, n_div=8, inplace=False):
        super().__init__()
        if inplace:
            # TSM removed its in-place shift because of a bug; the out-of-place one allocates once.
            raise NotImplementedError('in-place temporal shift is not supported')
        self.net = net
        self.n_segment = n_segment
        self.fold_div = n_div

    def forward(self, x):
        return self.net(shift(x, self.n_segment, self.fold_div))

    def extra_repr(self):
        return f'n_segment={self.n_segment}, fold_div={self.fold_div}'


class TemporalShiftUni(TemporalShift):
    """Applies ``shift_uni`` (the online, causal shift) to the input of ``net``; same keys as TemporalShift."""

    def forward(self, x):
        return self.net(shift_uni(x, self.n_segment, self.fold_div))

    def extra_repr(self):
        return super().extra_repr() + ', direction=uni'


class TemporalPool(nn.Module):
    """Max-pools the input of ``net`` over time (halves the number of segments)."""

    def __init__(self, net, n_segment):
        super().__init__()
        self.net = net
        self.n_segment = n_segment

    def forward(self, x):
        return self.net(temporal_pool(x, self.n_segment))

    def extra_repr(self):
        return f'n_segment={self.n_segment}'
