"""Pack frame folders or videos into an HDF5 frame store (--data_format hdf5).

    python scripts/pack_hdf5.py --root data/toy/frames --list data/toy/train_rgb.txt \
        --output data/toy/hdf5/train_rgb.h5
    python scripts/pack_hdf5.py --root data/toy/flow --list data/toy/train_flow.txt --modality Flow \
        --output data/toy/hdf5/train_flow.h5
    python scripts/pack_hdf5.py --source video --root data/toy/videos --list data/toy/val_video.txt \
        --output data/toy/hdf5/val_rgb.h5 --quality 95
    python scripts/pack_hdf5.py --modality Audio --root data/toy/audio --list data/toy/train_rgb.txt \
        --output data/toy/hdf5/train_audio.h5

One dataset per video, named by its video id (the list path; a video's path without its extension);
element n holds the encoded JPEG bytes of frame n + 1, frames in NUMERIC order (ops/hdf5_store.py
defines the format; Flow x/y pairs are interleaved). JPEG files are copied byte for byte; video frames
are decoded with PyAV (the display matrix applied unless --no_autorotate, a truncated video refused, as
scripts/extract_frames.py) and encoded with OpenCV at --quality. Re-running skips videos already stored
completely, so an interrupted run resumes. Frame folders with gaps in their numbering are refused
(the element index would no longer be the frame number). --modality Audio stores each video's mono
soundtrack as float32 samples at --sample_rate (decoded with PyAV from the videos, or from the audio
files --tmpl '{}.wav' names under --root, and resampled in torch; ops/audio.py).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import logging  # noqa: E402

from ops.dataset_config import list_lines  # noqa: E402
from ops.hdf5_store import has_video, write_audio, write_flow_frames, write_video_frames  # noqa: E402
from ops.utils import HelpFormatter  # noqa: E402
from ops.video_io import checked_video_frames, template_fields  # noqa: E402
from scripts.extract_frames import find_videos, numbered_files, run_parallel, video_id  # noqa: E402

SOURCES = ('frames', 'video')
PACK_MODALITIES = ('RGB', 'Flow', 'Audio')


def _read_numbered(folder, tmpl, fixed, start_index):
    """Bytes of the files of one frame folder in numeric order; gaps or a wrong first number raise."""
    found = numbered_files(folder, tmpl, fixed)
    if not found:
        raise FileNotFoundError(f'no files matching {tmpl!r} in {folder}')
    numbers = sorted(found)
    expected = list(range(start_index, start_index + len(numbers)))
    if numbers != expected:
        gaps = sorted(set(range(start_index, numbers[-1] + 1)) - set(numbers))[:5]
        raise ValueError(f'{folder}: frame numbers are not {start_index}..{start_index + len(numbers) - 1} '
                         f'(missing e.g. {gaps})')
    blobs = []
    for k in numbers:
        with open(os.path.join(folder, found[k]), 'rb') as f:
            blobs.append(f.read())
    return blobs


def load_one(job):
    """Read (frames) or decode+encode (video) one video. Returns (vid, payload, error or None);
    payload is a list of JPEG bytes, (x list, y list) for two-file flow, or a float32 waveform for Audio."""
    src, vid, source, modality, tmpl, start_index, quality, short_side, autorotate, sample_rate = job
    try:
        if modality == 'Audio':
            from ops.audio import load_waveform
            return vid, load_waveform(src, sample_rate).numpy(), None
        if source == 'video':
            import cv2
            blobs = []
            for frame in checked_video_frames(src, short_side, autorotate=autorotate):   # truncated: refused
                ok, buf = cv2.imencode('.jpg', frame[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
                if not ok:
                    raise ValueError('JPEG encoding failed')
                blobs.append(buf.tobytes())
            if not blobs:
                raise ValueError('no frames decoded')
            return vid, blobs, None
        if not os.path.isdir(src):
            raise FileNotFoundError(f'no such folder: {src}')
        if modality == 'Flow' and template_fields(tmpl) == 2:
            xs = _read_numbered(src, tmpl, ('x',), start_index)
            ys = _read_numbered(src, tmpl, ('y',), start_index)
            if len(xs) != len(ys):
                raise ValueError(f'{src}: {len(xs)} x files vs {len(ys)} y files')
            return vid, (xs, ys), None
        return vid, _read_numbered(src, tmpl, (), start_index), None
    except Exception as err:  # one bad video is reported, not fatal for the run
        return vid, None, f'{src}: {type(err).__name__}: {err}'


def _list_items(path):
    """List lines `vid n label` / `path label` / `path` -> [(path, num_frames or None)]."""
    items = []
    for lineno, text, parts in list_lines(path):
        if len(parts) > 3:
            raise ValueError(f'{path}:{lineno}: expected "path [num_frames] [label]", got {text!r}')
        items.append((parts[0], int(parts[1]) if len(parts) == 3 else None))
    return items


def get_args_parser():
    p = argparse.ArgumentParser(
        description='Pack frame folders or videos into an HDF5 frame store (one dataset per video, '
                    'element n = JPEG bytes of frame n + 1); resumable.',
        formatter_class=HelpFormatter)
    p.add_argument('--root', required=True, help='frames root (frame folders) or videos root')
    p.add_argument('--list', help='list file (frames "vid n label" or video "path label"); default: every '
                   'folder / video under --root')
    p.add_argument('--output', required=True, help='HDF5 file to create or extend')
    p.add_argument('--source', choices=SOURCES, default='frames', help='what --root holds')
    p.add_argument('--modality', choices=PACK_MODALITIES, default='RGB',
                   help='Flow: pack flow_x/flow_y pairs (frames source only)')
    p.add_argument('--tmpl', help="file template (default img_{:05d}.jpg, Flow flow_{}_{:05d}.jpg, Audio "
                   "'{}.wav': the audio file of a listed path)")
    p.add_argument('--sample_rate', type=int, default=24000, help='Audio: Hz of the stored samples')
    p.add_argument('--start_index', type=int, default=1, help='number of the first frame file')
    p.add_argument('--quality', type=int, default=95, help='JPEG quality for video sources')
    p.add_argument('--short_side', type=int, default=0, help='video sources: resize the shorter side')
    p.add_argument('--no_autorotate', dest='autorotate', action='store_false',
                   help='video sources: keep the stored pixels; by default the display matrix (phone videos) '
                        'is applied')
    p.add_argument('--workers', type=int, default=1, help='reader/decoder processes (one writer)')
    return p


def main(argv=None):
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.source == 'video' and args.modality == 'Flow':
        parser.error('flow cannot be packed from videos: extract it first (scripts/extract_flow.py)')
    if not 1 <= args.quality <= 100:
        parser.error(f'--quality must be in [1, 100], got {args.quality}')
    default_tmpl = {'Flow': 'flow_{}_{:05d}.jpg', 'Audio': '{}.wav'}.get(args.modality, 'img_{:05d}.jpg')
    tmpl = args.tmpl or default_tmpl
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
    if not os.path.isdir(args.root):
        parser.error(f'--root {args.root} is not a folder')
    if args.list:
        items = _list_items(args.list)
    elif args.source == 'video':
        items = [(rel, None) for rel in find_videos(args.root)]
    elif args.modality == 'Audio':
        parser.error('--modality Audio from audio files needs --list (the files are named by its paths)')
    else:
        items = [(name, None) for name in sorted(os.listdir(args.root))
                 if os.path.isdir(os.path.join(args.root, name))]
    import h5py
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    failures, mismatches, written = [], [], 0
    with h5py.File(args.output, 'a') as h5:
        todo = []
        for path, n in items:
            vid = video_id(path) if args.source == 'video' else path
            if not has_video(h5, vid):
                # an audio file of a listed video: the template names it, as the Audio dataset reads it
                name = tmpl.format(path) if args.modality == 'Audio' and args.source == 'frames' else path
                todo.append(((os.path.join(args.root, name), vid, args.source, args.modality, tmpl,
                              args.start_index, args.quality, args.short_side, args.autorotate, args.sample_rate),
                             n))
        expected = {job[1]: n for job, n in todo}
        print(f'{len(items) - len(todo)} of {len(items)} videos already in {args.output}')
        for vid, payload, error in run_parallel(load_one, [job for job, _ in todo], args.workers, 'pack'):
            if error:
                failures.append(error)
                continue
            if args.modality == 'Audio':
                write_audio(h5, vid, payload, args.sample_rate)
                h5.flush()
                written += 1
                continue
            if isinstance(payload, tuple):
                write_flow_frames(h5, vid, *payload)
                count = len(payload[0])
            else:
                write_video_frames(h5, vid, payload)
                count = len(payload)
            h5.flush()  # a resumed run sees every video written before an interruption
            written += 1
            if expected[vid] is not None and expected[vid] != count:
                mismatches.append(f'{vid}: list says {expected[vid]} frames, packed {count}')
    print(f'packed {written} videos into {args.output}')
    for line in mismatches:
        print(f'COUNT MISMATCH {line}', file=sys.stderr)
    for error in failures:
        print(f'FAILED {error}', file=sys.stderr)
    if failures or mismatches:
        print(f'{len(failures)} videos failed, {len(mismatches)} count mismatches', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
