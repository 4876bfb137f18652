"""Frame readers: JPEG folders (RGB and Flow) and video files (decord, PyAV fallback).

Every reader returns uint8 numpy arrays (F, H, W, C) with C = 3 (RGB) or 2 (Flow x, y) and raises
FrameReadError (naming the file) for a missing, truncated or undecodable input, so the dataset can
count and replace the sample. Frame numbers are 1-based; a request past the last frame of a video
returns the last frame.

A video's frames are the frames ffmpeg decodes in presentation order after the container's edit list,
with the display matrix applied unless autorotate=False (README, "Video files"): VideoFile (either backend),
iter_video_frames (the extraction tools) and count_decoded_frames agree on them.
"""
import functools
import io
import logging
import math
import os
import string
import struct
from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np
from PIL import Image

VIDEO_BACKENDS = ('decord', 'pyav', 'torchcodec')
# Extensions of the video files that folder inputs are searched for (predict.py, extract_frames.py,
# build_file_list.py): containers that FFmpeg, under every backend, decodes.
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.webm', '.mkv', '.mov', '.m4v', '.mpg', '.mpeg', '.flv', '.wmv', '.3gp')
# Backends with random access by a frame index: used where the file's index is reliable and it has no
# rotation; PyAV (decode forward, frame-exact by construction) reads every other file.
INDEXED_BACKENDS = ('decord', 'torchcodec')

logger = logging.getLogger(__name__)


class FrameReadError(OSError):
    """A frame or video could not be read; the message names the file."""


class TruncatedVideoError(FrameReadError):
    """A video is truncated (`truncation`), its frames before the cut decode: the data tools' --allow_partial
    keeps them."""


def available_video_backends() -> tuple:
    """The VIDEO_BACKENDS this machine can run (torchcodec needs FFmpeg's shared libraries)."""
    def usable(name):
        if name != 'torchcodec':
            return True
        try:
            _torchcodec_decoder_class()
        except RuntimeError:
            return False
        return True
    return tuple(b for b in VIDEO_BACKENDS if usable(b))


def _torchcodec_decoder_class():
    """torchcodec's VideoDecoder, or RuntimeError with the install hint (it needs FFmpeg's shared libraries)."""
    try:
        from torchcodec.decoders import VideoDecoder
    except (ImportError, RuntimeError, OSError) as err:
        raise RuntimeError('--video_backend torchcodec: torchcodec is not usable here (pip install torchcodec; '
                           'it also needs FFmpeg 4-7 shared libraries, e.g. apt-get install libavcodec59 '
                           f'libavformat59 libavutil57 libswscale6 libavdevice59 libavfilter8): {err}') from err
    return VideoDecoder


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


def template_fields(tmpl: str) -> int:
    """Number of replacement fields in a file-name template ('flow_{}_{:05d}.jpg' -> 2)."""
    return sum(1 for _, field, _, _ in string.Formatter().parse(tmpl) if field is not None)


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
    if backend == 'torchcodec':
        import torchcodec
        return f'torchcodec {torchcodec.__version__}'
    import av
    return f'pyav {av.__version__} (libavcodec {".".join(map(str, av.library_versions["libavcodec"]))})'


@dataclass(frozen=True)
class VideoProbe:
    """What the container says about a video's first video stream, read without decoding it: its per-frame
    index where it has a complete one (MP4/MOV, most AVI), else one demux pass; plus the first frame for the
    display matrix.

    header_frames: the container's frame count (0 when it keeps none, e.g. WebM); packets: packets with
    data that the edit list presents; discarded: packets the edit list hides (decoded only as references);
    rotation, mirror: what `ffmpeg` (and players) do with the display matrix by default: rotate the stored
    picture by `rotation` degrees counter-clockwise (0, 90, 180, 270), then flip it horizontally when
    `mirror` (see display_orientation); truncated: the file ends before the data its container announces (the
    index points past its end, the demuxer's last packet is cut short, or an AVI's RIFF header declares more
    bytes than the file holds). A header count above the packets (AVI headers of variable-rate video, a wrong
    dwTotalFrames) is not truncation: see `truncation`.
    """
    header_frames: int
    packets: int
    discarded: int
    rotation: int
    truncated: bool = False
    mirror: bool = False

    @property
    def index_reliable(self) -> bool:
        """True when packet count, header and presented frames agree, so random access by index is safe."""
        return self.discarded == 0 and self.header_frames in (0, self.packets) and not self.truncated

    def counts(self) -> str:
        """What the container says, for messages: 'header 51 frames, 50 packets, 0 hidden by the edit list'."""
        return f'header {self.header_frames} frames, {self.packets} packets, {self.discarded} hidden by the edit list'


