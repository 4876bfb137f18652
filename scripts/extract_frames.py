"""Decode videos into JPEG frame folders and write a frames list (the TSN/TSM on-disk format).

    python scripts/extract_frames.py --video_dir data/ucf101/videos --out_dir data/UCF101/jpg \
        --short_side 256 --workers 8 --list_out data/UCF101/frames_counts.txt
    python scripts/extract_frames.py --video_list train_video.txt --video_dir videos --out_dir frames

Each video <rel>/<name>.<ext> becomes the folder <out_dir>/<rel>/<name>/ with img_00001.jpg, ...
(1-based, --tmpl): exactly the frames ffmpeg decodes, in presentation order after the edit list, with the
display matrix applied (--no_autorotate keeps the stored pixels), i.e. the frames ops.video_io.VideoFile
reads from the same file. A finished folder holds a done-marker (.done, JSON with the frame count and the
settings), so an interrupted run (Ctrl-C included) resumes where it stopped; a folder without the marker
is redone, and a rerun with other settings refuses unless --overwrite. Before any work the run refuses
videos whose id holds whitespace and two videos that map to one folder (same stem, two extensions). A
truncated video (ops.video_io.truncation: the file ends before the data its container announces, or the
decode fails or yields fewer frames than the packets; a header count above the packets is not truncation)
is reported as failed (left out of the list) unless --allow_partial. The list has
`<vid> <num_frames> <label>` lines when the input is a video list with labels (`path label`), else
`<vid> <num_frames>` counts (which scripts/build_file_list.py --counts accepts).

This module also holds the helpers shared by the other data tools (extract_flow, pack_hdf5,
check_data, build_file_list): template matching, numeric frame listing, video decoding, done markers
and the parallel/progress loop.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import multiprocessing  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import string  # noqa: E402

from ops.dataset_config import list_lines  # noqa: E402
from ops.utils import HelpFormatter, atomic_open  # noqa: E402
from ops.video_io import VIDEO_EXTENSIONS, TruncatedVideoError, checked_video_frames  # noqa: E402

logger = logging.getLogger('extract_frames')

DONE_MARKER = '.done'


# ---------------------------------------------------------------------------------------------------
# Shared helpers

def template_regex(tmpl, fixed=()):
    """Regex for file names made by `tmpl`; the LAST field (the frame number) is captured as digits.

    `fixed` gives the values of the earlier fields in order, e.g. ('x',) for 'flow_{}_{:05d}.jpg'.
    """
    fields = [p for p in string.Formatter().parse(tmpl)]
    num_fields = sum(1 for _, name, _, _ in fields if name is not None)
    if num_fields < 1 or len(fixed) != num_fields - 1:
        raise ValueError(f'template {tmpl!r} has {num_fields} fields; expected {len(fixed) + 1} '
                         '(the last one is the frame number)')
    out, i = [], 0
    for literal, name, spec, _ in fields:
        out.append(re.escape(literal))
        if name is None:
            continue
        out.append(r'(\d+)' if i == num_fields - 1 else re.escape(format(fixed[i], spec or '')))
        i += 1
    return re.compile(''.join(out) + r'\Z')


def numbered_files(folder, tmpl, fixed=()):
    """Files of `folder` matching `tmpl`, as {frame_number: file_name}; {} when the folder is absent."""
    pattern = template_regex(tmpl, fixed)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return {}
    found = {}
    for name in names:
        m = pattern.match(name)
        if m:
            found[int(m.group(1))] = name
    return found


def sorted_frame_files(folder, tmpl, fixed=()):
    """Paths of the frames of `folder` in numeric order (not the lexicographic order of os.listdir)."""
    found = numbered_files(folder, tmpl, fixed)
    return [os.path.join(folder, found[k]) for k in sorted(found)]


def find_videos(video_dir):
    """Relative paths of the video files under video_dir (recursive, sorted)."""
    out = []
    for dirpath, _, names in os.walk(video_dir):
        for name in names:
            if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS:
                out.append(os.path.relpath(os.path.join(dirpath, name), video_dir))
    return sorted(out)


def read_video_list(path):
    """`path [label]` lines (blank and # lines skipped) -> list of (path, label or None)."""
    items = []
    for lineno, text, parts in list_lines(path):
        if len(parts) > 2 or (len(parts) == 2 and not parts[1].lstrip('-').isdigit()):
            raise ValueError(f'{path}:{lineno}: expected "path [label]", got: {text!r}')
        items.append((parts[0], int(parts[1]) if len(parts) == 2 else None))
    return items


def video_id(rel_path):
    """Video id of a relative video path: the path without its extension ('a/b.mp4' -> 'a/b')."""
    return os.path.splitext(rel_path)[0].replace(os.sep, '/')


def read_done(folder, marker=DONE_MARKER):
    """The JSON of a finished folder's done-marker, or None when the folder is not finished."""
    try:
        with open(os.path.join(folder, marker)) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_done(folder, info, marker=DONE_MARKER):
    with atomic_open(os.path.join(folder, marker)) as f:
        json.dump(info, f)


def shortened(items, limit=5):
    """'a, b, c, d, e, ... (N in all)': the first `limit` items (any type) of a list for a message."""
    items = list(items)
    return ', '.join(str(k) for k in items[:limit]) + (f', ... ({len(items)} in all)' if len(items) > limit else '')


def id_has_whitespace(vid):
    """List files split their lines on white space: such an id cannot go into one."""
    return any(ch.isspace() for ch in vid)


def check_inputs(jobs):
    """Refuse, before any work, videos whose id holds whitespace (list lines are split on it) and videos that
    map to one output folder (same stem, two extensions). jobs: dicts with src, vid, folder.
    Returns error lines naming the files."""
    errors = [f'{job["src"]}: its video id {job["vid"]!r} contains whitespace, which list files cannot hold; '
              'rename the file' for job in jobs if id_has_whitespace(job['vid'])]
    owners = {}
    for job in jobs:
        owners.setdefault(os.path.normcase(os.path.abspath(job['folder'])), []).append(job['src'])
    errors += [f'{" and ".join(srcs)} would both be written to {folder}' for folder, srcs in owners.items()
               if len(srcs) > 1]
    return errors


def settings_conflicts(folders, settings, marker=DONE_MARKER, legacy=None):
    """Finished outputs whose recorded settings differ from `settings` -> lines naming folder and setting.

    legacy: values of settings that markers of older versions did not record."""
    legacy = legacy or {}
    lines = []
    for folder in folders:
        info = read_done(folder, marker)
        if info is None:
            continue
        for key, wanted in settings.items():
            recorded = info.get(key, legacy.get(key, '(not recorded)'))
            if recorded != wanted:
                lines.append(f'{folder}: made with --{key} {recorded}, this run asks for {wanted}')
    return lines


def refuse(errors, what, limit=10):
    """Print error lines and the reason, then exit with status 2 (nothing was done)."""
    for line in errors[:limit]:
        print(f'error: {line}', file=sys.stderr)
    if len(errors) > limit:
        print(f'error: ... and {len(errors) - limit} more', file=sys.stderr)
    print(f'refused ({what}); nothing was written', file=sys.stderr)
    sys.exit(2)


def fresh_folder(folder):
    """Empty `folder` (a leftover of an interrupted run) and create it."""
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)


