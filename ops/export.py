"""Export a trained model to ONNX or to a torch.export program (.pt2), and check it against eager.

The exported function is the evaluation model of one clip: input `clips` (B, T*F*C, S, S), normalised
as ops.transforms.build_transform(train=False) leaves it (model.normalization()), output `logits`
(B, num_class), the average over the T segments (a per-frame TSN model sees the whole clip here; its
frames do not interact, so this is test_models.py's per-frame average). The model's settings (config,
class names, normalisation) travel in the file: ONNX metadata_props, or the .pt2 extra file
`config.json`.

ONNX uses the TorchScript-based exporter (torch.onnx.export(dynamo=False)): the torch.export-based one
needs onnxscript. The temporal shift exports through ops.temporal_shift.shift_for_export. MSN's
deformable convolution (torchvision::deform_conv2d) becomes ONNX DeformConv, which exists from opset 19.
"""
import json
import logging
import warnings

import numpy as np
import torch

from ops.checkpoint import checkpoint_class_names, load_checkpoint, load_weights, model_config_from_checkpoint
from ops.heads import heads_text
from ops.models import TSN, has_text_head, with_class_names

logger = logging.getLogger(__name__)

FORMATS = ('onnx', 'pt2')
ONNX_OPSET = 17
DEFORM_CONV_OPSET = 19       # first opset with DeformConv
INPUT_NAME, OUTPUT_NAME = 'clips', 'logits'


class ExportError(RuntimeError):
    """A model (or an option) that cannot be exported; the message says why and what would work."""


def load_model(path, num_segments=None, class_names=None):
    """(eval TSN rebuilt from the checkpoint with all segments in one call, its config, class names).

    A text-head model (ILA --ila_head text) classifies over ``class_names`` if given (zero-shot), else over
    its trained list; its text features are computed here and become constants of the exported graph."""
    ckpt = load_checkpoint(path, require=('state_dict',))
    config = dict(model_config_from_checkpoint(ckpt, path=path), consensus_type='avg')
    if config.get('heads'):
        raise ExportError(f'{path} is a multi-head model (heads {heads_text(config["heads"])}); export writes one '
                          '`logits` output per model and does not split heads yet: evaluate it with '
                          'test_models.py / predict.py')
    if config.get('modality') in ('Audio', 'Layout'):
        # the exported graph takes normalised image clips, and its parity check decodes frames: an Audio
        # model's spectrograms and a Layout model's box tensors have no reader here yet
        raise ExportError(f'{path} is a {config["modality"]} model; export handles the image modalities (RGB, '
                          'Flow, RGBDiff) only: evaluate it with test_models.py / predict.py')
    if num_segments:
        config['num_segments'] = num_segments
    if class_names is not None:
        config = with_class_names(config, class_names)
    model = TSN.from_config(config)
    load_weights(model, ckpt['state_dict'], strict=True)
    if has_text_head(config):
        model.base_model.text_head.freeze_text_features()
        return model.eval(), config, config['backbone_kwargs']['class_names']
    return model.eval(), config, checkpoint_class_names(ckpt)


def metadata(model, config, class_names, input_size, checkpoint):
    """What a user of the exported file needs to feed it: plain strings (ONNX metadata is str -> str)."""
    norm = model.normalization()
    return {'checkpoint': str(checkpoint), 'config': json.dumps(config),
            'input': f'{INPUT_NAME} (B, {model.input_channels}, {input_size}, {input_size}) float32: '
                     f'{model.num_segments} segments x {model.frames_per_segment} frames x '
                     f'{model.input_channels // (model.num_segments * model.frames_per_segment)} channels',
            'normalization': json.dumps(norm), 'class_names': json.dumps(list(class_names or []))}


def uses_deform_conv(model):
    from archs.msn import DeformableConv2d
    return any(isinstance(m, DeformableConv2d) for m in model.modules())