def truncation(probe: VideoProbe, decoded: Optional[int] = None) -> Optional[str]:
    """Why a video counts as truncated, or None: the one policy of the loader and every data tool (README,
    "Video files"). Truncation is what the packet index and the decode say: the file ends before the data its
    container announces (VideoProbe.truncated), or a full decode (`decoded` frames; None: not decoded) yields
    fewer frames than the packets. A header frame count above the packets is not truncation (an AVI header
    says 51, the file holds 50 packets and ffmpeg decodes 50: the video has 50 frames). A decoding error
    mid-stream is one too (FrameReadError of iter_video_frames / count_decoded_frames)."""
    if probe.truncated:
        return f'truncated: the file ends before the data its container announces ({probe.counts()})'
    if decoded is not None and decoded < probe.packets:
        return f'truncated: ffmpeg decodes {decoded} frames of its {probe.packets} packets'
    return None


def display_orientation(matrix) -> tuple:
    """(rotation, mirror) that reproduce ffmpeg's autorotate for a display matrix (9 int32, 16.16 fixed
    point, as stored in MP4/MOV): rotate by `rotation` degrees counter-clockwise, then flip horizontally
    when `mirror`. None (no matrix) -> (0, False).

    ffmpeg (fftools, autorotate) takes theta = the clockwise angle of av_display_rotation_get rounded and
    brought to [-0.9, 359.1), then inserts transpose=cclock_flip / clock (theta 90, by the sign of m[3]),
    hflip and/or vflip (theta 180, by the signs of m[0], m[4]), transpose=clock_flip / cclock (theta 270),
    vflip (theta 0, m[4] < 0); any other angle is not applied. Each of those is one rotation + mirror pair.
    """
    if matrix is None:
        return 0, False
    m = [float(v) / 65536 for v in matrix]
    scale0, scale1 = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if scale0 == 0 or scale1 == 0:   # a degenerate matrix: av_display_rotation_get is NaN, nothing is applied
        return 0, False
    theta = -round(-math.degrees(math.atan2(m[1] / scale1, m[0] / scale0)))
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return (270, True) if m[3] > 0 else (270, False)      # transpose | rotate clockwise
    if abs(theta - 180) < 1:
        hflip, vflip = m[0] < 0, m[4] < 0
        if hflip and vflip:
            return 180, False
        return (0, True) if hflip else ((180, True) if vflip else (0, False))   # vflip = 180 + hflip
    if abs(theta - 270) < 1:
        return (90, True) if m[3] < 0 else (90, False)        # anti-transpose | rotate counter-clockwise
    if abs(theta) > 1:
        logger.warning('display matrix rotates by %.1f degrees, not a multiple of 90: not applied', theta)
        return 0, False
    return (180, True) if m[4] < 0 else (0, False)            # vflip | nothing


def _orientation_of(frame) -> tuple:
    """(rotation, mirror) of a decoded PyAV frame's display matrix (display_orientation)."""
    for side_data in frame.side_data:
        if side_data.type.name == 'DISPLAYMATRIX':
            return display_orientation(np.frombuffer(bytes(side_data), dtype='<i4')[:9].tolist())
    return 0, False


def probe_video(path: str) -> VideoProbe:
    """Read the index (or demux, not decode) the first video stream of `path`; decode only its first frame
    (display matrix)."""
    import av
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            header = int(stream.frames or 0)
            entries = stream.index_entries
            counted = header > 0 and len(entries) == header   # a complete per-frame index: no demux pass
            if counted:
                packets = sum(1 for e in entries if e.size > 0 and not e.is_discard)
                discarded = sum(1 for e in entries if e.size > 0 and e.is_discard)
                truncated = max(e.pos + e.size for e in entries) > os.path.getsize(path)
            packets_seen = discarded_seen = 0
            orientation, cut_short = None, False
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                cut_short = packet.is_corrupt   # of the last packet: ffmpeg flags a read that hit the end
                if packet.is_discard:
                    discarded_seen += 1
                else:
                    packets_seen += 1
                if orientation is None:
                    for frame in packet.decode():
                        orientation = _orientation_of(frame)
                        break
                if orientation is not None and counted:
                    break
    except (av.FFmpegError, IndexError, UnicodeDecodeError) as err:
        raise FrameReadError(f'cannot open video {path}: {err}') from err
    rotation, mirror = orientation or (0, False)
    if counted:
        return VideoProbe(header, packets, discarded, rotation, truncated or _riff_cut(path), mirror)
    return VideoProbe(header, packets_seen, discarded_seen, rotation, cut_short or _riff_cut(path), mirror)