def _init_worker():
    import cv2
    cv2.setNumThreads(1)  # parallelism comes from the worker processes


def run_parallel(func, jobs, workers, desc):
    """Map func over jobs (in worker processes when workers > 1) with a tqdm bar; yields results."""
    from tqdm import tqdm
    with tqdm(total=len(jobs), desc=desc, unit='video', dynamic_ncols=True) as bar:
        if workers <= 1:
            for job in jobs:
                yield func(job)
                bar.update()
            return
        # Workers start with Ctrl-C ignored (an ignored signal stays ignored in the child from its first
        # instruction), so only the parent reacts: no traceback from each worker.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            pool = multiprocessing.get_context('spawn').Pool(workers, initializer=_init_worker)
        finally:
            signal.signal(signal.SIGINT, previous)
        with pool:
            for result in pool.imap_unordered(func, jobs, chunksize=1):
                yield result
                bar.update()


def finish_extraction(results, items, list_out, summary):
    """Gather run_parallel's (vid, count, error[, warning]) results, write the list in input order and report.

    items: [(vid, label or None)]; summary(n) describes the n videos done.
    Returns the exit status: 1 when any video failed (it is left out of the list), 130 on Ctrl-C (finished
    outputs are kept and a rerun resumes; no list is written), else 0."""
    counts, failures, warnings = {}, [], []
    try:
        for vid, n, error, *warning in results:
            if error:
                failures.append(error)
            else:
                counts[vid] = n
            warnings += [w for w in warning if w]
    except KeyboardInterrupt:
        print(f'interrupted: {len(counts)} of {len(items)} videos finished and kept; rerun the same command '
              'to resume (unfinished outputs are redone)', file=sys.stderr)
        return 130
    rows = [(vid, counts[vid]) if label is None else (vid, counts[vid], label)
            for vid, label in items if vid in counts]
    write_list(list_out, rows)
    print(f'{summary(len(counts))}; list: {list_out}')
    for warning in warnings:
        print(f'WARNING {warning}', file=sys.stderr)
    for error in failures:
        print(f'FAILED {error}', file=sys.stderr)
    if failures:
        print(f'{len(failures)} videos failed (left out of the list; rerun to retry)', file=sys.stderr)
        return 1
    return 0


