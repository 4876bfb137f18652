"""Predict action classes for any video: files, folders of videos or of frame folders, or a list.

    python predict.py --weights ckpt.best.pth.tar clip.mp4 more_videos/ --top_k 5 --output preds.json
    python predict.py --weights rgb.pth.tar,rgb16.pth.tar --coeff 1,1.5 --test_crops 3 --twice_sample a.mp4
    python predict.py --weights ckpt.pth.tar long.mp4 --window 4s --stride 2s --output t.csv --plot t.png
    python predict.py --weights ckpt.pth.tar videos/ --save_features feats.h5 --per_view

Each checkpoint's model is rebuilt from its file and run by test_models.py's own code (ModelUnderTest,
evaluate_model; ops.scores.fused_scores), so every view-protocol option of test_models.py applies here too
(--test_crops, --twice_sample, --dense_sample, --full_res, --random_clips, --softmax, --scale_size, ...),
and the top-1 class equals test_models.py's prediction for the same video and protocol.

INPUT: a video file; a folder of frames (img_00001.jpg ..., --image_tmpl); a folder holding videos and/or
frame folders, searched recursively (e.g. <class>/<video>.mp4 trees; it says how many it found); or a list
file whose lines start with a video or frame-folder path (relative to --root_path, else to the list's folder;
further columns are ignored). RGB and RGBDiff checkpoints read videos and frame folders, Flow checkpoints
read frame folders of flow images (--flow_tmpl), Layout
checkpoints the box file of each input (--box_tmpl, default beside it: clip.mp4 or frames/clip -> clip.json).

Class names: --category_file, else the checkpoint's `class_names` or recorded `data.categories`, else class
indices (said so on stderr). A text-head checkpoint (ILA --ila_head text) classifies over whatever names
--class_names "open door,close door" or --category_file give (zero-shot, no retraining).
Probabilities: the softmax of the fused video logits (with --softmax: the coefficient-weighted mean of
the per-model probabilities). --window W --stride S (frames, or seconds with an 's' suffix) predicts
windows of W frames every S frames (the last window ends at the last frame) and prints a timeline.
An input that cannot be read is reported by name and skipped; the exit code is then 1.
"""
import csv
import dataclasses
import functools
import json
import os
import sys

import numpy as np

from ops import features as feature_io
from ops.checkpoint import checkpoint_class_names, load_checkpoint, model_config_from_checkpoint
from ops.dataset import VideoDataSet, VideoRecord
from ops.heads import heads_text, same_heads
from ops.dataset_config import list_lines, parse_class_names, resolve_dataset
from ops.scores import fused_scores, score_probabilities, write_timeline_png
from ops.layout import BoxFile, box_path
from ops.utils import AMP_DTYPES, atomic_open
from ops.video_io import VIDEO_EXTENSIONS, FrameReadError, flow_paths, frame_path, video_num_frames
from opts import get_test_parser, parse_test_args
from test_models import (ModelUnderTest, evaluate_model, protocol_text, recorded_audio, sampling_mode,
                         split_feature_outputs,
                         write_feature_files)
from test_models import main as test_models_main

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp')
DATASET_NAME = 'predict'   # not a registered dataset: paths come from the command line


def get_parser():
    """test_models.py's parser (model, crops, clips, device options) plus the prediction options."""
    p = get_test_parser(prog="predict.py", description=__doc__.split("\n\n")[0])
    g = p.add_argument_group("prediction")
    g.add_argument("inputs", nargs="+", metavar="INPUT", help="videos, folders or list files")
    g.add_argument("--top_k", type=int, default=5, help="classes printed and written per video / window")
    g.add_argument("--output", default=None, help="predictions file, .json or .csv")
    g.add_argument("--window", default=None, help="long videos: window length, frames (64) or seconds (4s)")
    g.add_argument("--stride", default=None, help="window step, frames or seconds (default: the window)")
    g.add_argument("--fps", type=float, default=None, help="frame rate of frame folders (windows in seconds)")
    g.add_argument("--plot", default=None, help="with --window: PNG of the top classes over time")
    g.add_argument("--class_names", default=None,
                   help='comma list of class names for a text-head model (ILA --ila_head text), e.g. '
                        '"open door,close door": it classifies over them without retraining')
    # INPUTs may come before, between and after options (parse_test_args calls parser.parse_args).
    p.parse_args = p.parse_intermixed_args
    return p