def _riff_cut(path: str) -> bool:
    """An AVI shorter than the size its RIFF header declares: cut off, also exactly at a chunk boundary (no
    packet is then cut short, and the index at the end is simply missing). A recorder that never finished
    the file leaves the size 0: not a cut."""
    with open(path, 'rb') as f:
        head = f.read(12)
    if len(head) < 12 or head[:4] != b'RIFF' or head[8:] != b'AVI ':
        return False
    return 8 + struct.unpack('<I', head[4:8])[0] > os.path.getsize(path)


def _orient(array: np.ndarray, rotation: int, mirror: bool = False) -> np.ndarray:
    """Apply a display orientation to (H, W[, C]): rotate `rotation` degrees counter-clockwise (np.rot90
    turns the same way), then flip horizontally when `mirror`."""
    if not rotation and not mirror:
        return array
    array = np.rot90(array, rotation // 90)
    return np.ascontiguousarray(array[:, ::-1] if mirror else array)


def iter_video_frames(path: str, short_side: int = 0, fmt: str = 'rgb24', *, autorotate: bool = True,
                      fps: float = 0):
    """Every frame ffmpeg decodes, in presentation order after the edit list: contiguous uint8 (H, W, 3) for
    'rgb24' or (H, W) for 'gray', rotated by the display matrix (autorotate), the shorter side of the shown
    picture scaled to short_side (0: kept), resampled to a constant `fps` by ffmpeg's fps filter (0: every
    decoded frame). A decoding error mid-stream raises FrameReadError after the frames before it."""
    import av
    done = 0
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]   # default (slice) threading: frame threading hides
            frames = container.decode(stream)           # decode errors, e.g. of a truncated file
            if fps:
                frames = _resample(stream, frames, fps)
            for frame in frames:
                rotation, mirror = _orientation_of(frame) if autorotate else (0, False)
                shown_w, shown_h = ((frame.height, frame.width) if rotation in (90, 270)
                                    else (frame.width, frame.height))
                width, height = scaled_size(shown_w, shown_h, short_side)
                if rotation in (90, 270):
                    width, height = height, width
                array = frame.to_ndarray(width=width, height=height, format=fmt,
                                         interpolation='AREA' if width < frame.width else 'BICUBIC')
                # PyAV returns a view of padded lines for some widths; OpenCV (DIS flow) needs contiguous data.
                yield np.ascontiguousarray(_orient(array, rotation, mirror))
                done += 1
    except av.FFmpegError as err:
        raise FrameReadError(f'decoding {path} failed after {done} frames: {err}') from err


def checked_video_frames(path: str, short_side: int = 0, fmt: str = 'rgb24', *, autorotate: bool = True,
                         fps: float = 0, allow_partial: bool = False, notes: Optional[list] = None):
    """iter_video_frames under the truncation policy of the data tools (`truncation`): the decoded frames, then
    FrameReadError naming the file and the reason when the video is truncated, fails to decode mid-stream or
    yields no frame at all. allow_partial keeps what decodes: the reason goes to `notes` instead. A header
    count above the packets passes silently (not truncation). With `fps` the decoded count is not compared."""
    probe = probe_video(path)
    done, broken = 0, None
    try:
        for done, frame in enumerate(iter_video_frames(path, short_side, fmt, autorotate=autorotate, fps=fps), 1):
            yield frame
    except FrameReadError as err:   # a decoding error mid-stream
        broken = str(err)
    if done == 0:
        raise FrameReadError(broken or f'{path}: no frames decoded')
    reason = '; '.join(r for r in (broken, truncation(probe, None if fps else done)) if r)
    if reason and not allow_partial:
        raise TruncatedVideoError(f'{path}: {reason}')
    if reason and notes is not None:
        notes.append(f'{path}: kept the {done} frames decoded: {reason}')


def _resample(stream, frames, fps):
    """Frames through ffmpeg's `fps` filter (constant rate, nearest frame kept or repeated)."""
    import av
    graph = av.filter.Graph()
    chain = [graph.add_buffer(template=stream), graph.add('fps', f'{fps}'), graph.add('buffersink')]
    for a, b in zip(chain, chain[1:]):
        a.link_to(b)
    graph.configure()

    def pull():
        while True:
            try:
                yield graph.vpull()
            except (av.BlockingIOError, av.EOFError):
                return
    for frame in frames:
        graph.vpush(frame)
        yield from pull()
    graph.vpush(None)
    yield from pull()


