"""Pre-flight check of a dataset: walk its list(s) and report everything that would fail at run time.

    python scripts/check_data.py toy --modality Flow
    python scripts/check_data.py toy --modality RGB --pair_with Flow --split train
    python scripts/check_data.py toy --modality Layout --pair_with RGB
    python scripts/check_data.py something --data_root /ssd/video --split val --sample_frames --workers 8
    python scripts/check_data.py mydata --root_path frames --train_list t.txt --val_list v.txt --num_class 5

Reports (one line each, then a count per type): a missing, malformed or empty list, duplicate videos,
lists of two modalities that do not pair up (--pair_with Flow: ids missing from one, labels differing), labels
outside [0, num_class), videos with 0 frames, missing folders, frame-count mismatches between the list
and the files on disk, missing frames, images that do not decode, missing or undecodable videos (a
truncated file included: ops.video_io.truncation, the policy of the loader and of extract_frames.py; a
header frame count above the packets is not truncation), videos whose loader frame count differs from a
full decode (stream_count_mismatch; not checked with --sample_frames), for --modality Audio a missing
audio file / track / store dataset and a soundtrack shorter than the list's frames / fps, for HDF5 stores a missing
file, missing or interrupted per-video datasets, count mismatches and undecodable elements, and for Layout
(--modality Layout) a missing or malformed box file (the message names the frame and the field) and one
annotating frames beyond the list's count. Every needed
file is opened and decoded (--sample_frames: only the first and the last frame of each video). Videos are
decoded as the loader decodes them (display matrix applied unless --no_autorotate). --dense_sample prints, per
split, how many videos are shorter than --dense_length (information, not a problem). Exit status 0 when
nothing is wrong, 1 otherwise.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import collections  # noqa: E402

from ops.dataset import parse_list  # noqa: E402
from ops.heads import parse_heads  # noqa: E402
from ops.dataset_config import DATA_FORMATS, ensure_builtin_data, resolve_dataset  # noqa: E402
from ops.modality import MODALITIES  # noqa: E402
from ops.utils import HelpFormatter  # noqa: E402
from ops.video_io import (VIDEO_BACKENDS, FrameReadError, VideoFile, count_decoded_frames,  # noqa: E402
                          count_shorter, flow_paths, iter_video_frames, load_image, template_fields)
from scripts.extract_frames import numbered_files, run_parallel, shortened  # noqa: E402

PROBLEMS = ('missing_list', 'malformed_list', 'duplicate_video', 'bad_label', 'zero_frames',
            'missing_folder', 'count_mismatch', 'missing_frame', 'unreadable_image', 'missing_video',
            'undecodable_video', 'missing_store', 'missing_dataset', 'undecodable_element')
PROBLEMS += ('stream_count_mismatch',)   # video lists: loader count vs a full decode (_video_count_problems)
# Audio: no audio file / track (or store dataset), or a soundtrack shorter than the listed frames / fps.
PROBLEMS += ('missing_audio', 'short_audio')
PROBLEMS += ('missing_box_file', 'malformed_box_file')   # Layout (ops/layout.py)
# List-level problems across lists: an empty list, and two modalities' lists that do not pair up.
PAIR_PROBLEMS = ('empty_list', 'unpaired_video', 'label_mismatch', 'unpaired_count')
SPLITS = ('train', 'val', 'both')
VIDEO_CHUNK = 64  # frames decoded per request when a whole video is checked


def _numbers_to_check(first, count, sample_frames):
    if count <= 0:
        return []
    last = first + count - 1
    return sorted({first, last}) if sample_frames else list(range(first, last + 1))


def _check_frames(cfg, path, num_frames):
    """Frame folder of one video: counts on disk, gaps, decodable images."""
    root, tmpl, start, modality, sample_frames = (cfg['root'], cfg['tmpl'], cfg['start_index'],
                                                  cfg['modality'], cfg['sample_frames'])
    folder = os.path.join(root, path)
    problems = []
    fields = template_fields(tmpl)
    if modality == 'Flow' and fields >= 2:
        # Two grayscale files per step; the folder may be derived from the video id (SSv1 flow).
        x_dir = os.path.dirname(flow_paths(folder, path, tmpl, start)[0])
        fixed = (int(os.path.basename(os.path.normpath(path))),) if fields == 3 else ()
        planes = [(x_dir, fixed + (axis,), 'L') for axis in ('x', 'y')]
    else:
        x_dir = folder
        planes = [(folder, (), 'RGB')]
    if not os.path.isdir(x_dir):
        return [('missing_folder', x_dir)]
    needed = list(range(start, start + num_frames))
    for directory, fixed, mode in planes:
        files = numbered_files(directory, tmpl, fixed)
        which = f'{tmpl!r}' + (f' ({fixed[-1]})' if fixed else '')
        if len(files) != num_frames:
            problems.append(('count_mismatch', f'{directory}: list says {num_frames} frames, found '
                             f'{len(files)} files matching {which}'))
        missing = [k for k in needed if k not in files]
        if missing:
            problems.append(('missing_frame', f'{directory}: no file for frame(s) {shortened(missing)} '
                             f'of {which}'))
        for k in _numbers_to_check(start, num_frames, sample_frames):
            if k in files:
                try:
                    load_image(os.path.join(directory, files[k]), mode)
                except FrameReadError as err:
                    problems.append(('unreadable_image', str(err)))
    return problems


def _check_boxes(cfg, path, num_frames):
    """Layout box file of one video: present, well-formed (the error names the frame and the field), and
    annotating no frame beyond the list's count (num_frames None: a video list, nothing to compare)."""
    from ops.layout import BoxFile, box_path
    full = box_path(cfg['root'], path, cfg['tmpl'])
    try:
        boxes = BoxFile(full)
    except FrameReadError:
        return [('missing_box_file', full)]
    except ValueError as err:
        return [('malformed_box_file', str(err))]
    if num_frames is not None and boxes.num_frames > num_frames:
        return [('count_mismatch', f'{full}: annotates frame {boxes.num_frames}, the list says {num_frames} '
                 'frames')]
    return []


