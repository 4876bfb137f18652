"""HDF5 frame store: one file per modality and split, one dataset per video (named by its video id).

Element n of a video's dataset holds the encoded JPEG bytes of frame n + 1 (variable-length uint8, so
nothing is stripped; fixed-length 'S' datasets written by the Multimodal-Distillation packer are read
too). Flow stored as x/y grayscale pairs is interleaved (element 2k = x, 2k + 1 = y of step k + 1) and
marked with the attribute layout='xy'; RGB and one-image flow (R = x, G = y) have layout='frames'.
An audio store holds one float32 mono waveform per video (layout='audio', attribute sample_rate).

The reader opens the file lazily and re-opens it when the process id changes, so a handle is never
shared across a DataLoader fork (h5py handles are not fork-safe).
"""
import os
from typing import List, Sequence

import numpy as np

from ops.video_io import FrameReadError, decode_image_bytes

def _vlen_bytes():
    import h5py
    return h5py.vlen_dtype(np.dtype('uint8'))


def _write(h5file, video_id: str, elements: Sequence[bytes], layout: str) -> None:
    if video_id in h5file:
        del h5file[video_id]
    data = np.empty(len(elements), dtype=object)
    for i, blob in enumerate(elements):
        data[i] = np.frombuffer(blob, dtype=np.uint8)
    # data= with an object array: slice assignment would treat equal-length blobs as a 2-D array.
    ds = h5file.create_dataset(video_id, data=data, dtype=_vlen_bytes())
    ds.attrs['layout'] = layout
    # Written last: a dataset without it was interrupted and is rewritten by a resumed packer.
    ds.attrs['num_frames'] = len(elements) // (2 if layout == 'xy' else 1)


def write_video_frames(h5file, video_id: str, frames: Sequence[bytes]) -> None:
    """Store one video: frames[n] = encoded JPEG of frame n + 1 (numeric order). Replaces an existing one.

    h5file: an h5py.File opened for writing. Used for RGB and for one-image (R = x, G = y) flow.
    """
    if not frames:
        raise ValueError(f'video {video_id!r}: no frames to write')
    _write(h5file, video_id, list(frames), 'frames')


def write_flow_frames(h5file, video_id: str, x_frames: Sequence[bytes], y_frames: Sequence[bytes]) -> None:
    """Store the flow of one video from its grayscale x and y JPEGs (same length, numeric order)."""
    if len(x_frames) != len(y_frames) or not x_frames:
        raise ValueError(f'video {video_id!r}: {len(x_frames)} x frames vs {len(y_frames)} y frames')
    _write(h5file, video_id, [b for pair in zip(x_frames, y_frames) for b in pair], 'xy')


def write_audio(h5file, video_id: str, waveform: np.ndarray, sample_rate: int) -> None:
    """Store the mono soundtrack of one video: float32 samples (N,) at sample_rate (attribute)."""
    if video_id in h5file:
        del h5file[video_id]
    ds = h5file.create_dataset(video_id, data=np.asarray(waveform, dtype=np.float32))
    ds.attrs['layout'] = 'audio'
    ds.attrs['sample_rate'] = int(sample_rate)
    ds.attrs['num_samples'] = len(waveform)   # written last, as num_frames of the frame layouts


def has_video(h5file, video_id: str) -> bool:
    """True when video_id was written completely (used by the packer to resume)."""
    return video_id in h5file and any(k in h5file[video_id].attrs for k in ('num_frames', 'num_samples'))