def parse_args(argv=None):
    """Parse and validate once: labelled-list options are refused, --window/--stride become (value, unit),
    --class_names a list (a text-head model's classes)."""
    parser = get_parser()
    args = parse_test_args(argv, parser=parser)
    args.dataset = DATASET_NAME
    # test_models.py options that need a labelled list: refused rather than silently ignored
    for option, value, unset in (("--test_list", args.test_list, None), ("--csv_file", args.csv_file, None),
                                 ("--save_scores", args.save_scores, None), ("--output_dir", args.output_dir, None),
                                 ("--max_num", args.max_num, -1), ("--data_format", args.data_format, None)):
        if value != unset:
            parser.error(f"{option} is a test_models.py option (labelled lists); predict.py takes INPUTs "
                         "(videos or frame folders, told apart by themselves) and writes --output / --save_features")
    if args.output and not args.output.endswith(('.json', '.csv')):
        parser.error(f"--output {args.output!r}: give a .json or .csv path")
    if args.top_k < 1:
        parser.error("--top_k must be >= 1")
    try:
        args.window_spec = parse_span(args.window, "--window") if args.window else None
        args.stride_spec = parse_span(args.stride, "--stride") if args.stride else args.window_spec
    except ValueError as exc:
        parser.error(str(exc))
    if args.stride and not args.window:
        parser.error("--stride needs --window")
    if args.plot and not args.window:
        parser.error("--plot draws the timeline of --window predictions; give --window")
    if args.fps is not None and args.fps <= 0:
        parser.error("--fps must be > 0")
    args.class_name_list = None
    if args.class_names is not None:
        if args.category_file or args.num_class:
            parser.error("--class_names replaces --category_file / --num_class: give one")
        try:
            args.class_name_list = parse_class_names(args.class_names)
        except ValueError as exc:
            parser.error(str(exc))
    return args


def parse_span(text, option):
    """'64' -> (64, 'frames'); '2.5s' -> (2.5, 'seconds'); anything else raises naming the option."""
    try:
        value, unit = (float(text[:-1]), 'seconds') if text.endswith('s') else (int(text), 'frames')
    except ValueError:
        raise ValueError(f"{option} {text!r}: give frames (64) or seconds (2.5s)") from None
    if value <= 0:
        raise ValueError(f"{option} {text!r} must be > 0")
    return value, unit


# ---------------------------------------------------------------------------------------------- inputs
@dataclasses.dataclass
class Item:
    """One input to predict: a video file or a frame folder."""
    path: str
    kind: str            # 'video' | 'frames'


def is_video(path):
    """A file with a video extension (case-insensitive)."""
    return os.path.isfile(path) and path.lower().endswith(VIDEO_EXTENSIONS)


def has_images(folder):
    """The folder holds image files directly (a frame folder)."""
    return any(n.lower().endswith(IMAGE_EXTENSIONS) for n in os.listdir(folder))