def _check_video(cfg, path):
    full = os.path.join(cfg['root'], path)
    if not os.path.isfile(full):
        return [('missing_video', full)], None
    try:
        with VideoFile(full, cfg['video_backend'], autorotate=cfg.get('autorotate', True)) as video:
            n = video.num_frames
            if video.backend == 'pyav' and not cfg['sample_frames']:
                # One forward pass: PyAV reads of 64-frame chunks would each decode from the start again.
                decoded = sum(1 for _ in iter_video_frames(full, autorotate=cfg.get('autorotate', True)))
                if decoded < n:   # as VideoFile.read of the last frame reports it
                    return [('undecodable_video', f'cannot decode frames of {full}: frame {n} requested, the '
                             f'stream ended after {decoded} frames')], None
            else:
                numbers = _numbers_to_check(1, n, cfg['sample_frames'])
                for i in range(0, len(numbers), VIDEO_CHUNK):
                    video.read(numbers[i:i + VIDEO_CHUNK])
                decoded = None if cfg['sample_frames'] else count_decoded_frames(full)   # an indexed backend read it
    except FrameReadError as err:
        return [('undecodable_video', str(err))], None
    return _video_count_problems(full, n, decoded), n


def _video_count_problems(full, loader_frames, decoded):
    """The loader's frame count against a full decode (decoded; None: not decoded in full): catches index /
    decoder disagreements. Truncated files (ops.video_io.truncation) fail in VideoFile already
    (undecodable_video); a header count above the packets is not a problem (the loader reads the packets)."""
    if decoded is not None and decoded != loader_frames:
        return [('stream_count_mismatch', f'{full}: the loader reports {loader_frames} frames, ffmpeg '
                 f'decodes {decoded}')]
    return []


