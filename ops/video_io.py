"""Frame readers: JPEG folders (RGB and Flow) and video files (decord, PyAV fallback).

Every reader returns uint8 numpy arrays (F, H, W, C) with C = 3 (RGB) or 2 (Flow x, y) and raises
FrameReadError (naming the file) for a missing, truncated or undecodable input, so the dataset can
count and replace the sample. Frame numbers are 1-based; a request past the last frame of a video
returns the last frame.
"""
import io
import logging
import os
from typing import Optional, Sequence

import cv2
import numpy as np
from PIL import Image

from ops.dataset_config import template_fields

VIDEO_BACKENDS = ('decord', 'pyav')

logger = logging.getLogger(__name__)
_warned_fallback = False


class FrameReadError(OSError):
    """A frame or video could not be read; the message names the file."""


def check_video_backend(backend: str) -> None:
    if backend not in VIDEO_BACKENDS:
        raise ValueError(f'unknown video_backend {backend!r}; allowed: {", ".join(VIDEO_BACKENDS)}')


def _decode_pil(data: bytes, path: str, mode: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert(mode))
    except (OSError, ValueError, SyntaxError) as err:   # PIL: truncated, unidentified
        raise FrameReadError(f'cannot read image {path}: {err}') from err


def _complete_jpeg(data: bytes) -> bool:
    """SOI at the start and EOI at the end (encoders may pad with zero bytes): a cut-off download or a
    partly written file lacks the EOI, and libjpeg would fill the missing rows with grey silently."""
    return data[:2] == b'\xff\xd8' and data.rstrip(b'\x00')[-2:] == b'\xff\xd9'


def _decode(data: bytes, path: str, mode: str) -> np.ndarray:
    """JPEG through OpenCV's libjpeg-turbo (about 1.4x PIL's open + convert + asarray, pixel-identical:
    same IDCT and upsampling; tests/test_fast_decode.py checks it), everything else through PIL.

    OpenCV must not rotate by the EXIF orientation (PIL does not), and a colour JPEG read as 'L' goes to
    PIL, whose luma formula differs from libjpeg's own greyscale output by up to one level. cv2.imdecode
    runs on the calling thread, never in OpenCV's thread pool (safe in forked DataLoader workers).
    """
    if _complete_jpeg(data):
        buf = np.frombuffer(data, np.uint8)
        if mode == 'RGB':
            arr = cv2.imdecode(buf, cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
            if arr is not None:
                return arr
        elif mode == 'L':
            arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
            if arr is not None and arr.ndim == 2:
                return arr
    return _decode_pil(data, path, mode)


def decode_image_bytes(data: bytes, name: str = '<bytes>', mode: str = 'RGB') -> np.ndarray:
    """Encoded JPEG/PNG bytes -> uint8 (H, W, 3) for 'RGB' or (H, W) for 'L'. Same decoder as files."""
    return _decode(data, name, mode)


def load_image(path: str, mode: str = 'RGB') -> np.ndarray:
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as err:
        raise FrameReadError(f'cannot read image {path}: {err}') from err
    return _decode(data, path, mode)


def frame_path(folder: str, tmpl: str, number: int) -> str:
    return os.path.join(folder, tmpl.format(number))


def flow_paths(folder: str, video_id: str, tmpl: str, number: int):
    """Files of flow step `number`: (x_path, y_path) for two-file templates, (path, None) for RGB-coded.

    Templates: 'flow_{}_{:05d}.jpg' (x/y grayscale pair), '{:06d}-{}_{:05d}.jpg' (SSv1: folder and file
    carry int(video_id)), '{:06d}.jpg' (one RGB image, R = x, G = y).
    """
    fields = template_fields(tmpl)
    if fields == 1:
        return os.path.join(folder, tmpl.format(number)), None
    if fields == 2:
        return (os.path.join(folder, tmpl.format('x', number)), os.path.join(folder, tmpl.format('y', number)))
    if fields == 3:
        vid = int(os.path.basename(os.path.normpath(video_id)))
        base = os.path.join(os.path.dirname(os.path.normpath(folder)), '{:06d}'.format(vid))
        return (os.path.join(base, tmpl.format(vid, 'x', number)), os.path.join(base, tmpl.format(vid, 'y', number)))
    raise ValueError(f'flow template {tmpl!r} must have 1, 2 or 3 fields')


def read_rgb_folder(folder: str, tmpl: str, numbers: Sequence[int], *, start_index: int = 1) -> np.ndarray:
    """1-based frame numbers -> uint8 (F, H, W, 3); file k is tmpl.format(k - 1 + start_index)."""
    return np.stack([load_image(frame_path(folder, tmpl, k - 1 + start_index)) for k in numbers])


def read_flow_folder(folder: str, tmpl: str, numbers: Sequence[int], *, start_index: int = 1,
                     video_id: str = '') -> np.ndarray:
    """1-based flow steps -> uint8 (F, H, W, 2), channel 0 = x, channel 1 = y."""
    out = []
    for k in numbers:
        x_path, y_path = flow_paths(folder, video_id, tmpl, k - 1 + start_index)
        if y_path is None:
            out.append(load_image(x_path)[:, :, :2])
        else:
            out.append(np.stack([load_image(x_path, 'L'), load_image(y_path, 'L')], axis=-1))
    return np.stack(out)


def backend_info(backend: Optional[str] = 'decord') -> str:
    """Decoder name and version for the run log, e.g. 'decord 3.4.0'; None: the image decoder (PIL)."""
    if backend is None:
        import PIL
        return f'PIL {PIL.__version__} (image files)'
    check_video_backend(backend)
    if backend == 'decord':
        import decord
        return f'decord {decord.__version__}'
    import av
    return f'pyav {av.__version__} (libavcodec {".".join(map(str, av.library_versions["libavcodec"]))})'


class _DecordVideo:
    def __init__(self, path, num_threads):
        import decord
        self._reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads)
        self.num_frames = len(self._reader)

    def get(self, zero_based):
        # get_batch fails on repeated indices (clamped reads repeat): fetch unique ones, then expand.
        unique, inverse = np.unique(np.asarray(zero_based), return_inverse=True)
        frames = self._reader.get_batch(unique.tolist()).asnumpy()
        height, width = self._reader[0].shape[:2] if frames.ndim != 4 else frames.shape[1:3]
        if frames.shape != (len(unique), height, width, 3):
            raise ValueError(f'decord returned frames of shape {frames.shape}')
        return frames[inverse]

    def close(self):
        self._reader = None