def collect_inputs(inputs, root_path=None):
    """Command-line inputs -> (items in order, each once; errors [(path, message)]; notes: what each folder
    input held). A folder is searched recursively (the <class>/<video> trees of README's "Your own dataset"):
    a sub-folder holding images is one frame folder, videos are taken by their extension."""
    items, errors, notes = [], [], []

    def add_path(path, origin):
        if is_video(path):
            items.append(Item(path, 'video'))
        elif os.path.isdir(path):
            add_folder(path)
        elif os.path.isfile(path):
            errors.append((path, f'{origin}: not a video file (extensions {", ".join(VIDEO_EXTENSIONS)}) '
                                 'nor a folder'))
        else:
            errors.append((path, f'{origin}: no such file or folder'))

    def scan(folder, found, seen):
        seen.add(os.path.realpath(folder))   # a symbolic link back up the tree is not followed again
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if is_video(path):
                found.append(Item(path, 'video'))
            elif os.path.isdir(path) and has_images(path):
                found.append(Item(path, 'frames'))
            elif os.path.isdir(path) and os.path.realpath(path) not in seen:
                scan(path, found, seen)

    def add_folder(folder):
        if has_images(folder):
            items.append(Item(folder, 'frames'))
            return
        found = []
        scan(folder, found, set())
        if not found:
            errors.append((folder, f'no videos ({", ".join(VIDEO_EXTENSIONS)}) and no frame folders (images '
                                   f'{", ".join(IMAGE_EXTENSIONS)}) in it or its sub-folders; give video files, '
                                   'frame folders, folders of them, or a list file'))
            return
        videos = sum(item.kind == 'video' for item in found)
        notes.append(f'{folder}: {videos} videos and {len(found) - videos} frame folders (searched recursively)')
        items.extend(found)

    def unique(found):
        seen, out = set(), []
        for item in found:
            key = os.path.normpath(os.path.abspath(item.path))
            if key not in seen:
                seen.add(key)
                out.append(item)
        return out

    for given in inputs:
        if os.path.isfile(given) and not is_video(given):
            base = root_path if root_path is not None else os.path.dirname(given)
            try:
                lines = list(list_lines(given))   # whole, so that a binary file fails before any add_path
            except UnicodeDecodeError:
                errors.append((given, f'not a list file (binary); videos need one of the extensions '
                                      f'{", ".join(VIDEO_EXTENSIONS)}'))
                continue
            for lineno, _, fields in lines:
                add_path(os.path.join(base, fields[0]), f'{given}:{lineno}')
        else:
            add_path(given, 'input')
    return unique(items), errors, notes


def count_frames(folder, modality, tmpl, start_index=1):
    """Consecutive frames of a frame folder from start_index (Flow: x/y pairs, counted on x)."""
    names = set(os.listdir(folder))
    video_id = os.path.basename(os.path.normpath(folder))
    n = 0
    while True:
        number = start_index + n
        path = flow_paths(folder, video_id, tmpl, number)[0] if modality == 'Flow' \
            else frame_path(folder, tmpl, number)
        if os.path.basename(path) not in names:
            break
        n += 1
    # Frames after a gap would be silently left out: refuse, naming the first missing file.
    later = [k for k in range(start_index + n + 1, start_index + n + 1 + len(names))
             if os.path.basename(flow_paths(folder, video_id, tmpl, k)[0] if modality == 'Flow'
                                 else frame_path(folder, tmpl, k)) in names]
    if later:
        raise ValueError(f'frame folder {folder}: {path} is missing, but {len(later)} later frame(s) from number '
                         f'{later[0]} exist (frames must be numbered without gaps from {start_index})')
    return n


@functools.lru_cache(maxsize=None)
def video_fps(path):
    """The video stream's average (or guessed) frame rate, None when the container gives none."""
    import av
    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else None


@dataclasses.dataclass(frozen=True)
class WindowRecord(VideoRecord):
    """A window of a video: frames [start + 1, start + length] (1-based) of `path`."""
    start: int = 0
    length: int = 0

    @property
    def video_id(self) -> str:
        return f'{self.path}@{self.start}'


class WindowDataSet(VideoDataSet):
    """VideoDataSet whose records are WindowRecords: each window is sampled as a video of its own."""

    def sample(self, num_frames, index, rng):
        record = self.records[index]
        clips = super().sample(record.length, index, rng)
        return [[start + record.start for start in clip] for clip in clips]


def window_starts(num_frames, window, stride):
    """0-based starts of windows of `window` frames every `stride` frames; the last one ends at the
    video's end (one window of the whole video when it is shorter than a window)."""
    if num_frames <= window:
        return [0]
    starts = list(range(0, num_frames - window + 1, stride))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return starts


def to_frames(span, fps, path):
    """A parsed --window/--stride span in frames of this video (seconds need a frame rate)."""
    value, unit = span
    if unit == 'frames':
        return int(value)
    if not fps:
        raise ValueError(f'{path}: frame folders have no frame rate: give --fps to use seconds')
    return max(1, int(round(value * fps)))