def _deform_conv_symbolic(g, x, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                          weight_groups, offset_groups, use_mask):
    # torchvision's offset layout ((dy, dx) per kernel tap and offset group) is ONNX DeformConv's.
    from torch.onnx import symbolic_helper as sh
    args = [x, weight, offset, bias]
    if sh._parse_arg(use_mask, 'b'):
        args.append(mask)
    ints = [sh._parse_arg(v, 'i') for v in (stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, weight_groups,
                                               offset_groups)]
    return g.op('DeformConv', *args, strides_i=ints[0:2], pads_i=[ints[2], ints[3], ints[2], ints[3]],
                dilations_i=ints[4:6], group_i=ints[6], offset_group_i=ints[7])


def export_onnx(model, example, path, dynamic_batch=True, opset=None, meta=None):
    deform = uses_deform_conv(model)
    opset = opset or (DEFORM_CONV_OPSET if deform else ONNX_OPSET)
    if deform:
        if opset < DEFORM_CONV_OPSET:
            raise ExportError(f'MSN uses a deformable convolution: ONNX DeformConv needs opset >= '
                              f'{DEFORM_CONV_OPSET}, got --opset {opset} (or export --format pt2)')
        torch.onnx.register_custom_op_symbolic('torchvision::deform_conv2d', _deform_conv_symbolic, opset)
    axes = {INPUT_NAME: {0: 'batch'}, OUTPUT_NAME: {0: 'batch'}} if dynamic_batch else None
    with warnings.catch_warnings():
        # The legacy exporter's deprecation notice and the tracer's notes on shape checks are expected.
        warnings.simplefilter('ignore')
        try:
            torch.onnx.export(model, (example,), path, dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes)
        except Exception as exc:   # the exporter raises many types (UnsupportedOperatorError, RuntimeError)
            raise ExportError(f'ONNX export of {model.arch} (temporal module {model.temporal.module}) failed: '
                              f'{type(exc).__name__}: {str(exc).splitlines()[0]} (try --format pt2)') from exc
    if meta:
        import onnx
        proto = onnx.load(path)
        for key, value in meta.items():
            proto.metadata_props.add(key=key, value=value)
        onnx.save(proto, path)
    return opset


def export_pt2(model, example, path, dynamic_batch=True, meta=None):
    shapes = {'x': {0: torch.export.Dim('batch', min=1, max=4096)}} if dynamic_batch else None
    try:
        program = torch.export.export(model, (example,), dynamic_shapes=shapes)
    except Exception as exc:   # torch.export raises UserError, GuardOnDataDependentSymNode, ...
        raise ExportError(f'torch.export of {model.arch} (temporal module {model.temporal.module}) failed: '
                          f'{type(exc).__name__}: {str(exc).splitlines()[0]}') from exc
    torch.export.save(program, path, extra_files={'config.json': json.dumps(meta or {})})


def load_exported(path):
    """A numpy -> numpy function running an exported file: onnxruntime (.onnx) or torch.export.load."""
    if str(path).endswith('.onnx'):
        import onnxruntime as ort
        session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]
    import torchvision  # noqa: F401  (registers torchvision::deform_conv2d before the program loads)
    module = torch.export.load(str(path)).module()

    def run(x):
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()
    return run


def compare(model, run_exported, clips, batch=None):
    """Eager vs exported logits on clips (K, T*F*C, S, S): max |diff|, top-1 agreement, logit scale.

    batch: None runs all clips in one call (dynamic batch); N runs chunks of exactly N (the last chunk
    padded by repeating its last clip)."""
    clips = torch.as_tensor(clips, dtype=torch.float32)
    with torch.no_grad():
        eager = model(clips).numpy()
    if batch is None:
        exported = run_exported(clips.numpy())
    else:
        parts = []
        for start in range(0, len(clips), batch):
            chunk = clips[start:start + batch]
            pad = batch - len(chunk)
            if pad:
                chunk = torch.cat([chunk, chunk[-1:].expand(pad, *chunk.shape[1:])])
            parts.append(run_exported(chunk.numpy())[:batch - pad])
        exported = np.concatenate(parts)
    if exported.shape != eager.shape:
        raise ExportError(f'exported output {exported.shape} vs eager {eager.shape}')
    return {'clips': int(len(clips)), 'max_abs_diff': float(np.abs(exported - eager).max()),
            'top1_agreement': float((exported.argmax(1) == eager.argmax(1)).mean()),
            'max_abs_logit': float(np.abs(eager).max())}