class _PyAVVideo:
    # PyAV has no frame-accurate seek; clips are short, so decode forward from the start up to the last
    # needed frame and keep only the needed ones.
    def __init__(self, path, num_threads):
        import av
        self._container = av.open(path)
        self._stream = self._container.streams.video[0]
        self._stream.codec_context.thread_count = num_threads
        self.num_frames = self._stream.frames or self._count()

    def _count(self):
        count = sum(1 for _ in self._container.decode(self._stream))
        self._container.seek(0)
        return count

    def get(self, zero_based):
        wanted = set(zero_based)
        last = max(wanted)
        found, latest = {}, None
        self._container.seek(0)
        for i, frame in enumerate(self._container.decode(self._stream)):
            if i in wanted:
                found[i] = frame.to_ndarray(format='rgb24')
            latest = i, frame
            if i >= last:
                break
        if latest is None:
            raise ValueError('no frames decoded')
        for i in wanted - set(found):
            # The header over-reported the count: clamp to the last decoded frame.
            if latest[0] not in found:
                found[latest[0]] = latest[1].to_ndarray(format='rgb24')
            found[i] = found[latest[0]]
        return np.stack([found[i] for i in zero_based])

    def close(self):
        self._container.close()


class VideoFile:
    """An open video: .num_frames (from the decoder) and read(numbers) with 1-based, clamped numbers.

    decord2 3.4 fails on some frame widths (e.g. 32, 48, 96, 144 px: "DECORDArrayCopyFromTo: The size
    must exactly match"); when decord cannot decode a video, PyAV is tried before giving up, and the
    switch is logged once per process.
    """

    def __init__(self, path: str, backend: str = 'decord', num_threads: int = 1):
        check_video_backend(backend)
        self.path = path
        self.backend = backend
        self._num_threads = num_threads
        try:
            self._impl = (_DecordVideo if backend == 'decord' else _PyAVVideo)(path, num_threads)
        except Exception as err:   # decoders raise their own error types (DECORDError, av.FFmpegError)
            raise FrameReadError(f'cannot open video {path}: {err}') from err
        self.num_frames = int(self._impl.num_frames)
        if self.num_frames < 1:
            raise FrameReadError(f'video {path} has no frames')

    def read(self, numbers: Sequence[int]) -> np.ndarray:
        """1-based frame numbers -> uint8 (F, H, W, 3)."""
        zero_based = [min(max(int(k), 1), self.num_frames) - 1 for k in numbers]
        try:
            return self._impl.get(zero_based)
        except Exception as err:
            if self.backend != 'decord':
                raise FrameReadError(f'cannot decode frames of {self.path}: {err}') from err
            first_err = err
        try:
            self._impl.close()
            self._impl = _PyAVVideo(self.path, self._num_threads)
            frames = self._impl.get(zero_based)
        except Exception as err:
            raise FrameReadError(f'cannot decode frames of {self.path}: decord: {first_err}; pyav: {err}') from err
        self.backend = 'pyav'
        global _warned_fallback
        if not _warned_fallback:
            _warned_fallback = True
            logger.warning('decord could not decode %s (%s); using PyAV for such videos', self.path,
                           str(first_err).splitlines()[-1][-120:])
        return frames

    def close(self) -> None:
        self._impl.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def video_num_frames(path: str, backend: str = 'decord') -> int:
    with VideoFile(path, backend) as video:
        return video.num_frames
