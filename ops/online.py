"""Online TSM (Lin et al., ICCV 2019, section 4.3): a trained uni-directional TSN run frame by frame.

With ``shift_direction='uni'`` the first fold of channels at every shift point comes from the previous
frame and the rest from the current one (``ops/temporal_shift.shift_uni``), so frame t depends only on
frames 0..t. ``to_streaming(model)`` turns such a TSN into a per-frame module: each shift point keeps the
first fold of the frame it saw last, and a new frame costs one 2D forward plus that copy::

    stream = to_streaming(model)                     # model: TSN with shift_direction='uni', eval mode
    state = stream.initial_state(batch, height, width)   # zeros: there is no frame before the first
    for frame in frames:                             # frame: (B, 3, H, W), normalised like the test transform
        logits, state = stream.step(frame, state)    # logits (B, num_class) of this frame

The per-frame logits equal, to float rounding, those the offline uni model computes for the same frame
from the whole clip (``offline_frame_logits``), for any clip length. Like TSM's online demo, the state is
a flat tuple of tensors (one per shift point, in module order), so ``step`` exports to torch.export /
ONNX with the state as explicit inputs and outputs (``export_step``).
"""
import logging
import warnings

import torch
import torch.nn as nn

from ops.temporal_shift import TemporalShiftUni
from ops.transforms import normalize_uint8

logger = logging.getLogger(__name__)


class _StateBus:
    """The state of one ``step`` call, shared by the cached-shift points of one stream.

    ``inputs`` is the state given to the step (None: zeros, i.e. the first frame); each shift point
    writes the fold the next frame will read to ``outputs[index]``.
    """

    def __init__(self, size):
        self.size = size
        self.inputs = None
        self.outputs = [None] * size


def _cached_shift(bus, index, fold_div, x):
    """One frame's shift: (B, C, H, W) -> (B, C, H, W), the first C // fold_div channels from the cache."""
    fold = x.shape[1] // fold_div
    head = x[:, :fold]                                       # (B, fold, H, W): what the next frame reads
    # A copy, not a view: a later in-place op of the backbone must not change the cached state.
    bus.outputs[index] = head.clone()
    # clone + one fold written, not torch.cat: a channel cat of channels_last tensors is a strided
    # gather, 3-8x slower than this on CPU (scripts/benchmark.py online).
    out = x.clone()
    if bus.inputs is None:
        out[:, :fold] = 0
    else:
        out[:, :fold] = bus.inputs[index]
    return out


class CachedShift(nn.Module):
    """Per-frame replacement of a ``TemporalShiftUni`` (same ``net``, so the state-dict keys stay)."""

    def __init__(self, net, fold_div, index, bus):
        super().__init__()
        self.net = net
        self.fold_div = fold_div
        self.index = index
        self._bus = bus

    def forward(self, x):
        return self.net(_cached_shift(self._bus, self.index, self.fold_div, x))

    def extra_repr(self):
        return f'fold_div={self.fold_div}, state_index={self.index}'


def _check_streamable(model):
    from ops.models import TSN
    if not isinstance(model, TSN):
        raise TypeError(f'to_streaming needs an ops.models.TSN, got {type(model).__name__}')
    temporal = model.temporal
    if temporal.module != 'tsm':
        raise ValueError(f'to_streaming needs a TSM model (temporal_module="tsm"); this {model.arch} has '
                         f'temporal_module={temporal.module!r}')
    if temporal.temporal_pool or temporal.non_local:
        raise ValueError('to_streaming: temporal pooling and non-local blocks are not causal (they mix '
                         'future frames into the present); train an online model without them')
    if temporal.shift_direction != 'uni':
        raise ValueError(f'to_streaming needs a model trained with shift_direction="uni" (online TSM); this '
                         f'one has shift_direction={temporal.shift_direction!r}, whose shift also reads the '
                         'next frame, so it cannot run frame by frame (train with --shift_direction uni)')
    if model.modality != 'RGB' or model.new_length != 1:
        raise ValueError(f'to_streaming runs RGB models with one frame per segment; this one is '
                         f'{model.modality} with new_length={model.new_length}')