def count_short_for_dense(cfg, records, dense_length):
    """(videos shorter than the dense window, videos) of a split's parsed list (check_split's records): their
    dense clips wrap (TSM's formula) and all dense test clips are the same clip. Video lists are counted with
    the decoder's frame count."""
    return count_shorter(cfg['root'], records, cfg['data_format'], dense_length), len(records)


def _check_hdf5(cfg, h5file, store, vid, num_frames):
    from ops.hdf5_store import has_video
    if vid not in h5file:
        return [('missing_dataset', f'{cfg["root"]}: no dataset {vid!r}')]
    if not has_video(h5file, vid):
        return [('missing_dataset', f'{cfg["root"]}:{vid}: incomplete (interrupted write); repack it')]
    problems = []
    stored = store.num_frames(vid)
    if stored != num_frames:
        problems.append(('count_mismatch', f'{cfg["root"]}:{vid}: list says {num_frames} frames, the store '
                         f'holds {stored}'))
    read = store.read_flow if cfg['modality'] == 'Flow' else store.read_rgb
    for k in _numbers_to_check(1, min(stored, num_frames), cfg['sample_frames']):
        try:
            read(vid, [k])
        except FrameReadError as err:
            problems.append(('undecodable_element', f'frame {k}: {err}'))
    return problems


def _check_audio(cfg, path, num_frames, store):
    """The soundtrack of one video (Audio): present, decodable, and at least num_frames / fps long
    (--sample_frames: the duration the header announces, nothing decoded)."""
    from ops.audio import MissingAudioError, decode_audio, has_audio_track, media_durations
    if cfg['data_format'] == 'hdf5':
        where = f'{cfg["root"]}:{path}'
        if not store.has(path):
            return [('missing_audio', f'{cfg["root"]}: no audio dataset {path!r}')]
        try:
            samples, rate = store.read_audio(path, cfg['audio']['sample_rate'])
        except FrameReadError as err:
            return [('missing_audio', str(err))]
        seconds, own_fps = len(samples) / rate, None
    else:
        where = os.path.join(cfg['root'], path if cfg['data_format'] == 'video' else cfg['tmpl'].format(path))
        if not os.path.isfile(where):
            return [('missing_audio', f'{where}: no such file')]
        try:
            if not has_audio_track(where):
                raise MissingAudioError(f'{where} has no audio track')
            seconds, own_fps = media_durations(where)
            if seconds is None or not cfg['sample_frames']:   # decoded: the count, and that it decodes
                waveform, rate = decode_audio(where)
                seconds = len(waveform) / rate
        except FrameReadError as err:
            return [('missing_audio', str(err))]
        except Exception as err:   # PyAV's errors for a broken file
            return [('missing_audio', f'{where}: {type(err).__name__}: {err}')]
    if num_frames is None:
        num_frames = VideoFile(where, cfg['video_backend'], autorotate=cfg['autorotate']).num_frames
    fps = cfg['audio']['fps'] or own_fps
    if not fps:
        return [('short_audio', f'{where}: no frame rate to compare with (give --audio_fps)')]
    needed = num_frames / fps
    if seconds + 0.5 / cfg['audio']['sample_rate'] < needed:
        return [('short_audio', f'{where}: {seconds:.3f} s of audio for {num_frames} frames at {fps:g} fps '
                 f'({needed:.3f} s)')]
    return []


