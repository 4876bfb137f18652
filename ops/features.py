"""Pre-classifier features from evaluation (test_models.py / predict.py --save_features).

The features of a view are the input of the classification layer (new_fc, or the backbone's fc when
there is no dropout), averaged over segments the way the logits are, so that for every video

    features @ fc_weight.T + fc_bias == video logits (the view average, before any softmax)

up to float rounding (the head is linear and evaluation averages logits). Shapes, with N videos, V views
(crops x clips), T' segments seen by the head (T, or T/2 after temporal pooling; 1 for ILA, whose
backbone pools time itself) and D feature channels:
    features          (N, D)           mean over views and segments
    view_features     (N, V, D)        --per_view
    segment_features  (N, V, T', D)    --per_segment
plus video_ids (N,), labels (N,) (-1 where unknown: predict.py), protocol, checkpoint, fc_weight (C, D),
fc_bias (C,) and class_names when known. Files are .npz (numpy) or .h5 (HDF5, same names), written
atomically. test_models.py in one process writes .h5 files incrementally (H5FeatureSink: batch by batch,
only the logits kept in memory); .npz files, predict.py and multi-process evaluation gather the features
with the logits and write the file at the end.
"""
import json
import os

import numpy as np
import torch

FEATURE_SUFFIXES = ('.npz', '.h5')


class FeatureOutputs:
    """A model call that returns [logits | features] columns, so evaluation code that averages and
    gathers logits (per frame, per view, across processes) carries the features along unchanged.

    features per call: (b, D) averaged over the head's segments, or (b, T' * D) with per_segment.
    """

    def __init__(self, model, forward, per_segment=False):
        self.head = model._head()
        self.forward = forward
        self.per_segment = per_segment
        self._captured = None
        self.head.register_forward_pre_hook(self._capture)

    def _capture(self, module, inputs):
        self._captured = inputs[0]

    def __call__(self, x):
        logits = self.forward(x)                                   # (b, C)
        b = logits.shape[0]
        feats = self._captured.float()                             # (b * T', D) or (b, D)
        feats = feats.reshape(b, -1, feats.shape[-1])              # (b, T', D)
        feats = feats.flatten(1) if self.per_segment else feats.mean(1)
        return torch.cat([logits.float(), feats], dim=1)


def attach(mt, per_segment=False):
    """Make a test_models.ModelUnderTest return features with its logits (mt.forward: the model, or its
    torch.compile wrapper). Per-segment features need whole clips: ModelUnderTest builds even a per-frame
    model (TSN) for the whole clip when they are asked for."""
    if per_segment and not mt.temporal:
        raise ValueError('per-segment features need a model evaluated on whole clips (ModelUnderTest with '
                         '--per_segment)')
    mt.forward = FeatureOutputs(mt.model, mt.forward, per_segment)
    return mt


def split(view_outputs, mt, per_segment):
    """(N, V, C + K) outputs of an attached model -> (logits (N, V, C), dict of feature arrays)."""
    out = np.asarray(view_outputs, dtype=np.float32)
    c = mt.model.num_class
    return out[..., :c], feature_parts(out[..., c:], mt.forward.head.in_features, per_segment)


def feature_parts(feats, dim, per_segment):
    """(N, V, K) feature columns -> {'features' (N, D), 'view_features' (N, V, D)[, 'segment_features'
    (N, V, T', D)]}; K = D, or T' * D with per_segment."""
    parts = {}
    if per_segment:
        parts['segment_features'] = feats.reshape(*feats.shape[:2], -1, dim)   # (N, V, T', D)
        feats = parts['segment_features'].mean(2)
    parts['view_features'] = feats                                               # (N, V, D)
    parts['features'] = feats.mean(1)                                            # (N, D)
    return parts