def scaled_size(width: int, height: int, short_side: int):
    """(w, h) with the shorter side scaled to short_side (0: unchanged); the aspect ratio is kept."""
    if not short_side:
        return width, height
    scale = short_side / min(width, height)
    return max(1, int(round(width * scale))), max(1, int(round(height * scale)))


def count_decoded_frames(path: str) -> int:
    """Decode the whole video (no colour conversion) and count its frames; FrameReadError on a decode error."""
    import av
    done = 0
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]   # slice threading: see iter_video_frames
            for _ in container.decode(stream):
                done += 1
    except av.FFmpegError as err:
        raise FrameReadError(f'decoding {path} failed after {done} frames: {err}') from err
    return done


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int       # frames ffmpeg decodes (presentation order, after the edit list)
    rotation: int         # display rotation, degrees counter-clockwise
    index_reliable: bool  # random access by index (decord) is safe for this file
    mirror: bool          # display matrix flips the picture (after the rotation), as VideoProbe
    probe: 'VideoProbe'   # what the container announces (header_frames, packets, discarded)


@functools.lru_cache(maxsize=1 << 16)
def _video_info(path: str, size: int, mtime_ns: int) -> VideoInfo:
    # Cached per (file, size, mtime) and process: a file is probed (and, when its index is unreliable,
    # decoded in full) once, not at every epoch, and its note is logged once. A truncated file raises
    # (not cached): the dataset counts and replaces it, as a decoding error.
    probe = probe_video(path)
    reason = truncation(probe)
    if reason:
        raise FrameReadError(f'video {path} is {reason}')
    if probe.index_reliable:
        return VideoInfo(probe.packets, probe.rotation, True, probe.mirror, probe)
    decoded = count_decoded_frames(path)
    reason = truncation(probe, decoded)
    if reason:
        raise FrameReadError(f'video {path} is {reason}')
    # Ordinary files (a stream-copy cut's edit list, an AVI header that overcounts): information, not a warning.
    logger.info('%s: the container index is not usable for random access (%s); using the %d frames ffmpeg '
                'decodes, read with PyAV', path, probe.counts(), decoded)
    return VideoInfo(decoded, probe.rotation, False, probe.mirror, probe)


def video_info(path: str) -> VideoInfo:
    """Frame count and rotation of a video as ffmpeg decodes it (cached; see _video_info)."""
    try:
        stat = os.stat(path)
    except OSError as err:
        raise FrameReadError(f'cannot open video {path}: {err}') from err
    return _video_info(path, stat.st_size, stat.st_mtime_ns)


def count_shorter(root: str, records, data_format: str, length: int) -> int:
    """Records (.path, .num_frames) with fewer than `length` frames: the listed count, or for video lists the
    decoded count (video_info; an unreadable video is not counted, its loader reports it)."""
    def frames(record):
        if data_format != 'video':
            return record.num_frames
        try:
            return video_info(os.path.join(root, record.path)).num_frames
        except FrameReadError:
            return length
    return sum(frames(r) < length for r in records)


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


class _TorchCodecVideo:
    # torchcodec (PyTorch's decoder, optional: it needs FFmpeg's shared libraries, see README) in exact seek
    # mode: it scans the file once and then decodes the requested indices directly.
    def __init__(self, path, num_threads):
        self._decoder = _torchcodec_decoder_class()(path, dimension_order='NHWC', num_ffmpeg_threads=num_threads,
                                     seek_mode='exact')
        self.num_frames = int(self._decoder.metadata.num_frames)

    def get(self, zero_based):
        unique, inverse = np.unique(np.asarray(zero_based), return_inverse=True)
        frames = self._decoder.get_frames_at(indices=unique.tolist()).data.numpy()
        return frames[inverse]

    def close(self):
        self._decoder = None


