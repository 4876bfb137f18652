"""The built-in ``toy`` dataset: short synthetic clips whose classes differ only in time.

Eight classes in four pairs; the second class of a pair is *exactly* the first one played backwards
(the generator renders the forward clip from the clip's random stream and reverses the frames for the
second class). The object's shape tells the pair (disc: horizontal, square: vertical, diamond:
approaching/receding, ring: appearing/disappearing), so a per-frame model can learn the pair but never
the direction: TSN tops out near 50%. Every single frame of a ``moving_left`` clip is therefore distributed like a frame of a
``moving_right`` clip, so a model that averages per-frame scores (TSN) stays near 50% while a model with
temporal modelling (TSM) can reach high accuracy.

On-disk layout under ``<data_root>/toy`` (the dataset registry relies on it)::

    category.txt                          one class name per line, line i = label i (TOY_CLASSES)
    frames/<vid>/img_{:05d}.jpg           RGB frames, 1-based
    flow/<vid>/flow_{x,y}_{:05d}.jpg      n - 1 grayscale flow frames (TSN quantisation, 128 = 0),
                                          the exact flow of the rendered motion (``analytic_flow``)
    videos/<vid>.mp4                      the same frames as an H.264 (or MPEG-4 part 2) video, with the
                                          soundtrack as an AAC audio track
    audio/<vid>.wav                       the soundtrack, 16-bit mono at AUDIO_RATE (``soundtrack``)
    {train,val}_rgb.txt                   "<vid> <num_frames> <label>"
    {train,val}_flow.txt                  "<vid> <num_flow_frames> <label>"
    {train,val}_video.txt                 "<vid>.mp4 <label>"
    toy_meta.json                         generation parameters (written last)

Generation is deterministic for a given seed and size (per-clip generators seeded by
``(seed, split, index)``) and atomic: the set is written into a temporary folder that is renamed into
place when complete, under a file lock so that concurrent callers wait for one generator.

The soundtrack carries the class too: a tone whose pitch tells the pair (the shape) and which glides up
and grows louder over the forward clip, so the reversed class glides down and fades (it is the same
sound played backwards). It has its own random stream, so frames, flow and lists do not depend on it.

``quantize_flow`` (the TSN flow-to-JPEG mapping) is shared with ``scripts/extract_flow.py``.
"""
import json
import logging
import multiprocessing
import os
import shutil
import time
import uuid

import numpy as np

from ops.audio import write_wav

try:
    import fcntl
except ImportError:  # not POSIX: the atomic rename alone still protects against races
    fcntl = None

logger = logging.getLogger(__name__)

# Label 2k is the forward motion, label 2k + 1 the same clip reversed in time.
TOY_CLASSES = ('moving_right', 'moving_left', 'moving_down', 'moving_up',
               'approaching', 'receding', 'appearing', 'disappearing')
TOY_PAIRS = tuple((TOY_CLASSES[i], TOY_CLASSES[i + 1]) for i in range(0, len(TOY_CLASSES), 2))
MOTIONS = ('horizontal', 'vertical', 'scale', 'fade')  # motion of pair k
SHAPES = ('disc', 'square', 'diamond', 'ring')
# The shape tells the PAIR (so a per-frame model can learn it, up to 50%), never the direction.
PAIR_SHAPES = SHAPES
TOY_DEFAULTS = {'num_train': 1600, 'num_val': 320, 'num_frames': 16, 'size': 64, 'seed': 0}
TOY_FORMAT_VERSION = 4   # 4: soundtracks (audio/*.wav, audio track in the mp4)
META_FILE = 'toy_meta.json'
RGB_TMPL = 'img_{:05d}.jpg'
FLOW_TMPL = 'flow_{}_{:05d}.jpg'
SPLITS = ('train', 'val')

FLOW_BOUND = 20.0
JPEG_QUALITY = 90
VIDEO_FPS = 12
AUDIO_RATE = 16000          # the Audio modality resamples it to its 24 kHz
PAIR_PITCH = (400.0, 800.0, 1600.0, 3200.0)   # Hz at the start of the forward clip, per pair