class H5FeatureSink:
    """test_models.py --save_features PATH.h5 in one process: features are written into the HDF5 file
    batch by batch (rows at their final positions), so only the logits stay in memory; sets whose
    per-view / per-segment features exceed the memory are fine. The file appears (atomically) at finish().

    rows: dataset index -> row of the file (the ensemble's common video order).
    """

    def __init__(self, path, rows, head, per_view=False, per_segment=False):
        import h5py
        if not path.endswith('.h5'):
            raise ValueError(f'{path}: incremental feature files are .h5')
        self.path, self.rows, self.head = path, np.asarray(rows, dtype=np.int64), head
        self.per_view, self.per_segment = per_view, per_segment
        os.makedirs(os.path.dirname(os.path.abspath(path)) or '.', exist_ok=True)
        self.tmp = path + '.tmp.h5'
        self.file = h5py.File(self.tmp, 'w')
        self.written = 0

    def write(self, index, feats):
        """index: (B,) dataset indices; feats: (B, V, K) feature columns of those videos."""
        parts = feature_parts(np.asarray(feats, dtype=np.float32), self.head.in_features, self.per_segment)
        if not self.per_view:
            del parts['view_features']
        rows = self.rows[np.asarray(index, dtype=np.int64)]
        order = np.argsort(rows)                  # h5py writes rows given in increasing order
        n = len(self.rows)
        for name, value in parts.items():
            if name not in self.file:
                self.file.create_dataset(name, shape=(n, *value.shape[1:]), dtype='float32',
                                         chunks=(1, *value.shape[1:]))
            self.file[name][rows[order]] = value[order]
        self.written += len(rows)

    def finish(self, *, video_ids, labels, protocol, checkpoint, class_names=None):
        import h5py
        if self.written != len(self.rows):
            raise RuntimeError(f'{self.path}: features of {self.written} videos written for {len(self.rows)}')
        f = self.file
        f.create_dataset('labels', data=np.asarray(labels, dtype=np.int64))
        f.create_dataset('fc_weight', data=self.head.weight.detach().float().cpu().numpy())
        f.create_dataset('fc_bias', data=self.head.bias.detach().float().cpu().numpy())
        strings = h5py.string_dtype()
        f.create_dataset('video_ids', data=np.array([str(v) for v in video_ids], dtype=object), dtype=strings)
        f.create_dataset('class_names', data=np.array(list(class_names or []), dtype=object), dtype=strings)
        f.attrs['protocol'] = str(protocol)
        f.attrs['checkpoint'] = str(checkpoint)
        f.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self):
        if self.file:
            self.file.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


def write(path, *, video_ids, labels, parts, protocol, checkpoint, head, class_names=None,
          per_view=False):
    """Atomic .npz / .h5 file; view_features only with per_view, segment_features when computed."""
    if not path.endswith(FEATURE_SUFFIXES):
        raise ValueError(f'{path}: feature files are {" or ".join(FEATURE_SUFFIXES)}')
    arrays = {'features': parts['features'], 'labels': np.asarray(labels, dtype=np.int64),
              'fc_weight': head.weight.detach().float().cpu().numpy(),
              'fc_bias': head.bias.detach().float().cpu().numpy()}
    if per_view:
        arrays['view_features'] = parts['view_features']
    if 'segment_features' in parts:
        arrays['segment_features'] = parts['segment_features']
    texts = {'video_ids': [str(v) for v in video_ids], 'class_names': list(class_names or []),
             'protocol': str(protocol), 'checkpoint': str(checkpoint)}
    os.makedirs(os.path.dirname(os.path.abspath(path)) or '.', exist_ok=True)
    tmp = path + '.tmp' + os.path.splitext(path)[1]
    if path.endswith('.npz'):
        np.savez(tmp, **arrays, video_ids=np.array(texts['video_ids'], dtype=str),
                 class_names=np.array(texts['class_names'], dtype=str), protocol=np.array(texts['protocol']),
                 checkpoint=np.array(texts['checkpoint']))
    else:
        import h5py
        with h5py.File(tmp, 'w') as f:
            for name, value in arrays.items():
                f.create_dataset(name, data=value)
            strings = h5py.string_dtype()
            for name in ('video_ids', 'class_names'):
                f.create_dataset(name, data=np.array(texts[name], dtype=object), dtype=strings)
            f.attrs['protocol'] = texts['protocol']
            f.attrs['checkpoint'] = texts['checkpoint']
    os.replace(tmp, path)
    return path


def load(path):
    """A feature file as a dict of numpy arrays and strings (video_ids / class_names as lists)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'feature file not found: {path}')
    try:
        if path.endswith('.h5'):
            import h5py
            with h5py.File(path, 'r') as f:
                out = {k: f[k][()] for k in f.keys()}
                out['protocol'], out['checkpoint'] = str(f.attrs['protocol']), str(f.attrs['checkpoint'])
            for k in ('video_ids', 'class_names'):
                out[k] = [v.decode() if isinstance(v, bytes) else str(v) for v in out[k]]
        else:
            with np.load(path, allow_pickle=False) as z:
                out = {k: z[k] for k in z.files}
            for k in ('video_ids', 'class_names'):
                out[k] = [str(v) for v in out[k]]
            out['protocol'], out['checkpoint'] = str(out['protocol']), str(out['checkpoint'])
    except (KeyError, OSError, ValueError) as exc:
        raise ValueError(f'{path}: not a feature file written by --save_features ({exc})') from None
    if out['features'].ndim != 2 or len(out['features']) != len(out['video_ids']):
        raise ValueError(f'{path}: features must be (videos, channels) with one id per video')
    return out


def summary(path):
    """One line for logs: what a feature file holds."""
    f = load(path)
    shapes = {k: tuple(f[k].shape) for k in ('features', 'view_features', 'segment_features') if k in f}
    return f'{path}: {len(f["video_ids"])} videos, ' + json.dumps({k: list(v) for k, v in shapes.items()})