class _PyAVVideo:
    # PyAV has no frame-accurate seek; clips are short, so decode forward from the start up to the last
    # needed frame and keep only the needed ones. Frame i is the i-th frame ffmpeg decodes.
    def __init__(self, path, num_threads, rotation, mirror):
        import av
        self._container = av.open(path)
        self._stream = self._container.streams.video[0]
        self._stream.codec_context.thread_count = num_threads
        self._orientation = (rotation, mirror)

    def get(self, zero_based):
        wanted = set(zero_based)
        found, decoded = {}, 0
        self._container.seek(0)
        for decoded, frame in enumerate(self._container.decode(self._stream), 1):
            if decoded - 1 in wanted:
                found[decoded - 1] = _orient(frame.to_ndarray(format='rgb24'), *self._orientation)
                if len(found) == len(wanted):
                    break
        if len(found) < len(wanted):
            raise ValueError(f'frame {max(wanted) + 1} requested, the stream ended after {decoded} frames')
        return np.stack([found[i] for i in zero_based])

    def close(self):
        self._container.close()


_logged = set()


def _log_once(path: str, message: str, *args, level: int = logging.WARNING) -> None:
    if path not in _logged:
        _logged.add(path)
        logger.log(level, message, *args)


class VideoFile:
    """An open video: .num_frames and read(numbers) with 1-based, clamped numbers.

    Frame i is the i-th frame ffmpeg decodes (presentation order, after the edit list) with the display
    matrix applied (autorotate=False keeps the stored pixels), whichever backend reads it. decord is used
    where its index is reliable; for a file with an edit list, a header count that disagrees with its
    packets, or a rotation (decord2 3.4 returns 4-channel garbage for 90-degree matrices), or a width
    decord2 3.4 cannot decode (32, 48, 96, 144 px: "DECORDArrayCopyFromTo: The size must exactly
    match"), PyAV reads it instead, logged once per file.
    """

    def __init__(self, path: str, backend: str = 'decord', num_threads: int = 1, *, autorotate: bool = True):
        check_video_backend(backend)
        self.path = path
        self.backend = backend
        self._num_threads = num_threads
        self.info = info = video_info(path)
        self.num_frames = info.num_frames
        if self.num_frames < 1:
            raise FrameReadError(f'video {path} has no frames')
        self._orientation = (info.rotation, info.mirror) if autorotate else (0, False)
        if backend in INDEXED_BACKENDS and not info.index_reliable:
            self.backend = 'pyav'   # _video_info logged why
        elif backend in INDEXED_BACKENDS and (info.rotation or info.mirror):
            self.backend = 'pyav'
            _log_once(path, '%s: display matrix rotates by %d degrees%s; read with PyAV', path, info.rotation,
                      ' and mirrors' if info.mirror else '', level=logging.INFO)   # phone videos: ordinary
        try:
            self._impl = self._open(self.backend)
            if self.backend in INDEXED_BACKENDS and self._impl.num_frames != self.num_frames:
                _log_once(path, '%s: %s indexes %d frames, ffmpeg decodes %d; read with PyAV', path, self.backend,
                          self._impl.num_frames, self.num_frames)
                self._impl.close()
                self.backend = 'pyav'
                self._impl = self._open('pyav')
        except Exception as err:   # decoders raise their own error types (DECORDError, av.FFmpegError)
            raise FrameReadError(f'cannot open video {path}: {err}') from err

    def _open(self, backend):
        if backend == 'decord':
            return _DecordVideo(self.path, self._num_threads)
        if backend == 'torchcodec':
            return _TorchCodecVideo(self.path, self._num_threads)
        return _PyAVVideo(self.path, self._num_threads, *self._orientation)

    def read(self, numbers: Sequence[int]) -> np.ndarray:
        """1-based frame numbers -> uint8 (F, H, W, 3)."""
        zero_based = [min(max(int(k), 1), self.num_frames) - 1 for k in numbers]
        try:
            return self._impl.get(zero_based)
        except Exception as err:
            if self.backend not in INDEXED_BACKENDS:
                raise FrameReadError(f'cannot decode frames of {self.path}: {err}') from err
            first_err, first = err, self.backend
        try:
            self._impl.close()
            self._impl = self._open('pyav')
            frames = self._impl.get(zero_based)
        except Exception as err:
            raise FrameReadError(f'cannot decode frames of {self.path}: {first}: {first_err}; pyav: {err}') from err
        self.backend = 'pyav'
        _log_once(self.path, '%s could not decode %s (%s); read with PyAV', first, self.path,
                  str(first_err).splitlines()[-1][-120:])
        return frames

    def close(self) -> None:
        self._impl.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def video_num_frames(path: str, backend: str = 'decord') -> int:
    """Frames of a video as VideoFile reads it (the display matrix does not change the count)."""
    with VideoFile(path, backend) as video:
        return video.num_frames