def write_list(path, rows):
    """Write list rows (tuples) as whitespace-separated lines, creating the parent folder."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    with open(path, 'w') as f:
        f.writelines(' '.join(str(v) for v in row) + '\n' for row in rows)


def extract_and_list(args, func, jobs, items, what, summary):
    """run_parallel(func) over jobs, then finish_extraction into --list_out (default: <out_dir>/ the name
    add_extraction_outputs gave); returns the exit status."""
    list_out = args.list_out or os.path.join(args.out_dir, args.default_list)
    return finish_extraction(run_parallel(func, jobs, args.workers, what), items, list_out, summary)


def add_video_inputs(p):
    """--video_dir / --video_list: the inputs of the extraction tools (collect_inputs reads them)."""
    p.add_argument('--video_dir', help='folder of videos (searched recursively); the root of '
                   '--video_list paths when a list is given')
    p.add_argument('--video_list', help='list of videos, lines "path [label]" relative to --video_dir')


def add_extraction_outputs(p, out_dir_help, list_name, outputs):
    """--out_dir, --workers, --list_out, --overwrite: the outputs every extraction tool shares."""
    p.add_argument('--out_dir', required=True, help=out_dir_help)
    p.add_argument('--workers', type=int, default=max(1, (os.cpu_count() or 2) // 2), help='worker processes')
    p.add_argument('--list_out', help=f'list to write (default: <out_dir>/{list_name})')
    p.set_defaults(default_list=list_name)      # read by extract_and_list
    p.add_argument('--overwrite', action='store_true',
                   help=f'redo finished {outputs} made with other settings (by default the run refuses)')


def video_items(parser, args):
    """[(video id, path relative to --video_dir, label or None)] of --video_dir / --video_list."""
    if not args.video_dir and not args.video_list:
        parser.error('give --video_dir and/or --video_list')
    items = [(video_id(rel), rel, label) for rel, label in collect_inputs(args.video_dir, args.video_list)]
    if not items:     # an empty tree is a wrong path far more often than a finished job
        parser.error(f'no videos ({", ".join(VIDEO_EXTENSIONS)}) under --video_dir {args.video_dir}'
                     + (f' in --video_list {args.video_list}' if args.video_list else ''))
    return items


def refuse_unfit(jobs, conflicts, overwrite, outputs):
    """Exit (refuse) before any work on check_inputs' errors, or on settings conflicts without --overwrite."""
    errors = check_inputs(jobs)
    if errors:
        refuse(errors, 'inputs that cannot be extracted as given')
    if conflicts and not overwrite:
        refuse(conflicts, f'finished {outputs} were made with other settings; --overwrite redoes them')


def collect_inputs(video_dir, video_list):
    """[(relative video path, label or None)] from a folder and/or a list file."""
    if video_list:
        return read_video_list(video_list)
    if not video_dir or not os.path.isdir(video_dir):
        raise FileNotFoundError(f'video folder not found: {video_dir} (--video_dir)')
    return [(rel, None) for rel in find_videos(video_dir)]


# ---------------------------------------------------------------------------------------------------
# Frame extraction

FRAME_SETTINGS = ('short_side', 'fps', 'quality', 'autorotate', 'tmpl')
LEGACY_FRAME_SETTINGS = {'fps': 0, 'autorotate': False}   # what markers without these keys were made with


