"""Optical flow for the TSN/TSM Flow modality: frame folders or videos -> flow_x/flow_y JPEGs + a flow list.

    python scripts/extract_flow.py --frames_root data/UCF101/jpg --list frames_list.txt \
        --out_dir data/UCF101/jpg --algorithm tvl1 --workers 8
    python scripts/extract_flow.py --video_dir videos --out_dir flow --algorithm farneback --short_side 256

Flow from frame k to k + 1 is written as flow_x_{k:05d}.jpg / flow_y_{k:05d}.jpg (n - 1 steps for
n frames): clipped to +-bound pixels (default 20) and mapped linearly to 0..255 (128 = no motion),
the TSN quantisation. --algorithm tvl1 (default) is OpenCV-contrib's Dual TV-L1
(cv2.optflow.DualTVL1OpticalFlow_create, the TSN choice); farneback and dis are much faster but give
flow with other statistics, so train and test on one kind. Finished videos carry a done-marker
(.flow_done, with the settings) and are skipped on a rerun; a rerun with another algorithm, bound, size,
quality or rotation refuses unless --overwrite. <out_dir>/extraction.json records the method, bound and
OpenCV version. --frames_root is searched recursively for folders holding --image_tmpl frames (the
<class>/<video> layout extract_frames.py writes). Videos are decoded as extract_frames.py decodes them
(display matrix applied unless --no_autorotate), under its truncation policy (a truncated video fails unless
--allow_partial; a header frame count above the packets is not truncation). The list has
`<vid> <num_flow_frames> <label>` lines when labels are known (a frames list or video list with labels),
else `<vid> <num_flow_frames>`.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402

from ops.dataset_config import list_lines  # noqa: E402
from ops.toy import FLOW_BOUND, quantize_flow  # noqa: E402
from ops.utils import HelpFormatter  # noqa: E402
from ops.video_io import checked_video_frames, scaled_size  # noqa: E402
from scripts.extract_frames import (ALLOW_PARTIAL_HELP, add_extraction_outputs, check_inputs,  # noqa: E402
                                    collect_inputs, extract_and_list, failure, fresh_folder,
                                    numbered_files, read_done, refuse, settings_conflicts,
                                    sorted_frame_files, template_regex, video_id, write_done)

ALGORITHMS = ('tvl1', 'farneback', 'dis')
FLOW_DONE = '.flow_done'


def make_flow_estimator(algorithm):
    """Return calc(prev_gray, next_gray) -> float32 (H, W, 2) flow in pixels (x then y), prev -> next."""
    import cv2
    if algorithm == 'tvl1':
        if not hasattr(cv2, 'optflow'):
            raise RuntimeError('TV-L1 needs cv2.optflow (pip install opencv-contrib-python-headless); '
                               'or use --algorithm farneback|dis')
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()  # createOptFlow_DualTVL1 in OpenCV 3.x
        return lambda prev, nxt: tvl1.calc(prev, nxt, None)
    if algorithm == 'farneback':
        # The parameters of the TSN / MMAction2 Python extractors.
        return lambda prev, nxt: cv2.calcOpticalFlowFarneback(prev, nxt, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    if algorithm == 'dis':
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return lambda prev, nxt: dis.calc(prev, nxt, None)
    raise ValueError(f'unknown flow algorithm {algorithm!r}; choose one of {ALGORITHMS}')


def _gray_frames(source, kind, image_tmpl, short_side, autorotate, allow_partial=False, notes=None):
    """Grayscale uint8 frames (H, W) of a frame folder or a video, in order (contiguous, as OpenCV needs); a
    truncated video raises after its frames unless allow_partial (extract_frames.py's policy)."""
    import cv2
    if kind == 'video':
        yield from checked_video_frames(source, short_side, fmt='gray', autorotate=autorotate,
                                        allow_partial=allow_partial, notes=notes)
        return
    files = sorted_frame_files(source, image_tmpl)
    if not files:
        raise FileNotFoundError(f'no frames matching {image_tmpl!r} in {source}')
    for path in files:
        img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise OSError(f'cannot read image {path}')
        if short_side:
            size = scaled_size(img.shape[1], img.shape[0], short_side)
            if size != (img.shape[1], img.shape[0]):
                img = cv2.resize(img, size, interpolation=cv2.INTER_AREA if min(size) < min(img.shape)
                                 else cv2.INTER_CUBIC)
        yield img


FLOW_SETTINGS = ('algorithm', 'bound', 'short_side', 'quality', 'flow_tmpl', 'autorotate')


def flow_one(job):
    """Compute and write the flow of one video. Returns (vid, num_flow_frames, error or None, warning or None).

    job: dict with src, kind ('frames' or 'video'), folder, vid, image_tmpl, allow_partial and the
    FLOW_SETTINGS."""
    import cv2
    source, kind, folder, vid, flow_tmpl = job['src'], job['kind'], job['folder'], job['vid'], job['flow_tmpl']
    settings = {key: job[key] for key in FLOW_SETTINGS}
    info = read_done(folder, FLOW_DONE)
    if info is not None and 'num_flow_frames' in info and not settings_conflicts([folder], settings, FLOW_DONE):
        return vid, int(info['num_flow_frames']), None, None
    notes = []
    try:
        if kind == 'video' and not os.path.isfile(source):
            raise FileNotFoundError(f'no such file: {source}')
        if kind == 'frames' and not os.path.isdir(source):
            raise FileNotFoundError(f'no such folder: {source}')
        calc = make_flow_estimator(job['algorithm'])
        if os.path.abspath(folder) == os.path.abspath(source):
            _remove_flow_files(folder, flow_tmpl)  # flow next to the RGB frames (the UCF101 layout)
        else:
            fresh_folder(folder)
        params = [cv2.IMWRITE_JPEG_QUALITY, job['quality']]
        prev, steps = None, 0
        for img in _gray_frames(source, kind, job['image_tmpl'], job['short_side'], job['autorotate'],
                                job['allow_partial'], notes):
            if prev is not None:
                steps += 1
                fx, fy = quantize_flow(calc(prev, img), job['bound'])
                for axis, plane in (('x', fx), ('y', fy)):
                    path = os.path.join(folder, flow_tmpl.format(axis, steps))
                    if not cv2.imwrite(path, plane, params):
                        raise OSError(f'cannot write {path}')
            prev = img
        if steps == 0:
            raise ValueError('fewer than 2 frames: no flow')
    except Exception as err:  # one bad video is reported, not fatal for the run
        return vid, 0, failure(source, err), None
    write_done(folder, dict(settings, num_flow_frames=steps), FLOW_DONE)
    return vid, steps, None, '; '.join(notes) or None


def _remove_flow_files(folder, flow_tmpl):
    os.makedirs(folder, exist_ok=True)
    for axis in ('x', 'y'):
        for path in sorted_frame_files(folder, flow_tmpl, (axis,)):
            os.remove(path)


def _frames_inputs(frames_root, list_path, image_tmpl):
    """[(vid, label or None)] from a frames list (`vid n [label]`), else every folder under frames_root
    (recursively, e.g. <class>/<video>) that holds frames matching image_tmpl."""
    if list_path:
        items = []
        for lineno, text, parts in list_lines(list_path):
            if len(parts) not in (2, 3):
                raise ValueError(f'{list_path}:{lineno}: expected "vid num_frames [label]", got: {text!r}')
            items.append((parts[0], int(parts[2]) if len(parts) == 3 else None))
        return items
    if not os.path.isdir(frames_root):
        raise FileNotFoundError(f'frames root not found: {frames_root} (--frames_root)')
    items = []
    for dirpath, dirnames, _ in os.walk(frames_root):
        dirnames.sort()
        if numbered_files(dirpath, image_tmpl):
            items.append((os.path.relpath(dirpath, frames_root).replace(os.sep, '/'), None))
    if not items:
        raise FileNotFoundError(f'no folder under {frames_root} holds frames matching {image_tmpl!r} '
                                '(--frames_root, --image_tmpl)')
    return sorted(items)


def get_args_parser():
    p = argparse.ArgumentParser(
        description='Compute TSN-format optical flow (flow_x/flow_y grayscale JPEGs) from frame folders '
                    'or videos; resumable, parallel; writes a flow list.',
        formatter_class=HelpFormatter)
    src = p.add_argument_group('input (frame folders or videos)')
    src.add_argument('--frames_root', help='root of RGB frame folders')
    src.add_argument('--list', help='frames list "vid num_frames [label]" under --frames_root '
                     '(default: every subfolder)')
    src.add_argument('--image_tmpl', default='img_{:05d}.jpg', help='RGB frame template')
    src.add_argument('--video_dir', help='folder of videos (recursive), or root of --video_list')
    src.add_argument('--video_list', help='videos "path [label]" relative to --video_dir')
    add_extraction_outputs(p, 'root of the flow folders (<out_dir>/<vid>/...); may equal --frames_root to put '
                           'flow next to the frames', 'flow_list.txt', 'flow')
    p.add_argument('--flow_tmpl', default='flow_{}_{:05d}.jpg', help='flow template ({} = x or y)')
    p.add_argument('--algorithm', default='tvl1', choices=ALGORITHMS, help='flow algorithm')
    p.add_argument('--bound', type=float, default=FLOW_BOUND, help='clip flow to +-bound pixels')
    p.add_argument('--short_side', type=int, default=0, help='resize the shorter side first (0: keep)')
    p.add_argument('--quality', type=int, default=95, help='JPEG quality (1-100)')
    p.add_argument('--no_autorotate', dest='autorotate', action='store_false',
                   help='videos: keep the stored pixels; by default the display matrix is applied')
    p.add_argument('--allow_partial', action='store_true', help=f'videos: {ALLOW_PARTIAL_HELP}')
    return p


def main(argv=None):
    parser = get_args_parser()
    args = parser.parse_args(argv)
    from_frames = bool(args.frames_root)
    from_videos = bool(args.video_dir or args.video_list)
    if from_frames == from_videos:
        parser.error('give either --frames_root [--list] or --video_dir/--video_list')
    if args.bound <= 0:
        parser.error(f'--bound must be > 0, got {args.bound}')
    if not 1 <= args.quality <= 100:
        parser.error(f'--quality must be in [1, 100], got {args.quality}')
    template_regex(args.flow_tmpl, ('x',))
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
    make_flow_estimator(args.algorithm)  # fails early when cv2.optflow is missing
    settings = dict(algorithm=args.algorithm, bound=args.bound, short_side=args.short_side,
                    quality=args.quality, flow_tmpl=args.flow_tmpl, autorotate=args.autorotate and not from_frames)
    if from_frames:
        items = _frames_inputs(args.frames_root, args.list, args.image_tmpl)
        jobs = [dict(src=os.path.join(args.frames_root, vid), kind='frames', vid=vid,
                     folder=os.path.join(args.out_dir, vid)) for vid, _ in items]
    else:
        videos = collect_inputs(args.video_dir, args.video_list)
        items = [(video_id(rel), label) for rel, label in videos]
        jobs = [dict(src=os.path.join(args.video_dir or '', rel), kind='video', vid=vid,
                     folder=os.path.join(args.out_dir, vid)) for (rel, _), (vid, _) in zip(videos, items)]
    errors = check_inputs(jobs)
    if errors:
        refuse(errors, 'inputs that cannot be extracted as given')
    jobs = [dict(job, image_tmpl=args.image_tmpl, allow_partial=args.allow_partial, **settings) for job in jobs]
    conflicts = settings_conflicts([job['folder'] for job in jobs], settings, FLOW_DONE)
    if conflicts and not args.overwrite:
        refuse(conflicts, 'finished flow was made with other settings; --overwrite redoes it')
    os.makedirs(args.out_dir, exist_ok=True)
    import cv2
    with open(os.path.join(args.out_dir, 'extraction.json'), 'w') as f:
        json.dump({'algorithm': args.algorithm, 'bound': args.bound, 'short_side': args.short_side,
                   'flow_tmpl': args.flow_tmpl, 'opencv': cv2.__version__, 'step': 1}, f, indent=1)
    return extract_and_list(args, flow_one, jobs, items, f'flow ({args.algorithm})',
                            lambda n: f'flow of {n} videos written under {args.out_dir}')


if __name__ == '__main__':
    sys.exit(main())