def probe(item, modality, args, spec):
    """-> (num_frames, fps or None); raises FrameReadError / ValueError naming the input."""
    if modality == 'Layout':      # the input's box file (--box_tmpl, default: beside it, <name>.json)
        return BoxFile(box_path('', item.path, spec.image_tmpl)).num_frames, args.fps
    if item.kind == 'video':
        if modality == 'Flow':
            raise ValueError(f'{item.path}: a Flow checkpoint needs frame folders of flow images, not a video')
        num_frames = video_num_frames(item.path, args.video_backend)
        return num_frames, args.fps or (video_fps(item.path) if args.window_spec else None)
    if modality == 'Audio':
        raise ValueError(f'{item.path}: an Audio checkpoint needs a video file with an audio track, not frames')
    # spec.image_tmpl is the template of this modality (the flow template for Flow)
    num_frames = count_frames(item.path, modality, spec.image_tmpl, spec.start_index)
    if num_frames == 0:
        first = frame_path(item.path, spec.image_tmpl, spec.start_index) if modality != 'Flow' else \
            flow_paths(item.path, os.path.basename(item.path), spec.image_tmpl, spec.start_index)[0]
        raise FrameReadError(f'{item.path}: no {modality} frames (expected {first}; --image_tmpl / --flow_tmpl)')
    return num_frames, args.fps


# ---------------------------------------------------------------------------------------------- models
@functools.lru_cache(maxsize=None)
def checkpoint_config(path):
    """(model config, class names or None) of a checkpoint, read once."""
    ckpt = load_checkpoint(path)
    return model_config_from_checkpoint(ckpt, path=path), checkpoint_class_names(ckpt)


@functools.lru_cache(maxsize=None)
def checkpoint_data(path):
    """What a checkpoint recorded about its data ({} when nothing)."""
    data = load_checkpoint(path).get('data')
    return data if isinstance(data, dict) else {}


def checkpoint_classes(path, category_names, option='--category_file'):
    """Class names: --category_file's (or --class_names'), else the checkpoint's `class_names` (converted
    files) or the class names main.py recorded (`data.categories`), else None (indices)."""
    if category_names is not None:
        return category_names, option
    names = checkpoint_config(path)[1]
    if names:
        return [str(n) for n in names], path
    return None, None


def model_spec(args, index, modality, data_format):
    """The DatasetInfo ModelUnderTest evaluates with: no lists, class count from --category_file / the
    checkpoint, frame templates and defaults from the registry's rules."""
    config = checkpoint_config(args.weights_list[index])[0]
    heads = config.get('heads')        # multi-head checkpoint: its heads give the class counts
    # Audio: the checkpoint's spectrogram settings; each video's own frame rate unless --audio_fps
    audio = recorded_audio(args, checkpoint_data(args.weights_list[index]), keep_fps=False)
    given = args.category_file or args.class_name_list
    return resolve_dataset(DATASET_NAME, modality, root_path='', train_list='', val_list='<command line>',
                           category_file=args.category_file, categories=args.class_name_list,
                           num_class=None if given or heads else (args.num_class or config['num_class']),
                           image_tmpl=args.image_tmpl, flow_tmpl=args.flow_tmpl, data_format=data_format,
                           heads=heads, audio=audio, box_tmpl=args.box_tmpl)


def build_records(items, modality, args, spec, failed):
    """Probe every input; unreadable ones go to `failed` (path -> message) and are skipped."""
    records = []
    for item in items:
        if item.path in failed:
            continue
        try:
            num_frames, fps = probe(item, modality, args, spec)
            if args.window_spec is None:
                records.append(VideoRecord(item.path, num_frames, 0))
                continue
            window = to_frames(args.window_spec, fps, item.path)
            stride = to_frames(args.stride_spec, fps, item.path)
            if window > num_frames:
                print(f'predict: --window {args.window} is {window} frames, longer than {item.path} '
                      f'({num_frames} frames): one window covers the whole video', file=sys.stderr)
            for start in window_starts(num_frames, window, stride):
                records.append(WindowRecord(item.path, num_frames, 0, start, min(window, num_frames)))
        except (FrameReadError, ValueError, OSError) as exc:
            failed[item.path] = str(exc)
            print(f'predict: cannot read {item.path}: {exc}', file=sys.stderr)
    return records