class StreamingTSN(nn.Module):
    """A uni-directional TSN as a per-frame module; build it with ``to_streaming``.

    ``forward(frame, state) -> (logits, new_state)`` with frame (B, 3, H, W), state a tuple of
    ``num_states`` tensors (B, fold_i, H_i, W_i) or None for zeros, logits (B, num_class). Always in eval
    mode: BatchNorm uses its running statistics and dropout is off.
    """

    def __init__(self, model):
        super().__init__()
        import copy
        from archs.bn_inception import BNInception
        _check_streamable(model)
        src = copy.deepcopy(model).eval()
        base = src.base_model
        points = [(name, m) for name, m in base.named_modules() if isinstance(m, TemporalShiftUni)]
        if isinstance(base, BNInception):
            from archs.bn_inception import _STAGES
            num = len(_STAGES) + 1          # shifted inputs: the second stem stage and every inception stage
        else:
            num = len(points)
        if num == 0:
            raise ValueError(f'{model.arch}: no temporal shift found to stream')
        self._bus = _StateBus(num)
        for index, (name, m) in enumerate(points):
            parent_name, _, leaf = name.rpartition('.')
            parent = base.get_submodule(parent_name) if parent_name else base
            setattr(parent, leaf, CachedShift(m.net, m.fold_div, index, self._bus))
        if isinstance(base, BNInception):
            bus, fold_div = self._bus, base.fold_div
            # The instance attribute overrides the method on this copy only (stages 1..11 -> state 0..10).
            base.shift_stage_input = lambda x, i: _cached_shift(bus, i - 1, fold_div, x)
        self.base_model = base
        self.new_fc = src.new_fc
        self.before_softmax = src.before_softmax
        self.num_class = src.num_class
        self.arch = src.arch
        self.num_states = num
        # uint8 frames (the loaders' output) are normalised like TSN.normalize_input, with one frame's constants
        self._pixel_mean = src._pixel_mean[:, :3].clone()
        self._pixel_inv_std = src._pixel_inv_std[:, :3].clone()
        self._pixel_roll = src._pixel_roll
        self.eval()

    def train(self, mode=True):
        if mode:
            raise RuntimeError('StreamingTSN runs inference only (train the offline uni model instead)')
        return super().train(False)

    def forward(self, frame, state=None):
        if frame.dim() != 4 or frame.shape[1] != 3:
            raise ValueError(f'expected one frame per stream (B, 3, H, W), got {tuple(frame.shape)}')
        if state is not None and len(state) != self.num_states:
            raise ValueError(f'state has {len(state)} tensors, this {self.arch} stream needs {self.num_states}')
        if state is not None and state[0].shape[0] != frame.shape[0]:
            raise ValueError(f'state is for {state[0].shape[0]} streams but the frame batch has {frame.shape[0]}')
        if frame.dtype == torch.uint8:
            if self._pixel_mean.device != frame.device:
                self._pixel_mean = self._pixel_mean.to(frame.device)
                self._pixel_inv_std = self._pixel_inv_std.to(frame.device)
            frame = normalize_uint8(frame, self._pixel_mean, self._pixel_inv_std, self._pixel_roll)
        bus = self._bus
        bus.inputs = state
        bus.outputs = [None] * self.num_states
        try:
            out = self.base_model(frame)                 # (B, D), or (B, num_class) without dropout
            if self.new_fc is not None:
                out = self.new_fc(out)
            if not self.before_softmax:
                out = torch.softmax(out, dim=1)
            return out, tuple(bus.outputs)
        finally:
            bus.inputs = None
            bus.outputs = [None] * self.num_states

    step = forward

    @torch.no_grad()
    def state_shapes(self, height, width):
        """Per shift point (fold, H_i, W_i) for frames of height x width (one probe forward)."""
        p = next(self.parameters())
        _, state = self(torch.zeros(1, 3, height, width, dtype=p.dtype, device=p.device))
        return [tuple(s.shape[1:]) for s in state]

    def initial_state(self, batch, height, width, dtype=None, device=None):
        """Zeros for every shift point: the state before the first frame (TSM: zero padding at t = 0)."""
        p = next(self.parameters())
        dtype = dtype or p.dtype
        device = device or p.device
        return tuple(torch.zeros((batch,) + s, dtype=dtype, device=device)
                     for s in self.state_shapes(height, width))


def to_streaming(model):
    """A per-frame ``StreamingTSN`` from a trained uni-directional TSN (the model itself is not changed)."""
    return StreamingTSN(model)


def state_nbytes(state):
    """Bytes held by a stream's state."""
    return sum(s.numel() * s.element_size() for s in state)


@torch.no_grad()
def offline_frame_logits(model, clip):
    """The offline definition: per-frame logits of the uni TSN run on the whole clip at once.

    clip: (B, T, 3, H, W) -> (B, T, num_class), for any T (the model is rebuilt with num_segments=T and
    identity consensus, with the same weights). Because the uni shift is causal, frame t's logits
    depend on frames 0..t only.
    """
    from ops.checkpoint import without_pretrained
    from ops.models import TSN
    b, t, c, h, w = clip.shape
    p = next(model.parameters())
    cfg = dict(without_pretrained(model.config()), num_segments=t, consensus_type='identity')
    ref = TSN.from_config(cfg)
    ref.load_state_dict(model.state_dict())
    ref.to(device=p.device, dtype=p.dtype).eval()
    return ref(clip.reshape(b, t * c, h, w))