def extract_one(job):
    """Decode one video into its frame folder. Returns (vid, num_frames, error or None, warning or None).

    job: dict with src, folder, vid, allow_partial and the FRAME_SETTINGS. A folder finished with
    the same settings is kept (main refused differing ones unless --overwrite)."""
    import cv2
    src, folder, vid, tmpl = job['src'], job['folder'], job['vid'], job['tmpl']
    settings = {key: job[key] for key in FRAME_SETTINGS}
    info = read_done(folder)
    if info is not None and not settings_conflicts([folder], settings, legacy=LEGACY_FRAME_SETTINGS):
        return vid, int(info['num_frames']), None, None
    n, notes = 0, []
    try:
        if not os.path.isfile(src):
            raise FileNotFoundError(f'no such file: {src}')
        fresh_folder(folder)
        for n, frame in enumerate(checked_video_frames(src, job['short_side'], autorotate=job['autorotate'],
                                                       fps=job['fps'], allow_partial=job['allow_partial'],
                                                       notes=notes), 1):
            path = os.path.join(folder, tmpl.format(n))
            if not cv2.imwrite(path, frame[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, job['quality']]):
                raise OSError(f'cannot write {path}')
    except Exception as err:  # any decoder/IO failure of one video is reported, not fatal for the run
        shutil.rmtree(folder, ignore_errors=True)   # no half-written folder is left to be listed
        return vid, 0, failure(src, err), None
    write_done(folder, dict(settings, num_frames=n, source=src))
    return vid, n, None, '; '.join(notes) or None


def failure(src, err):
    """The FAILED line of one video: a truncated one says how to keep its frames (the one truncation policy,
    ops.video_io.truncation)."""
    if isinstance(err, TruncatedVideoError):
        return f'{err} (--allow_partial keeps the decoded frames)'
    return f'{src}: {type(err).__name__}: {err}'


ALLOW_PARTIAL_HELP = ('keep the decoded frames of a truncated video (the file ends before the data its container '
                      'announces, or decoding fails or yields fewer frames than its packets; a warning says '
                      'which); by default it is reported as failed. A header frame count above the packets is '
                      'not truncation')


def get_args_parser():
    p = argparse.ArgumentParser(
        description='Decode videos into JPEG frame folders (resumable, parallel) and write a frames list.',
        formatter_class=HelpFormatter)
    add_video_inputs(p)
    add_extraction_outputs(p, 'root of the frame folders', 'frames_list.txt', 'folders')
    p.add_argument('--tmpl', default='img_{:05d}.jpg', help='frame file template (1-based numbers)')
    p.add_argument('--short_side', type=int, default=0, help='resize the shorter side to this (0: keep)')
    p.add_argument('--quality', type=int, default=95, help='JPEG quality (1-100)')
    p.add_argument('--fps', type=float, default=0,
                   help="resample to this constant frame rate with ffmpeg's fps filter (0: every decoded frame)")
    p.add_argument('--no_autorotate', dest='autorotate', action='store_false',
                   help='keep the stored pixels; by default the display matrix (phone videos) is applied')
    p.add_argument('--allow_partial', action='store_true', help=ALLOW_PARTIAL_HELP)
    return p


def main(argv=None):
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if not 1 <= args.quality <= 100:
        parser.error(f'--quality must be in [1, 100], got {args.quality}')
    if args.short_side < 0:
        parser.error(f'--short_side must be >= 0, got {args.short_side}')
    if args.fps < 0:
        parser.error(f'--fps must be >= 0, got {args.fps}')
    template_regex(args.tmpl)  # fails early on a bad template
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
    items = video_items(parser, args)
    base = args.video_dir or ''
    settings = dict(short_side=args.short_side, fps=args.fps, quality=args.quality, autorotate=args.autorotate,
                    tmpl=args.tmpl)
    jobs = [dict(settings, src=os.path.join(base, rel), folder=os.path.join(args.out_dir, vid), vid=vid,
                 allow_partial=args.allow_partial) for vid, rel, _ in items]
    refuse_unfit(jobs, settings_conflicts([job['folder'] for job in jobs], settings, legacy=LEGACY_FRAME_SETTINGS),
                 args.overwrite, 'folders')
    return extract_and_list(args, extract_one, jobs, [(vid, label) for vid, _, label in items], 'frames',
                            lambda n: f'{n} videos extracted into {args.out_dir}')


if __name__ == '__main__':
    sys.exit(main())