# ---------------------------------------------------------------------------------------------- outputs
def top_classes(probs, k, names, heads=None):
    """The k most probable classes; heads: the k best of every head in turn, each entry with its 'head',
    'class' its index in that head and 'name' '<head> <class>'."""
    if heads:
        ends = np.cumsum([size for _, size in heads])[:-1]
        return [dict(t, head=name, name=f"{name} {t['class']}")
                for (name, _), part in zip(heads, np.split(probs, ends)) for t in top_classes(part, k, None)]
    order = np.argsort(-probs, kind='stable')[:k]
    return [{'class': int(c), 'name': names[c] if names else str(int(c)), 'prob': float(probs[c])} for c in order]


def group_models(args, ctx, items, modalities, failed):
    """ModelUnderTests (one per checkpoint) over the readable items of one data format, or [] if none."""
    data_format = 'video' if items[0].kind == 'video' else 'frames'
    models = []
    for i, modality in enumerate(modalities):
        try:
            spec = model_spec(args, i, modality, data_format)
        except (OSError, ValueError) as exc:
            raise SystemExit(f'--weights {args.weights_list[i]}: {exc}') from None
        records = build_records(items, modality, args, spec, failed)
        if not records:
            return []
        if modality == 'Layout' and args.window_spec is not None:
            raise SystemExit(f'--weights {args.weights_list[i]}: --window does not apply to a Layout model '
                             '(it reads whole box files)')
        cls = WindowDataSet if args.window_spec is not None else VideoDataSet   # Layout: its own (test_models)
        models.append(ModelUnderTest(args, i, ctx, records=records, dataset_class=cls, spec=spec))
    for m in models[1:]:
        if m.dataset.video_ids != models[0].dataset.video_ids:
            raise SystemExit(f'{m.path}: reads other frames than {models[0].path} for the same inputs '
                             '(modalities with different frame counts cannot be windowed together)')
    return models


def run(args, ctx):
    """Collect the inputs, read each once (unreadable ones are reported and skipped: exit 1, or 2 when none is),
    run the model(s) over whole videos or windows, print the top-k and write --output / --plot /
    --save_features."""
    dtype = AMP_DTYPES[args.amp]
    items, errors, notes = collect_inputs(args.inputs, args.root_path)
    for note in notes if ctx.is_main else ():
        print(f'predict: {note}', file=sys.stderr)
    failed = {}   # each failure is printed once, when it is found
    for path, message in errors:
        failed[path] = message
        print(f'predict: cannot read {path}: {message}', file=sys.stderr)
    try:
        modalities = [checkpoint_config(w)[0]['modality'] for w in args.weights_list]
    except (OSError, RuntimeError, ValueError) as exc:
        raise SystemExit(f'--weights: {exc}') from None
    first_models, records, outputs = None, [], [[] for _ in modalities]
    for kind in ('video', 'frames'):
        group = [it for it in items if it.kind == kind]
        models = group_models(args, ctx, group, modalities, failed) if group else []
        if not models:
            continue
        if args.save_features:
            for m in models:
                feature_io.attach(m, args.per_segment)
        for out, m in zip(outputs, models):
            out.append(evaluate_model(m, args, ctx, dtype, "video" if args.window_spec is None else "window")[2])
        records += models[0].dataset.records
        first_models = first_models or models
    if first_models is None:
        print(f'predict: nothing to predict: {failures_line(failed)}', file=sys.stderr)
        return 2
    # Every group of one checkpoint has the same views per video: concatenate the groups.
    ids = [r.video_id for r in records]
    labels = np.full(len(ids), -1, dtype=np.int64)   # unknown
    results = [(ids, labels, np.concatenate(out)) for out in outputs]
    if args.save_features:
        results, features = split_feature_outputs(results, first_models, args.per_segment)
    coeffs = [m.coeff for m in first_models]
    heads = first_models[0].heads
    for m in first_models[1:]:
        if not same_heads(heads, m.heads):
            raise SystemExit(f'ensemble: {m.path} has the heads {heads_text(m.heads)}, {first_models[0].path} '
                             f'{heads_text(heads)}: they must have the same heads')
    fused = fused_scores([lg for _, _, lg in results], coeffs, softmax=args.softmax,
                         view_softmax=args.view_softmax, heads=heads)
    probs = score_probabilities(fused, coeffs, args.softmax or args.view_softmax, heads=heads)
    if not ctx.is_main:
        return 0
    protocols = [f'{os.path.basename(m.path)} [{m.modality}]: ' + protocol_text(
        m.num_segments, args.test_crops, m.num_clips, m.crop_size, args.full_res, len(ids), sampling_mode(args))
        for m in first_models]
    names, source = checkpoint_classes(args.weights_list[0], first_models[0].spec.categories,
                                       '--class_names' if args.class_name_list else '--category_file')
    if names is None:
        print(f'predict: no class names in {args.weights_list[0]}; printing class indices '
              '(give --category_file)', file=sys.stderr)
    if args.save_features:
        write_feature_files(args, first_models, ids, labels, results, features, protocols, names)
    report = build_report(args, records, probs, names, order=[it.path for it in items], heads=heads)
    print_report(report)
    if args.output:
        write_output(args.output, report, protocols, args, source)
    if args.plot:
        write_timeline_png(report, args.plot)
    if failed:
        print(f'predict: {failures_line(failed)}', file=sys.stderr)
    return 1 if failed else 0