class HDF5FrameStore:
    """Lazy, per-process reader of one HDF5 frame store."""

    def __init__(self, path: str):
        self.path = path
        self._file = None
        self._pid = None
        self._layouts = {}   # video id -> layout; h5py attribute reads cost about 0.5 ms

    def _h5(self):
        if self._file is None or self._pid != os.getpid():
            import h5py
            # A handle inherited through fork is dropped, not closed: it belongs to the parent.
            self._file = None
            self._layouts = {}
            try:
                self._file = h5py.File(self.path, 'r')
            except OSError as err:
                raise FrameReadError(f'cannot open HDF5 store {self.path}: {err}') from err
            self._pid = os.getpid()
        return self._file

    def __getstate__(self):
        # Pickled into spawned workers without the open handle.
        return {'path': self.path, '_file': None, '_pid': None, '_layouts': {}}

    def _dataset(self, video_id):
        try:
            return self._h5()[video_id]
        except KeyError as err:
            raise FrameReadError(f'video {video_id!r} not in HDF5 store {self.path}') from err

    def _layout(self, ds) -> str:
        layout = self._layouts.get(ds.name)
        if layout is None:
            layout = ds.attrs.get('layout', 'frames')
            layout = layout.decode() if isinstance(layout, bytes) else str(layout)
            self._layouts[ds.name] = layout
        return layout

    def _length(self, ds) -> int:
        return len(ds) // (2 if self._layout(ds) == 'xy' else 1)

    def num_frames(self, video_id: str) -> int:
        return self._length(self._dataset(video_id))

    def _read(self, ds, name, elements):
        # h5py fancy indexing needs sorted unique indices.
        unique, inverse = np.unique(np.asarray(elements, dtype=np.int64), return_inverse=True)
        if len(unique) and (unique[0] < 0 or unique[-1] >= len(ds)):
            raise FrameReadError(f'{name}: elements {unique.tolist()} outside [0, {len(ds)})')
        try:
            raw = ds[unique.tolist()] if len(unique) > 1 else [ds[int(unique[0])]]
        except OSError as err:
            raise FrameReadError(f'cannot read {name}: {err}') from err
        blobs = [bytes(r) if isinstance(r, (bytes, np.bytes_)) else np.asarray(r, np.uint8).tobytes() for r in raw]
        return [blobs[i] for i in inverse]

    def read_elements(self, video_id: str, elements: Sequence[int]) -> List[bytes]:
        """Raw encoded bytes of the given 0-based elements (only those are read from disk)."""
        return self._read(self._dataset(video_id), f'{self.path}:{video_id}', elements)

    def _steps(self, ds, numbers):
        n = self._length(ds)
        return [min(max(int(k), 1), n) - 1 for k in numbers]

    def read_rgb(self, video_id: str, numbers: Sequence[int]) -> np.ndarray:
        """1-based frame numbers (clamped) -> uint8 (F, H, W, 3)."""
        ds, name = self._dataset(video_id), f'{self.path}:{video_id}'
        blobs = self._read(ds, name, self._steps(ds, numbers))
        return np.stack([decode_image_bytes(b, name) for b in blobs])

    def read_flow(self, video_id: str, numbers: Sequence[int]) -> np.ndarray:
        """1-based flow steps (clamped) -> uint8 (F, H, W, 2), channel 0 = x, 1 = y."""
        ds, name = self._dataset(video_id), f'{self.path}:{video_id}'
        steps = self._steps(ds, numbers)
        if self._layout(ds) == 'xy':
            blobs = self._read(ds, name, [e for k in steps for e in (2 * k, 2 * k + 1)])
            planes = [decode_image_bytes(b, name, 'L') for b in blobs]
            return np.stack([np.stack(planes[i:i + 2], axis=-1) for i in range(0, len(planes), 2)])
        return np.stack([decode_image_bytes(b, name)[:, :, :2] for b in self._read(ds, name, steps)])

    def read_audio(self, video_id: str, default_rate: int):
        """(mono float32 waveform (N,), sample rate) of a video's audio dataset. A dataset without the
        sample_rate attribute (Multimodal-Distillation's packed EPIC audio) is taken at default_rate."""
        ds, name = self._dataset(video_id), f'{self.path}:{video_id}'
        if ds.dtype.kind != 'f' or ds.ndim != 1:
            raise FrameReadError(f'{name} holds {ds.dtype} {ds.shape}, not a mono float waveform (pack it with '
                                 'scripts/pack_hdf5.py --modality Audio)')
        try:
            samples = ds[()]
        except OSError as err:
            raise FrameReadError(f'cannot read {name}: {err}') from err
        return np.asarray(samples, dtype=np.float32), int(ds.attrs.get('sample_rate', default_rate))

    def has(self, video_id: str) -> bool:
        return video_id in self._h5()

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