@torch.no_grad()
def stream_clip(stream, clip, state=None):
    """Feed a clip (B, T, 3, H, W) frame by frame; returns per-frame logits (B, T, num_class) and the state."""
    outs = []
    for t in range(clip.shape[1]):
        logits, state = stream(clip[:, t], state)
        outs.append(logits)
    return torch.stack(outs, dim=1), state


class _FlatStep(nn.Module):
    """``step`` with the state as separate positional tensors: (frame, s_0..s_n) -> (logits, s'_0..s'_n)."""

    def __init__(self, stream):
        super().__init__()
        self.stream = stream

    def forward(self, frame, *state):
        logits, new_state = self.stream(frame, tuple(state))
        return (logits,) + tuple(new_state)


def export_step(stream, height, width, batch=1, onnx_path=None):
    """torch.export (and ONNX, when ``onnx_path`` is given) of one streaming step.

    Inputs: ``frame`` (batch, 3, H, W) and ``state_0``..``state_{n-1}``; outputs: ``logits`` and
    ``next_state_0``..``next_state_{n-1}``. Returns the ExportedProgram.
    """
    flat = _FlatStep(stream).eval()
    state = stream.initial_state(batch, height, width)
    p = next(stream.parameters())
    frame = torch.zeros(batch, 3, height, width, dtype=p.dtype, device=p.device)
    with torch.no_grad():
        program = torch.export.export(flat, (frame,) + state)
        if onnx_path is not None:
            names = [f'state_{i}' for i in range(len(state))]
            # The TorchScript-based exporter: the dynamo one needs onnxscript, which is not a dependency.
            # The step's input-shape checks are constants for the exported shape (TracerWarning).
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', torch.jit.TracerWarning)
                torch.onnx.export(flat, (frame,) + state, onnx_path, dynamo=False,
                                  input_names=['frame'] + names,
                                  output_names=['logits'] + [f'next_{n}' for n in names])
    return program


@torch.no_grad()
def export_parity(stream, clip, program=None, onnx_path=None):
    """Max abs difference of per-frame logits (and of the final state) between eager ``step`` and the
    exported step(s), fed the same clip (B, T, 3, H, W) frame by frame. Returns a dict per backend."""
    ref, ref_state = stream_clip(stream, clip)
    result = {}
    if program is not None:
        module = program.module()
        state = stream.initial_state(clip.shape[0], clip.shape[3], clip.shape[4])
        outs = []
        for t in range(clip.shape[1]):
            logits, *state = module(clip[:, t], *state)
            outs.append(logits)
        result['torch.export'] = _max_diff(ref, torch.stack(outs, 1), ref_state, state)
    if onnx_path is not None:
        import numpy as np
        import onnxruntime as ort
        sess = ort.InferenceSession(onnx_path, providers=['CPUExecutionProvider'])
        names = [i.name for i in sess.get_inputs()]
        state = [s.cpu().numpy() for s in stream.initial_state(clip.shape[0], clip.shape[3], clip.shape[4])]
        outs = []
        for t in range(clip.shape[1]):
            feed = dict(zip(names, [clip[:, t].cpu().numpy()] + state))
            logits, *state = sess.run(None, feed)
            outs.append(torch.from_numpy(np.asarray(logits)))
        result['onnxruntime'] = _max_diff(ref.cpu(), torch.stack(outs, 1), ref_state,
                                          [torch.from_numpy(np.asarray(s)) for s in state])
    return result


def _max_diff(ref, out, ref_state, state):
    logits = (ref.float() - out.to(ref.device).float()).abs().max().item()
    st = max((a.float() - b.to(a.device).float()).abs().max().item() for a, b in zip(ref_state, state))
    return {'logits': logits, 'state': st}


def load_uni_model(path, shift_direction=None):
    """The TSN stored in a checkpoint (its own config; released TSM files: keys and file name).

    A file in the layout of TSM's online demo (the bare MobileNetV2's state dict,
    ``mobilenetv2_jester_online.pth.tar``) gets the demo's settings, which its keys do not show
    (``ops.checkpoint.TSM_ONLINE_DEMO``: uni shift of 1/8 before conv.0 of the residual blocks).
    ``shift_direction`` is for released files without a config; a value contradicting a recorded one
    raises. Raises ValueError naming ``path`` when the model cannot stream (see ``to_streaming``).
    """
    from ops.checkpoint import load_checkpoint, load_weights, model_config_from_checkpoint
    from ops.models import TSN
    ckpt = load_checkpoint(path)
    try:
        config = model_config_from_checkpoint(ckpt, path=path, shift_direction=shift_direction)
        model = TSN.from_config(config)
        load_weights(model, ckpt, strict=True)
        _check_streamable(model)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f'{path}: {exc}') from None
    return model.eval()