def failures_line(failed):
    """The closing count of the inputs that could not be read (each was named when it failed)."""
    return f'{len(failed)} input{"s" if len(failed) != 1 else ""} could not be read (named above)'


def build_report(args, records, probs, names, order, heads=None):
    """-> [{'video', 'num_frames', 'top', 'windows': [...]}] per input in `order` (windows: frames, and
    seconds when the frame rate is known)."""
    videos = {}
    for r, p in zip(records, probs):
        entry = videos.setdefault(r.path, {'video': r.path, 'num_frames': r.num_frames, 'windows': [],
                                           'probs': []})
        entry['probs'].append(p)
        if isinstance(r, WindowRecord):
            entry['windows'].append({'start_frame': r.start + 1, 'end_frame': r.start + r.length,
                                     'top': top_classes(p, args.top_k, names, heads)})
    report = []
    for entry in videos.values():
        # A windowed video's overall prediction: the mean of its window probabilities.
        mean = np.mean(entry.pop('probs'), axis=0)
        entry['top'] = top_classes(mean, args.top_k, names, heads)
        if entry['windows']:
            fps = args.fps or (video_fps(entry['video']) if is_video(entry['video']) else None)
            if fps:
                entry['fps'] = fps
                for w in entry['windows']:
                    w['start_s'] = round((w['start_frame'] - 1) / fps, 3)
                    w['end_s'] = round(w['end_frame'] / fps, 3)
        else:
            del entry['windows']
        report.append(entry)
    rank = {path: i for i, path in enumerate(order)}
    return sorted(report, key=lambda e: rank[e['video']])


def print_report(report):
    """One line per video (top-k names and probabilities), then one per window."""
    for entry in report:
        top = '  '.join(f"{t['name']} {t['prob']:.3f}" for t in entry['top'])
        print(f"{entry['video']}: {top}")
        for w in entry.get('windows', []):
            when = f"{w['start_s']:.2f}-{w['end_s']:.2f} s" if 'start_s' in w else \
                f"frames {w['start_frame']}-{w['end_frame']}"
            print(f"    {when}: " + '  '.join(f"{t['name']} {t['prob']:.3f}" for t in w['top']))


def write_output(path, report, protocols, args, class_source):
    """--output: .json (the whole report with the protocol and class source) or .csv (one row per class
    ranked, per video or window), written atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_open(path, newline='') as f:
        if path.endswith('.json'):
            json.dump({'weights': args.weights_list, 'coeff': args.coeff_list, 'protocol': protocols,
                       'softmax': args.softmax, 'class_names_from': class_source, 'videos': report}, f, indent=2)
        else:
            w = csv.writer(f)
            w.writerow(['video', 'start_frame', 'end_frame', 'start_s', 'end_s', 'rank', 'class', 'name', 'prob'])
            for entry in report:
                rows = entry.get('windows') or [dict(entry, start_frame=1, end_frame=entry['num_frames'])]
                for row in rows:
                    for rank, t in enumerate(row['top'], 1):
                        w.writerow([entry['video'], row['start_frame'], row['end_frame'], row.get('start_s', ''),
                                    row.get('end_s', ''), rank, t['class'], t['name'], f"{t['prob']:.6f}"])


def main(args):
    """test_models.py's set-up (device, distributed) around this file's run()."""
    return test_models_main(args, run)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