# ----------------------------------------------------------------------------------------------------
# Flow quantisation (shared with scripts/extract_flow.py)

def quantize_flow(flow, bound=FLOW_BOUND):
    """TSN format: clip to [-bound, bound], map linearly to [0, 255], round half up (0 px -> 128).

    flow: float array (..., 2) -> (x uint8 (...), y uint8 (...)).
    """
    scaled = (np.clip(flow, -bound, bound) + bound) * (255.0 / (2.0 * bound))
    q = np.floor(scaled + 0.5).astype(np.uint8)
    return q[..., 0], q[..., 1]


def dequantize_flow(q, bound=FLOW_BOUND):
    """Inverse of ``quantize_flow`` for one component (uint8 -> pixels)."""
    return q.astype(np.float32) * (2.0 * bound / 255.0) - bound


# ----------------------------------------------------------------------------------------------------
# Rendering

def _background(rng, size):
    """Smooth random colour gradient plus one static texture. Returns float32 (size, size, 3)."""
    import cv2
    corners = rng.uniform(60.0, 195.0, (3, 3, 3)).astype(np.float32)
    bg = cv2.resize(corners, (size, size), interpolation=cv2.INTER_LINEAR)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    scale = size / 64.0
    kind = int(rng.integers(3))
    amp = rng.uniform(3.0, 8.0)
    tint = rng.uniform(0.4, 1.0, 3).astype(np.float32)
    if kind == 0:  # blotches
        cells = int(rng.integers(4, 12))
        noise = rng.normal(0.0, 1.0, (cells, cells, 3)).astype(np.float32)
        tex = cv2.resize(noise, (size, size), interpolation=cv2.INTER_LINEAR)
    elif kind == 1:  # stripes
        theta, phase = rng.uniform(0.0, np.pi), rng.uniform(0.0, 2 * np.pi)
        period = rng.uniform(6.0, 16.0) * scale
        wave = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + phase)
        tex = wave[..., None] * tint
    else:  # checkerboard
        cell = rng.uniform(5.0, 12.0) * scale
        checks = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2) * 2.0 - 1.0
        tex = checks[..., None] * tint
    bg = bg + amp * tex
    # Light clutter: at most one small static shape.
    for _ in range(int(rng.integers(0, 2))):
        cx, cy = rng.uniform(0, size, 2)
        r = rng.uniform(2.0, 5.0) * scale
        colour = rng.uniform(0.0, 255.0, 3).astype(np.float32)
        alpha = rng.uniform(0.4, 0.8)
        mask = np.clip(r - np.hypot(xx + 0.5 - cx, yy + 0.5 - cy) + 0.5, 0.0, 1.0)[..., None] * alpha
        bg = bg * (1 - mask) + colour * mask
    return np.clip(bg, 0.0, 255.0)


def _object_colour(rng, bg):
    """A colour far from the background mean (first of 8 candidates at distance >= 140)."""
    mean = bg.reshape(-1, 3).mean(0)
    candidates = rng.uniform(0.0, 255.0, (8, 3))
    dist = np.linalg.norm(candidates - mean, axis=1)
    good = np.flatnonzero(dist >= 140.0)
    return candidates[good[0] if len(good) else int(np.argmax(dist))].astype(np.float32)