def check_records(job):
    """Check a chunk of list records. job = (cfg, [(path, num_frames, label)]) -> [(type, message)]."""
    cfg, records = job
    problems = []
    h5file = store = None
    if cfg['data_format'] == 'hdf5':
        import h5py
        from ops.hdf5_store import HDF5FrameStore
        h5file = h5py.File(cfg['root'], 'r')
        store = HDF5FrameStore(cfg['root'])
    # one check per data format (parse_list refused any other), chosen once; Audio and Layout have their own
    check_format = {'frames': lambda path, num_frames: _check_frames(cfg, path, num_frames),
                    'video': lambda path, num_frames: _check_video(cfg, path)[0],
                    'hdf5': lambda path, num_frames: _check_hdf5(cfg, h5file, store, path, num_frames),
                    }[cfg['data_format']]
    try:
        for path, num_frames, label in records:
            if not cfg.get('heads') and label >= cfg['num_class']:   # multi-head labels: parse_list checked them
                problems.append(('bad_label', f'{cfg["list"]}: {path}: label {label} outside '
                                 f'[0, {cfg["num_class"]})'))
            if num_frames == 0:
                problems.append(('zero_frames', f'{cfg["list"]}: {path}: 0 frames (the loader drops it)'))
                continue
            if cfg['modality'] == 'Audio':
                problems += _check_audio(cfg, path, num_frames, store)
            elif cfg['modality'] == 'Layout':
                problems += _check_boxes(cfg, path, num_frames)
            else:
                problems += check_format(path, num_frames)
    finally:
        if h5file is not None:
            store.close()
            h5file.close()
    return problems


def check_split(cfg, workers, chunk=16):
    """(problems, records) of one split: list-level problems, then per-video ones (in list order), and the
    parsed list (duplicates kept; None when the list is missing or malformed)."""
    list_file = cfg['list']
    if not list_file or not os.path.isfile(list_file):
        return [('missing_list', f'{list_file} (given by {cfg["option"]})')], None
    try:
        records = parse_list(list_file, cfg['data_format'], cfg['option'], allow_duplicates=True,
                             heads=cfg.get('heads'))
    except ValueError as err:
        return [('malformed_list', str(err))], None
    problems = check_not_empty(cfg, records)
    seen = collections.Counter(r.path for r in records)
    problems += [('duplicate_video', f'{list_file}: {path} listed {k} times')
                 for path, k in seen.items() if k > 1]
    if cfg['data_format'] == 'hdf5' and not os.path.isfile(cfg['root']):
        message = f'{cfg["root"]} (HDF5 store of the {cfg["split"]} split; build it with scripts/pack_hdf5.py)'
        return problems + [('missing_store', message)], records
    rows = [(r.path, r.num_frames, r.label) for r in records]
    jobs = [(cfg, rows[i:i + chunk]) for i in range(0, len(rows), chunk)]
    for result in run_parallel(check_records, jobs, workers, f'check {cfg["split"]}'):
        problems += result
    return problems, records


def check_not_empty(cfg, records):
    """An empty list (or one holding only comments) trains or evaluates nothing: report it."""
    if records:
        return []
    return [('empty_list', f'{cfg["list"]} (given by {cfg["option"]}) lists no videos')]


def check_pairing(lists, split):
    """lists: modality -> (list file, records) of one split. Mutual learning and distillation pair the
    modalities' videos by id: every id must be in every list, with the same label."""
    problems = []
    by_mod = {m: {r.video_id: r for r in records} for m, (_, records) in lists.items()}
    all_ids = sorted(set().union(*by_mod.values()))
    for m, (path, records) in lists.items():
        missing = [v for v in all_ids if v not in by_mod[m]]
        if missing:
            problems.append(('unpaired_video', f'{split}: {len(missing)} of {len(all_ids)} videos are missing '
                             f'from the {m} list {path}: {shortened(missing)}'))
    for v in all_ids:
        labels = {m: by_mod[m][v].label for m in by_mod if v in by_mod[m]}
        if len(set(labels.values())) > 1:
            problems.append(('label_mismatch', f'{split}: video {v} has label ' + ', '.join(
                f'{lab} in the {m} list {lists[m][0]}' for m, lab in labels.items())))
        problems += _count_pairing(v, {m: by_mod[m][v].num_frames for m in by_mod
                                       if v in by_mod[m] and by_mod[m][v].num_frames is not None}, lists, split)
    return problems


def _count_pairing(video, counts, lists, split):
    """Frames lists of one video must agree: RGB and RGBDiff read the same frames (equal counts); flow has
    as many steps as frames or one fewer (extract_flow.py writes n - 1; some releases pad to n)."""
    frames = {m: n for m, n in counts.items() if m != 'Flow'}
    described = ', '.join(f'{n} in the {m} list {lists[m][0]}' for m, n in counts.items())
    if len(set(frames.values())) > 1 or ('Flow' in counts and frames and
                                        not 0 <= next(iter(frames.values())) - counts['Flow'] <= 1):
        return [('unpaired_count', f'{split}: video {video} has frame counts {described} (flow must have as '
                                   'many steps as the frames or one fewer; RGB and RGBDiff the same frames)')]
    return []


def pairing_problems(args, splits, modalities, parsed):
    """check_pairing for every split over the lists that resolve_dataset gives each modality. parsed: split ->
    (list file, records) already parsed by check_split (of modalities[0]); other lists are parsed here."""
    problems = []
    heads = parse_heads(args.heads) if args.heads else None
    for split in splits:
        lists = {}
        for m in modalities:
            if m == modalities[0]:
                if parsed[split][1] is not None:
                    lists[m] = parsed[split]
                continue          # a missing or malformed list is reported by check_split
            info = resolve_dataset(args.dataset, m, data_root=args.data_root, root_path=args.root_path,
                                   train_list=args.train_list, val_list=args.val_list,
                                   category_file=args.category_file, num_class=args.num_class,
                                   image_tmpl=args.image_tmpl, flow_tmpl=args.flow_tmpl,
                                   data_format=args.data_format, heads=heads)
            path = info.train_list if split == 'train' else info.val_list
            if not path or not os.path.isfile(path):
                continue          # reported as missing_list by the modality's own check
            try:
                lists[m] = (path, parse_list(path, info.data_format, f'--{split}_list', allow_duplicates=True,
                                             heads=info.heads))
            except ValueError:
                continue          # reported as malformed_list
        if len(lists) > 1:
            problems += check_pairing(lists, split)
    return problems


def get_args_parser():
    p = argparse.ArgumentParser(
        description='Pre-flight check of a dataset list: missing folders/videos, frame-count mismatches, '
                    'undecodable images/videos/HDF5 elements, bad labels. Exits 1 when anything is wrong.',
        formatter_class=HelpFormatter)
    p.add_argument('dataset', help='registered dataset name, or any name with the overrides below')
    p.add_argument('--modality', choices=MODALITIES, default='RGB')
    p.add_argument('--pair_with', choices=MODALITIES, action='append', default=[],
                   help='also check that this modality\'s lists pair up with --modality\'s (same video ids '
                        'and labels), as mutual learning and distillation need; repeatable')
    p.add_argument('--split', choices=SPLITS, default='both')
    p.add_argument('--data_root', default='data', help='root of the registered relative paths')
    p.add_argument('--root_path', help='frames root / videos root / HDF5 file (may contain {split})')
    p.add_argument('--train_list')
    p.add_argument('--val_list')
    p.add_argument('--category_file')
    p.add_argument('--num_class', type=int)
    p.add_argument('--heads', help="multi-head lists, e.g. 'verb:97,noun:300' (default: the registry's, e.g. epic100)")
    p.add_argument('--image_tmpl', help='RGB frame template')
    p.add_argument('--flow_tmpl', help='flow template')
    p.add_argument('--box_tmpl', help='Layout box file template (formatted with the list path)')
    p.add_argument('--data_format', choices=DATA_FORMATS)
    p.add_argument('--audio_tmpl', help="Audio: audio file of a listed path ('{}.wav')")
    p.add_argument('--audio_fps', type=float, help="Audio: frame rate of the list's frame numbers (default: the "
                   "registry's, else the video's own)")
    p.add_argument('--video_backend', choices=VIDEO_BACKENDS, default='decord')
    p.add_argument('--sample_frames', action='store_true',
                   help='decode only the first and the last frame of each video (faster)')
    p.add_argument('--workers', type=int, default=1, help='worker processes')
    p.add_argument('--max_print', type=int, default=20,
                   help='problems printed per type (all are counted)')
    p.add_argument('--no_autorotate', dest='autorotate', action='store_false',
                   help='videos: keep the stored pixels (as main.py/test_models.py --no_autorotate); by default '
                        'the display matrix (phone videos) is applied, as the loader applies it')
    p.add_argument('--dense_sample', action='store_true',
                   help='report how many videos are shorter than the dense window (--dense_length)')
    p.add_argument('--dense_length', type=int, default=64, help='dense window in frames')
    return p