def _trajectory(motion, rng, n, size):
    """Forward-time object path: centre x, y, radius and opacity, each float32 (n,)."""
    t = np.arange(n, dtype=np.float32) / max(n - 1, 1)  # 0 .. 1
    ones = np.ones(n, np.float32)
    if motion in ('horizontal', 'vertical'):
        r = rng.uniform(0.12, 0.18) * size
        travel = rng.uniform(0.35, 0.5) * size
        start = rng.uniform(r + 1, size - r - 1 - travel)
        along = start + travel * t
        across = rng.uniform(r + 1, size - r - 1) * ones
        x, y = (along, across) if motion == 'horizontal' else (across, along)
        return x, y, r * ones, ones
    if motion == 'scale':
        r0, r1 = rng.uniform(0.05, 0.08) * size, rng.uniform(0.24, 0.3) * size
        cx, cy = rng.uniform(r1 + 1, size - r1 - 1, 2)
        return cx * ones, cy * ones, (r0 * (r1 / r0) ** t).astype(np.float32), ones
    if motion == 'fade':
        r = rng.uniform(0.14, 0.2) * size
        cx, cy = rng.uniform(r + 1, size - r - 1, 2)
        # Random holds before and after the ramp, so the first/last sampled frames do not reveal the
        # direction through their opacity statistics.
        hold0, hold1 = (int(h) for h in rng.integers(0, n // 8 + 1, 2))
        ramp = max(n - 1 - hold0 - hold1, 1)
        alpha = np.clip((np.arange(n, dtype=np.float32) - hold0) / ramp, 0.0, 1.0)
        return cx * ones, cy * ones, r * ones, alpha
    raise ValueError(f'unknown motion {motion!r}; choose one of {MOTIONS}')


def _render(label, num_frames, size, rng):
    """Frames uint8 (n, size, size, 3) and the object's path (x, y, half-size, opacity; (n,) each)
    in the clip's own time order, plus the shape name."""
    bg, colour, shape, (x, y, half, alpha) = _scene(label, num_frames, size, rng)
    cover = _coverage(shape, x, y, half, size) * alpha[:, None, None]  # (n, H, W)
    cover = cover[..., None]
    clip = bg[None] * (1.0 - cover) + colour * cover
    clip += 2.0 * rng.standard_normal(clip.shape, dtype=np.float32)  # sensor noise, i.i.d. per frame
    clip = np.clip(np.rint(clip), 0, 255).astype(np.uint8)
    if label % 2 == 1:  # the reversed member of the pair
        clip = np.ascontiguousarray(clip[::-1])
        x, y, half, alpha = x[::-1], y[::-1], half[::-1], alpha[::-1]
    return clip, (x, y, half, alpha), shape


def _scene(label, num_frames, size, rng):
    """The random draws of a clip, in order: background, object colour, the shape and its forward path."""
    if not 0 <= label < len(TOY_CLASSES):
        raise ValueError(f'label {label} outside [0, {len(TOY_CLASSES)})')
    bg = _background(rng, size)
    colour = _object_colour(rng, bg)
    shape = PAIR_SHAPES[label // 2]
    x, y, r, alpha = _trajectory(MOTIONS[label // 2], rng, num_frames, size)
    half = r * np.float32(0.9) if shape == 'square' else r  # the square gets a similar area
    return bg, colour, shape, (x, y, half, alpha)


def _coverage(shape, x, y, half, size):
    """Anti-aliased object coverage in [0, 1], float32 (n, H, W)."""
    grid = np.arange(size, dtype=np.float32) + 0.5  # pixel centres
    dx = grid[None, None, :] - x[:, None, None]  # (n, 1, W)
    dy = grid[None, :, None] - y[:, None, None]  # (n, H, 1)
    if shape in ('disc', 'ring'):
        dist = np.sqrt(dx * dx + dy * dy)
    elif shape == 'square':
        dist = np.maximum(np.abs(dx), np.abs(dy))
    elif shape == 'diamond':
        dist = (np.abs(dx) + np.abs(dy)) / np.float32(1.25)
    else:
        raise ValueError(f'unknown shape {shape!r}; choose one of {SHAPES}')
    h = half[:, None, None]
    cover = np.clip(h - dist + 0.5, 0.0, 1.0)
    if shape == 'ring':   # a disc with a hole of half its radius
        cover = cover - np.clip(0.5 * h - dist + 0.5, 0.0, 1.0)
    return cover


def render_clip(label, num_frames, size, rng):
    """Render one clip of class ``label``: uint8 RGB array (num_frames, size, size, 3).

    The random draws do not depend on the direction, so labels 2k and 2k + 1 rendered from equal
    generators are exact time reversals of each other.
    """
    return _render(label, num_frames, size, rng)[0]


def analytic_flow(path, shape, size):
    """Exact forward flow of the object from frame t to t + 1: float32 (n - 1, H, W, 2), x then y.

    A pixel covered by the object at t moves with the object's translation plus the scaling about
    its centre, ``(p - c_t) * (half_{t+1} / half_t - 1)``; the static background and opacity changes
    have zero flow. Edge pixels get the flow weighted by their fractional coverage.
    """
    x, y, half, _ = path
    grid = np.arange(size, dtype=np.float32) + 0.5
    cover = _coverage(shape, x[:-1], y[:-1], half[:-1], size)  # (n-1, H, W)
    growth = (half[1:] / half[:-1] - 1.0)[:, None, None]
    fx = (x[1:] - x[:-1])[:, None, None] + (grid[None, None, :] - x[:-1, None, None]) * growth
    fy = (y[1:] - y[:-1])[:, None, None] + (grid[None, :, None] - y[:-1, None, None]) * growth
    return np.stack([fx * cover, fy * cover], axis=-1).astype(np.float32)


def soundtrack(label, num_frames, rng, fps=VIDEO_FPS, rate=AUDIO_RATE):
    """The clip's sound, float32 (num_frames * rate / fps,) in [-1, 1]: a tone at the pair's pitch (x 0.9
    to 1.1) gliding up by a random 1.4 to 1.8 times and swelling from 0.2 to 0.8 over the forward clip,
    plus a little white noise; the reversed class gets it backwards."""
    if not 0 <= label < len(TOY_CLASSES):
        raise ValueError(f'label {label} outside [0, {len(TOY_CLASSES)})')
    n = int(round(num_frames * rate / fps))
    t = np.arange(n, dtype=np.float64) / rate
    u = t / t[-1]   # 0 .. 1 over the clip
    f0 = PAIR_PITCH[label // 2] * rng.uniform(0.9, 1.1)
    glide = rng.uniform(1.4, 1.8)
    freq = f0 * glide ** u
    phase = 2 * np.pi * np.cumsum(freq) / rate + rng.uniform(0, 2 * np.pi)
    wave = (0.2 + 0.6 * u) * np.sin(phase) + rng.uniform(0.01, 0.05) * rng.standard_normal(n)
    wave = np.clip(wave, -1.0, 1.0).astype(np.float32)
    return np.ascontiguousarray(wave[::-1]) if label % 2 == 1 else wave


# ----------------------------------------------------------------------------------------------------
# Writing

def write_video(path, frames, fps=VIDEO_FPS, audio=None, audio_rate=AUDIO_RATE):
    """Write uint8 RGB frames (n, H, W, 3) as an mp4 (libx264, else mpeg4) with PyAV; reproducible.
    audio: optional float mono samples in [-1, 1] at audio_rate, muxed as an AAC track."""
    import av
    codec = 'libx264' if 'libx264' in av.codecs_available else 'mpeg4'
    height, width = frames.shape[1:3]
    with av.open(path, 'w') as container:
        sound = _add_audio_stream(container, audio_rate) if audio is not None else None
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, 'yuv420p'
        if codec == 'libx264':
            # Constant QP: x264's lookahead rate control (mbtree) is not bit-reproducible here.
            stream.options = {'threads': '1', 'preset': 'veryfast', 'qp': '17'}
        else:
            stream.options = {'threads': '1'}
            stream.bit_rate = 2_000_000
        for i, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(frame, format='rgb24')
            picture.pts = i
            container.mux(stream.encode(picture))
        container.mux(stream.encode())
        if sound is not None:
            _encode_audio(container, sound, audio, audio_rate)


def _add_audio_stream(container, rate):
    stream = container.add_stream('aac', rate=int(rate))
    stream.layout = 'mono'
    stream.options = {'threads': '1'}
    return stream


def _encode_audio(container, stream, samples, rate, chunk=1024):
    import av
    samples = np.asarray(samples, dtype=np.float32)
    for start in range(0, len(samples), chunk):
        frame = av.AudioFrame.from_ndarray(samples[None, start:start + chunk], format='fltp', layout='mono')
        frame.sample_rate = int(rate)
        frame.pts = start
        container.mux(stream.encode(frame))
    container.mux(stream.encode())


def _write_clip(job):
    """Render and write one clip (frames, flow, sound, video). Runs in a worker process."""
    import cv2

    root, vid, label, n, size, seed_key = job
    clip, path, shape = _render(label, n, size, np.random.default_rng(seed_key))
    # its own stream (key ..., 3): the frames are those of a toy set without sound
    sound = soundtrack(label, n, np.random.default_rng((*seed_key[:3], 3)))
    write_wav(os.path.join(root, 'audio', vid + '.wav'), sound, AUDIO_RATE)
    quality = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]

    def imwrite(path, image):
        if not cv2.imwrite(path, image, quality):
            raise OSError(f'cannot write {path}')
    frame_dir = os.path.join(root, 'frames', vid)
    flow_dir = os.path.join(root, 'flow', vid)
    os.makedirs(frame_dir)
    os.makedirs(flow_dir)
    for i, frame in enumerate(clip):
        imwrite(os.path.join(frame_dir, RGB_TMPL.format(i + 1)), frame[..., ::-1])  # cv2 wants BGR
    flow_x, flow_y = quantize_flow(analytic_flow(path, shape, size))
    for i, (fx, fy) in enumerate(zip(flow_x, flow_y)):
        imwrite(os.path.join(flow_dir, FLOW_TMPL.format('x', i + 1)), fx)
        imwrite(os.path.join(flow_dir, FLOW_TMPL.format('y', i + 1)), fy)
    write_video(os.path.join(root, 'videos', vid + '.mp4'), clip, audio=sound)
    return vid


def _worker_init():
    import cv2
    cv2.setNumThreads(1)  # one process per core already


def _plan(params):
    """Every clip to write: list of (split, vid, label, num_frames, seed_key).

    Seed keys (seed, split, index, stream) give every clip its own streams for its pixels (0) and its
    length (1), and each split one for its label order (2), independent of the worker that runs it.
    """
    seed, base_n = params['seed'], params['num_frames']
    jitter = base_n // 8  # clip lengths vary like real videos: 16 -> 14..18
    jobs = []
    vid_index = 0
    for split_code, split in enumerate(SPLITS):
        count = params['num_' + split]
        # Balanced labels in a seeded random order.
        labels = np.random.default_rng([seed, split_code, 0, 2]).permutation(
            np.arange(count) % len(TOY_CLASSES))
        for i in range(count):
            vid_index += 1
            n = base_n + int(np.random.default_rng([seed, split_code, i, 1]).integers(-jitter, jitter + 1))
            jobs.append((split, f'{vid_index:06d}', int(labels[i]), n, (seed, split_code, i, 0)))
    return jobs


def _validate(params):
    for key in ('num_train', 'num_val'):
        if params[key] < 1:
            raise ValueError(f'{key} must be >= 1, got {params[key]}')
    if params['num_frames'] < 4:
        raise ValueError(f"num_frames must be >= 4, got {params['num_frames']}")
    if params['size'] < 16 or params['size'] % 2:
        raise ValueError(f"size must be even and >= 16 (yuv420 video), got {params['size']}")


def _generate(out_dir, params, workers):
    jobs = _plan(params)
    for sub in ('frames', 'flow', 'videos', 'audio'):
        os.makedirs(os.path.join(out_dir, sub))
    args = [(out_dir, vid, label, n, params['size'], key)
            for _, vid, label, n, key in jobs]
    if workers > 1 and len(args) >= 4 * workers:
        # spawn: the caller may hold threads (torch, OpenCV) that make fork unsafe.
        ctx = multiprocessing.get_context('spawn')
        with ctx.Pool(workers, initializer=_worker_init) as pool:
            for _ in pool.imap_unordered(_write_clip, args, chunksize=16):
                pass
    else:
        for job in args:
            _write_clip(job)
    with open(os.path.join(out_dir, 'category.txt'), 'w') as f:
        f.write(''.join(name + '\n' for name in TOY_CLASSES))
    for split in SPLITS:
        rows = [(vid, label, n) for s, vid, label, n, _ in jobs if s == split]
        with open(os.path.join(out_dir, f'{split}_rgb.txt'), 'w') as f:
            f.writelines(f'{vid} {n} {label}\n' for vid, label, n in rows)
        with open(os.path.join(out_dir, f'{split}_flow.txt'), 'w') as f:
            f.writelines(f'{vid} {n - 1} {label}\n' for vid, label, n in rows)
        with open(os.path.join(out_dir, f'{split}_video.txt'), 'w') as f:
            f.writelines(f'{vid}.mp4 {label}\n' for vid, label, n in rows)
    meta = dict(params, format_version=TOY_FORMAT_VERSION, classes=list(TOY_CLASSES),
                flow='analytic', flow_bound=FLOW_BOUND, rgb_tmpl=RGB_TMPL, flow_tmpl=FLOW_TMPL,
                fps=VIDEO_FPS, audio_rate=AUDIO_RATE)
    with open(os.path.join(out_dir, META_FILE), 'w') as f:  # written last: marks completeness
        json.dump(meta, f, indent=1)


def _check_existing(root, requested):
    meta_path = os.path.join(root, META_FILE)
    if not os.path.isfile(meta_path):
        raise RuntimeError(f'{root} exists but has no {META_FILE}: it is not a complete toy dataset; '
                           'delete it (it will be regenerated) or pass another data_root')
    with open(meta_path) as f:
        meta = json.load(f)
    wrong = {k: (meta.get(k), v) for k, v in requested.items() if meta.get(k) != v}
    if meta.get('format_version') != TOY_FORMAT_VERSION:
        wrong['format_version'] = (meta.get('format_version'), TOY_FORMAT_VERSION)
    if wrong:
        detail = ', '.join(f'{k}={have} (requested {want})' for k, (have, want) in wrong.items())
        raise ValueError(f'{root} was generated with {detail}; delete it or use another data_root')


def _default_workers():
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def ensure_toy_dataset(data_root='data', *, num_train=None, num_val=None, num_frames=None, size=None,
                       seed=None, workers=None):
    """Return the path of ``<data_root>/toy``, generating it first if it does not exist.

    Size keywords left as None take ``TOY_DEFAULTS`` when generating and are not checked against an
    existing set; given ones must match the existing set's ``toy_meta.json`` (else ValueError).
    Concurrent callers are serialised by a lock file; an interrupted generation leaves only a hidden
    temporary folder, never a half-written ``toy``.
    """
    given = {'num_train': num_train, 'num_val': num_val, 'num_frames': num_frames, 'size': size,
             'seed': seed}
    requested = {k: v for k, v in given.items() if v is not None}
    params = dict(TOY_DEFAULTS, **requested)
    _validate(params)
    root = os.path.join(data_root, 'toy')
    if os.path.exists(root):
        _check_existing(root, requested)
        return root
    os.makedirs(data_root, exist_ok=True)
    with open(os.path.join(data_root, '.toy.lock'), 'w') as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent caller waits here
        try:
            if os.path.exists(root):  # another process finished while we waited
                _check_existing(root, requested)
                return root
            if fcntl is not None:  # we hold the lock: other temp folders are leftovers of crashes
                for name in os.listdir(data_root):
                    if name.startswith('.toy.tmp-'):
                        shutil.rmtree(os.path.join(data_root, name), ignore_errors=True)
            # Not tempfile.mkdtemp: its 0700 mode would stay on the renamed dataset folder.
            tmp = os.path.join(data_root, f'.toy.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}')
            os.makedirs(tmp)
            start = time.time()
            logger.info('generating the toy dataset in %s (%d train + %d val clips)', root,
                        params['num_train'], params['num_val'])
            try:
                _generate(tmp, params, workers or _default_workers())
                os.rename(tmp, root)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
                if os.path.isfile(os.path.join(root, META_FILE)):  # lost a lock-free race
                    _check_existing(root, requested)
                    return root
                raise
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            logger.info('toy dataset written to %s in %.1f s', root, time.time() - start)
        finally:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)
    return root


# ----------------------------------------------------------------------------------------------------
# Layout: box files derived from the clips' own trajectories (the frames, labels and lists stay as they are)

LAYOUT_DIR = 'boxes'
LAYOUT_META = 'layout_meta.json'
MIN_BOX_OPACITY = 0.05   # an object fainter than this has no box (the fade pair's first/last frames)
# Half the bounding-box side per unit of the path's half-size (the diamond's tips reach 1.25 x half).
_BOX_EXTENT = {'disc': 1.0, 'ring': 1.0, 'square': 1.0, 'diamond': 1.25}


def toy_boxes(label, num_frames, size, rng):
    """The box file content (ops/layout.py format) of the clip that ``_render`` draws from ``rng``: per frame
    the object's bounding box (clipped to the frame), category and standard category = its shape, score =
    its opacity; frames where it is fainter than MIN_BOX_OPACITY have none. Frame names are the RGB files'."""
    _, _, shape, (x, y, half, alpha) = _scene(label, num_frames, size, rng)
    if label % 2 == 1:                        # the reversed member of the pair, as _render
        x, y, half, alpha = x[::-1], y[::-1], half[::-1], alpha[::-1]
    extent = half * _BOX_EXTENT[shape]
    frames = []
    for i in range(num_frames):
        labels = []
        if alpha[i] >= MIN_BOX_OPACITY:
            box = [float(np.clip(v, 0, size)) for v in (x[i] - extent[i], y[i] - extent[i],
                                                        x[i] + extent[i], y[i] + extent[i])]
            labels.append({'box2d': dict(zip(('x1', 'y1', 'x2', 'y2'), (round(v, 2) for v in box))),
                           'category': shape, 'standard_category': shape, 'gt_annotation': 'object 0',
                           'score': round(float(alpha[i]), 3)})
        frames.append({'name': RGB_TMPL.format(i + 1), 'labels': labels})
    return {'width': size, 'height': size, 'frames': frames}


def ensure_toy_layout(data_root='data'):
    """Return ``<data_root>/toy/boxes`` (one ``<vid>.json`` per clip), deriving it from the toy set's own
    parameters (toy_meta.json) on first use: the same per-clip generators as the frames, so every box
    follows the rendered object. Atomic (temporary folder renamed into place) under a lock file."""
    root = os.path.join(data_root, 'toy')
    with open(os.path.join(root, META_FILE)) as f:
        meta = json.load(f)
    out = os.path.join(root, LAYOUT_DIR)
    if os.path.isfile(os.path.join(out, LAYOUT_META)):
        return out
    with open(os.path.join(root, '.boxes.lock'), 'w') as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if os.path.isfile(os.path.join(out, LAYOUT_META)):
                return out
            tmp = os.path.join(root, f'.boxes.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}')
            os.makedirs(tmp)
            try:
                params = {k: meta[k] for k in TOY_DEFAULTS}
                for _, vid, label, n, key in _plan(params):
                    with open(os.path.join(tmp, vid + '.json'), 'w') as f:
                        json.dump(toy_boxes(label, n, params['size'], np.random.default_rng(key)), f)
                with open(os.path.join(tmp, LAYOUT_META), 'w') as f:   # written last: marks completeness
                    json.dump(dict(params, min_box_opacity=MIN_BOX_OPACITY), f, indent=1)
                os.rename(tmp, out)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            logger.info('toy box files written to %s', out)
        finally:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)
    return out