def main(argv=None):
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.workers < 0:
        parser.error(f'--workers must be >= 0 (0 and 1: in this process), got {args.workers}')
    if args.dense_length < 1:
        parser.error(f'--dense_length must be at least 1 frame, got {args.dense_length}')
    try:
        ensure_builtin_data(args.dataset, args.data_root, args.root_path,
                            modalities=(args.modality, *args.pair_with))
        info = resolve_dataset(args.dataset, args.modality, data_root=args.data_root,
                               root_path=args.root_path, train_list=args.train_list,
                               val_list=args.val_list, category_file=args.category_file,
                               num_class=args.num_class, image_tmpl=args.image_tmpl,
                               flow_tmpl=args.flow_tmpl, data_format=args.data_format, box_tmpl=args.box_tmpl,
                               audio=dict(tmpl=args.audio_tmpl, fps=args.audio_fps),
                               heads=parse_heads(args.heads) if args.heads else None)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    splits = ('train', 'val') if args.split == 'both' else (args.split,)
    problems, counts, parsed = [], {}, {}
    for split in splits:
        cfg = {'split': split, 'list': info.train_list if split == 'train' else info.val_list,
               'option': f'--{split}_list',
               'root': info.root_path if split == 'train' else (info.val_root_path or info.root_path),
               'data_format': info.data_format, 'modality': info.modality, 'tmpl': info.image_tmpl,
               'start_index': info.start_index, 'num_class': info.num_class,
               'sample_frames': args.sample_frames, 'video_backend': args.video_backend,
               'autorotate': args.autorotate, 'audio': info.audio, 'heads': info.heads}
        found, records = check_split(cfg, args.workers)
        problems += found
        counts[split], parsed[split] = len(records or ()), (cfg['list'], records)
        if args.dense_sample:
            short, total = count_short_for_dense(cfg, records or [], args.dense_length)
            print(f'{split}: {short} of {total} videos shorter than the {args.dense_length}-frame dense window '
                  '(their dense clips wrap; all dense test clips of such a video are identical)')
    if args.pair_with:
        problems += pairing_problems(args, splits, [args.modality, *args.pair_with], parsed)
    by_type = collections.defaultdict(list)
    for kind, message in problems:
        by_type[kind].append(message)
    for kind in PROBLEMS + PAIR_PROBLEMS:
        for message in by_type[kind][:args.max_print]:
            print(f'{kind}: {message}')
        if len(by_type[kind]) > args.max_print:
            print(f'{kind}: ... and {len(by_type[kind]) - args.max_print} more')
    checked = ', '.join(f'{split} {n} videos' for split, n in counts.items())
    print(f'checked {args.dataset} {args.modality} ({info.data_format}): {checked}')
    if problems:
        summary = ', '.join(f'{kind} {len(by_type[kind])}' for kind in PROBLEMS + PAIR_PROBLEMS if by_type[kind])
        print(f'FAILED: {len(problems)} problems: {summary}')
        return 1
    print('OK: no problems found')
    return 0


if __name__ == '__main__':
    sys.exit(main())
