"""Official annotation files -> category.txt and train/val list files (frames or video format).

    python scripts/build_file_list.py somethingv2 --labels something-something-v2-labels.json \
        --train something-something-v2-train.json --val something-something-v2-validation.json \
        --frames_root data/something/v2/20bn-something-something-v2-frames --out_dir data/something/v2
    python scripts/build_file_list.py something --labels something-something-v1-labels.csv \
        --train something-something-v1-train.csv --val something-something-v1-validation.csv ...
    python scripts/build_file_list.py kinetics --train kinetics_train.csv --val kinetics_val.csv \
        --data_format video --out_dir data/kinetics/labels
    python scripts/build_file_list.py ucf101 --split_dir ucfTrainTestlist --split 1 --frames_root ...
    python scripts/build_file_list.py hmdb51 --split_dir testTrainMulti_7030_splits --split 1 --frames_root ...
    python scripts/build_file_list.py folders --root data/mydata/videos --frames_root data/mydata/RGB \
        --flow_root data/mydata/Flow --out_dir data/mydata/lists --val_ratio 0.2 --seed 0

`folders` (your own data): --root holds one sub-folder per class with videos (or frame folders) in it;
it writes category.txt (the sorted class folder names) and stratified train/val lists, named for the
{modality} placeholder: train_video.txt/val_video.txt (`<class>/<file> label`, when --root holds
videos), train_RGB.txt/val_RGB.txt (`<class>/<video> num_frames label`, counted under --frames_root, or
--root when it holds frame folders) and train_Flow.txt/val_Flow.txt (flow steps counted under
--flow_root). Every count is read from disk. The validation share of each class is drawn with --seed
(the same seed gives byte-identical lists), or comes from a --val_dir tree of the same layout.

Frames lists (`<vid> <num_frames> <label>`) take the frame count from --frames_root/<vid> (files
matching --tmpl; for Flow the x files of 'flow_{}_{:05d}.jpg') or from a --counts file (`vid
num_frames` lines, as written by extract_frames.py). Video lists are `<relative video path> <label>`.
Videos without frames (or, with --video_root, without a file) are left out and counted. Category
order: SSv2 the index order of the labels json; SSv1 the sorted labels; Kinetics the sorted labels of
the train csv; UCF101 classInd.txt; HMDB51 the sorted class names of the split files.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import collections  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402

from ops.dataset_config import list_lines  # noqa: E402
from ops.utils import HelpFormatter  # noqa: E402
from ops.video_io import VIDEO_EXTENSIONS, template_fields  # noqa: E402
from scripts.extract_frames import id_has_whitespace, numbered_files, shortened, video_id, write_list  # noqa: E402

FORMATS = ('somethingv2', 'something', 'kinetics', 'ucf101', 'hmdb51', 'folders')
LIST_FORMATS = ('frames', 'video')
LIST_MODALITIES = ('RGB', 'Flow')
SPLITS = ('train', 'val')
# Frame template each dataset's frames are usually extracted with (TSM dataset_config).
DEFAULT_TMPL = {'somethingv2': '{:06d}.jpg', 'something': '{:05d}.jpg', 'kinetics': 'img_{:05d}.jpg',
                'ucf101': 'img_{:05d}.jpg', 'hmdb51': 'img_{:05d}.jpg'}


def _fail(path, where, message):
    raise ValueError(f'{path}{":" + str(where) if where else ""}: {message}')


# ---------------------------------------------------------------------------------------------------
# Annotation parsers: each returns (categories, {split: [(vid, label, relative video path)]})

def parse_somethingv2(args):
    with open(args.labels) as f:
        label_map = json.load(f)  # {"Approaching something with your camera": "0", ...}
    categories = [name for name, _ in sorted(label_map.items(), key=lambda kv: int(kv[1]))]
    index = {name: int(i) for name, i in label_map.items()}
    splits = {}
    for split, path in (('train', args.train), ('val', args.val)):
        with open(path) as f:
            items = json.load(f)
        rows = []
        for item in items:
            # The class is the template with the placeholders' brackets removed.
            name = item['template'].replace('[', '').replace(']', '')
            if name not in index:
                _fail(path, f'id {item["id"]}', f'template {item["template"]!r} is not in {args.labels}')
            rows.append((str(item['id']), index[name], f'{item["id"]}.webm'))
        splits[split] = rows
    return categories, splits


def _read_lines(path):
    with open(path) as f:
        return [(i, line.strip()) for i, line in enumerate(f, 1) if line.strip()]


def parse_something(args):
    categories = sorted(text for _, text in _read_lines(args.labels))
    index = {name: i for i, name in enumerate(categories)}
    splits = {}
    for split, path in (('train', args.train), ('val', args.val)):
        rows = []
        for lineno, text in _read_lines(path):
            vid, sep, name = text.partition(';')
            if not sep or name not in index:
                _fail(path, lineno, f'expected "id;label" with a label of {args.labels}, got {text!r}')
            rows.append((vid, index[name], vid + '.webm'))
        splits[split] = rows
    return categories, splits


def parse_kinetics(args):
    def read(path):
        with open(path, newline='') as f:
            reader = csv.DictReader(f)
            missing = {'label', 'youtube_id', 'time_start', 'time_end'} - set(reader.fieldnames or ())
            if missing:
                _fail(path, 1, f'header lacks {sorted(missing)}; expected '
                      'label,youtube_id,time_start,time_end,split')
            return [(reader.line_num, row) for row in reader]
    rows_by_split = {'train': read(args.train), 'val': read(args.val)}
    categories = sorted({row['label'] for _, row in rows_by_split['train']})
    index = {name: i for i, name in enumerate(categories)}
    splits = {}
    for split, rows in rows_by_split.items():
        path = args.train if split == 'train' else args.val
        out = []
        for lineno, row in rows:
            if row['label'] not in index:
                _fail(path, lineno, f'label {row["label"]!r} does not occur in {args.train}')
            try:
                fields = dict(row, label_=row['label'].replace(' ', '_'),
                              time_start=int(float(row['time_start'])), time_end=int(float(row['time_end'])))
            except ValueError:
                _fail(path, lineno, f'time_start/time_end must be numbers, got {row!r}')
            vid = args.id_format.format(**fields)
            out.append((vid, index[row['label']], vid + '.mp4'))
        splits[split] = out
    return categories, splits


def _split_vid(rel, keep_class_folder):
    stem = os.path.splitext(rel)[0]
    return stem if keep_class_folder else os.path.basename(stem)


def parse_ucf101(args):
    class_ind = os.path.join(args.split_dir, 'classInd.txt')
    categories = []
    for lineno, text in _read_lines(class_ind):
        parts = text.split()
        if len(parts) != 2 or int(parts[0]) != len(categories) + 1:
            _fail(class_ind, lineno, f'expected "{len(categories) + 1} ClassName", got {text!r}')
        categories.append(parts[1])
    index = {name: i for i, name in enumerate(categories)}
    splits = {}
    for split, name in (('train', f'trainlist{args.split:02d}.txt'), ('val', f'testlist{args.split:02d}.txt')):
        path = os.path.join(args.split_dir, name)
        rows = []
        for lineno, text in _read_lines(path):
            rel = text.split()[0]  # "Class/v_Class_g08_c01.avi [label]"
            cls = rel.split('/')[0]
            if cls not in index:
                _fail(path, lineno, f'class folder {cls!r} not in {class_ind}')
            rows.append((_split_vid(rel, args.keep_class_folder), index[cls], rel))
        splits[split] = rows
    return categories, splits


def parse_hmdb51(args):
    pattern = re.compile(r'(.+)_test_split' + str(args.split) + r'\.txt\Z')
    files = sorted(n for n in os.listdir(args.split_dir) if pattern.match(n))
    if not files:
        raise FileNotFoundError(f'no <class>_test_split{args.split}.txt files in {args.split_dir}')
    categories = [pattern.match(n).group(1) for n in files]
    splits = {'train': [], 'val': []}
    tags = {'1': 'train', '2': 'val'}  # 0: not used in this split
    for label, (cls, name) in enumerate(zip(categories, files)):
        path = os.path.join(args.split_dir, name)
        for lineno, text in _read_lines(path):
            parts = text.split()
            if len(parts) != 2 or parts[1] not in ('0', '1', '2'):
                _fail(path, lineno, f'expected "video.avi 0|1|2", got {text!r}')
            if parts[1] in tags:
                rel = f'{cls}/{parts[0]}'
                splits[tags[parts[1]]].append((_split_vid(rel, args.keep_class_folder), label, rel))
    return categories, splits


PARSERS = {'somethingv2': parse_somethingv2, 'something': parse_something, 'kinetics': parse_kinetics,
           'ucf101': parse_ucf101, 'hmdb51': parse_hmdb51}


# ---------------------------------------------------------------------------------------------------

def default_list_names(fmt, modality, data_format, split_number):
    """Default (train, val) list file names, matching the dataset registry's names."""
    if fmt in ('ucf101', 'hmdb51'):
        kind = 'video' if data_format == 'video' else modality.lower()
        return tuple(f'{fmt}_{kind}_{s}_split_{split_number}.txt' for s in SPLITS)
    if data_format == 'video':
        return 'train_video.txt', 'val_video.txt'
    suffix = '_flow' if modality == 'Flow' else ''
    return f'train_videofolder{suffix}.txt', f'val_videofolder{suffix}.txt'


def read_counts(path):
    counts = {}
    for lineno, text, parts in list_lines(path):
        if len(parts) < 2 or not parts[1].isdigit():
            _fail(path, lineno, f'expected "vid num_frames [label]", got {text!r}')
        counts[parts[0]] = int(parts[1])
    return counts


def count_frames(frames_root, vid, tmpl):
    fixed = ('x',) if template_fields(tmpl) == 2 else ()
    return len(numbered_files(os.path.join(frames_root, vid), tmpl, fixed))


def build_rows(rows, args, tmpl, counts):
    """List rows for one split and the videos left out."""
    out, skipped = [], []
    for vid, label, rel in rows:
        if args.data_format == 'video':
            if args.video_ext:
                rel = os.path.splitext(rel)[0] + args.video_ext
            if args.video_root and not os.path.isfile(os.path.join(args.video_root, rel)):
                skipped.append(rel)
                continue
            out.append((rel, label))
            continue
        n = counts.get(vid, 0) if counts is not None else count_frames(args.frames_root, vid, tmpl)
        if n <= 0:
            skipped.append(vid)
            continue
        out.append((vid, n, label))
    return out, skipped


# ---------------------------------------------------------------------------------------------------
# Class folders (your own data)

def scan_class_folders(root, what='--root'):
    """{class name: {video id: relative video path or None (a frame folder)}} of a class-folder tree.

    Items are the video files of each class folder; a tree without video files is a tree of frame
    folders. Ids are '<class>/<name without extension>'. Hidden names (starting with '.') are skipped."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f'{what} {root}: no such folder')
    # hidden entries (.ipynb_checkpoints, .DS_Store, done-markers) are not classes or videos
    classes = sorted(n for n in os.listdir(root) if not n.startswith('.') and os.path.isdir(os.path.join(root, n)))
    if not classes:
        raise ValueError(f'{what} {root}: no class sub-folders (expected {root}/<class>/<video>)')
    entries = {c: sorted(n for n in os.listdir(os.path.join(root, c)) if not n.startswith('.')) for c in classes}
    has_videos = any(os.path.splitext(n)[1].lower() in VIDEO_EXTENSIONS for names in entries.values()
                     for n in names)
    tree = {}
    for cls, names in entries.items():
        items = {}
        for name in names:
            full = os.path.join(root, cls, name)
            if has_videos and os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS and os.path.isfile(full):
                rel = f'{cls}/{name}'
            elif not has_videos and os.path.isdir(full):
                rel = None
            else:
                continue
            vid = video_id(f'{cls}/{name}') if rel else f'{cls}/{name}'
            if vid in items:
                raise ValueError(f'{what} {root}: {items[vid]} and {rel} have the same video id {vid!r}')
            items[vid] = rel
        if not items:
            kind = 'video files' if has_videos else 'frame folders'
            raise ValueError(f'{what} {root}: class folder {cls!r} holds no {kind}; add some or remove it')
        tree[cls] = items
    spaced = [v for items in tree.values() for v in items if id_has_whitespace(v)]
    if spaced:
        raise ValueError(f'{what} {root}: names with white space cannot go into a list (its columns are '
                         f'white-space separated); rename: {shortened(spaced)}')
    return tree


def repeated_videos(root, tree):
    """Items with the same name and the same size (bytes of a video file, files of a frame folder) in
    several classes: most likely one video copied into two classes."""
    def size(vid, rel):
        full = os.path.join(root, rel or vid)
        return os.path.getsize(full) if rel else len(os.listdir(full))
    seen = collections.defaultdict(list)
    for items in tree.values():
        for vid, rel in items.items():
            seen[(os.path.basename(rel or vid), size(vid, rel))].append(rel or vid)
    return [' and '.join(paths) for paths in seen.values() if len(paths) > 1]


def split_folders(tree, val_ratio, seed):
    """Stratified split: {class: {vid: rel}} -> (train, val) lists of (class, vid, rel), sorted."""
    train, val = [], []
    for cls, items in tree.items():
        vids = sorted(items)
        if len(vids) < 2:
            raise ValueError(f'class {cls!r} has {len(vids)} video: it cannot be split into train and val '
                             f'(add videos to it, or give a --val_dir tree)')
        n_val = min(len(vids) - 1, max(1, round(len(vids) * val_ratio)))
        chosen = set(random.Random(f'{seed}/{cls}').sample(vids, n_val))
        for vid in vids:
            (val if vid in chosen else train).append((cls, vid, items[vid]))
    return train, val


def _counts(rows, frames_root, tmpl, what):
    counts = {vid: count_frames(frames_root, vid, tmpl) for _, vid, _ in rows}
    missing = [vid for vid, n in counts.items() if n == 0]
    if missing:
        raise ValueError(f'{len(missing)} videos have no files matching {tmpl!r} under {what} {frames_root}: '
                         f'{shortened(missing)} (extract them first, or remove the videos)')
    return counts


def build_from_folders(args):
    """The `folders` subcommand: category.txt and train/val lists of every available format."""
    tree = scan_class_folders(args.root)
    categories = list(tree)
    label = {c: i for i, c in enumerate(categories)}
    if args.val_dir:
        val_tree = scan_class_folders(args.val_dir, '--val_dir')
        unknown = sorted(set(val_tree) - set(tree))
        if unknown:
            raise ValueError(f'--val_dir {args.val_dir}: classes not in --root: {shortened(unknown)}')
        both = sorted({v for items in tree.values() for v in items} &
                      {v for items in val_tree.values() for v in items})
        if both:
            raise ValueError(f'videos in both --root and --val_dir (train/val leak): {shortened(both)}')
        splits = {'train': [(c, v, r) for c, items in tree.items() for v, r in sorted(items.items())],
                  'val': [(c, v, r if r is None else os.path.relpath(os.path.join(args.val_dir, r), args.root))
                          for c, items in val_tree.items() for v, r in sorted(items.items())]}
    else:
        splits = dict(zip(SPLITS, split_folders(tree, args.val_ratio, args.seed)))
    repeated = repeated_videos(args.root, tree)
    if repeated:
        print(f'warning: the same video in several classes (same name and size; its label is ambiguous): '
              f'{shortened(repeated)}', file=sys.stderr)
    is_video_tree = any(r is not None for items in tree.values() for r in items.values())
    if args.val_dir and not is_video_tree and not args.frames_root:
        raise ValueError('--val_dir with frame folders: give --frames_root, the one folder holding the '
                         'train and the val frame folders (<class>/<video>), so one root serves both lists')
    frames_root = args.frames_root or (None if is_video_tree else args.root)
    outputs = {}   # file name -> {split: rows}
    if is_video_tree:
        outputs['video'] = {s: [(rel, label[c]) for c, _, rel in rows] for s, rows in splits.items()}
    for kind, root, tmpl, option in (('RGB', frames_root, args.tmpl, '--frames_root'),
                                     ('Flow', args.flow_root, args.flow_tmpl, '--flow_root')):
        if root:
            outputs[kind] = {}
            for split, rows in splits.items():
                counts = _counts(rows, root, tmpl, option)
                outputs[kind][split] = [(vid, counts[vid], label[c]) for c, vid, _ in rows]
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, 'category.txt'), 'w') as f:
        f.writelines(name + '\n' for name in categories)
    for kind, by_split in outputs.items():
        for split, rows in by_split.items():
            path = os.path.join(args.out_dir, f'{split}_{kind}.txt')
            write_list(path, rows)
            print(f'{split} {kind}: {len(rows)} videos -> {path}')
    print(f'{len(categories)} classes -> {os.path.join(args.out_dir, "category.txt")}')
    return 0


def get_args_parser():
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group('output')
    g.add_argument('--out_dir', required=True, help='folder for category.txt and the lists')
    g.add_argument('--data_format', choices=LIST_FORMATS, default='frames',
                   help='frames: "vid num_frames label"; video: "path label"')
    g.add_argument('--modality', choices=LIST_MODALITIES, default='RGB',
                   help='Flow: count flow frames and name the lists *_flow*')
    g.add_argument('--frames_root', help='root of the frame folders (frame counts)')
    g.add_argument('--counts', help='"vid num_frames" file instead of counting under --frames_root')
    g.add_argument('--tmpl', help='file template to count (default: the dataset\'s usual RGB template; '
                   'flow_{}_{:05d}.jpg for Flow)')
    g.add_argument('--video_root', help='video format: leave out videos missing under this folder')
    g.add_argument('--video_ext', help='video format: replace the extension (e.g. .mp4)')
    g.add_argument('--train_out', help='train list name (default: the registry name)')
    g.add_argument('--val_out', help='val list name (default: the registry name)')
    p = argparse.ArgumentParser(
        description='Build category.txt and train/val list files from official annotations.')
    sub = p.add_subparsers(dest='format', required=True, metavar='FORMAT',
                           help='one of ' + ', '.join(FORMATS))
    fmt = HelpFormatter
    s = sub.add_parser('folders', formatter_class=fmt,
                       help='your own data: one sub-folder per class, holding videos or frame folders')
    s.add_argument('--root', required=True, help='<root>/<class>/<video file or frame folder>')
    s.add_argument('--out_dir', required=True,
                   help='writes category.txt and {train,val}_{video,RGB,Flow}.txt (the formats available)')
    s.add_argument('--frames_root', help='RGB frame folders <frames_root>/<class>/<video>/ to count '
                   '(default: --root when it holds frame folders)')
    s.add_argument('--flow_root', help='flow folders <flow_root>/<class>/<video>/ to count (flow lists)')
    s.add_argument('--tmpl', default='img_{:05d}.jpg', help='RGB frame file template')
    s.add_argument('--flow_tmpl', default='flow_{}_{:05d}.jpg', help='flow file template (x files counted)')
    s.add_argument('--val_ratio', type=float, default=0.2, help='share of each class that goes to val')
    s.add_argument('--seed', type=int, default=0, help='seed of the train/val draw')
    s.add_argument('--val_dir', help='validation videos in a tree of the same layout (instead of '
                   '--val_ratio); video-list paths stay relative to --root')
    s = sub.add_parser('somethingv2', parents=[common], formatter_class=fmt,
                       help='Something-Something v2 (json annotations)')
    s.add_argument('--labels', required=True, help='something-something-v2-labels.json')
    s.add_argument('--train', required=True, help='something-something-v2-train.json')
    s.add_argument('--val', required=True, help='something-something-v2-validation.json')
    s = sub.add_parser('something', parents=[common], formatter_class=fmt,
                       help='Something-Something v1 (csv "id;label")')
    s.add_argument('--labels', required=True, help='something-something-v1-labels.csv')
    s.add_argument('--train', required=True, help='something-something-v1-train.csv')
    s.add_argument('--val', required=True, help='something-something-v1-validation.csv')
    s = sub.add_parser('kinetics', parents=[common], formatter_class=fmt,
                       help='Kinetics (csv label,youtube_id,time_start,time_end,split)')
    s.add_argument('--train', required=True, help='train csv')
    s.add_argument('--val', required=True, help='validation csv')
    s.add_argument('--id_format', default='{youtube_id}_{time_start:06d}_{time_end:06d}',
                   help='video id from csv fields (label, label_ = label with _ for spaces, youtube_id, '
                        'time_start, time_end), e.g. "{label_}/{youtube_id}_{time_start:06d}_{time_end:06d}"')
    for name, what in (('ucf101', 'UCF101 (classInd.txt, trainlist0k.txt, testlist0k.txt)'),
                       ('hmdb51', 'HMDB51 (<class>_test_splitk.txt with 0/1/2 tags)')):
        s = sub.add_parser(name, parents=[common], formatter_class=fmt, help=what)
        s.add_argument('--split_dir', required=True, help='folder of the official split files')
        s.add_argument('--split', type=int, choices=(1, 2, 3), default=1)
        s.add_argument('--keep_class_folder', action='store_true',
                       help='frames ids "Class/video" instead of TSM\'s flat "video"')
    return p


def main(argv=None):
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.format == 'folders':
        if not 0 < args.val_ratio < 1:
            parser.error(f'--val_ratio must be in (0, 1), got {args.val_ratio}')
        for option, tmpl, fields in (('--tmpl', args.tmpl, (1,)), ('--flow_tmpl', args.flow_tmpl, (1, 2))):
            if template_fields(tmpl) not in fields:
                parser.error(f'{option} {tmpl!r}: need {" or ".join(map(str, fields))} field(s)')
        try:
            return build_from_folders(args)
        except (OSError, ValueError) as err:
            print(f'error: {err}', file=sys.stderr)
            return 1
    if args.data_format == 'frames' and bool(args.frames_root) == bool(args.counts):
        parser.error('frames lists need exactly one of --frames_root and --counts')
    tmpl = args.tmpl or ('flow_{}_{:05d}.jpg' if args.modality == 'Flow' else DEFAULT_TMPL[args.format])
    if template_fields(tmpl) not in (1, 2):
        parser.error(f'--tmpl {tmpl!r}: need one field (frame number) or two (x/y, frame number)')
    try:
        categories, splits = PARSERS[args.format](args)
        counts = read_counts(args.counts) if args.counts else None
    except (OSError, ValueError, KeyError) as err:
        print(f'error: {type(err).__name__}: {err}', file=sys.stderr)
        return 1
    names = default_list_names(args.format, args.modality, args.data_format, getattr(args, 'split', 1))
    outs = {'train': args.train_out or names[0], 'val': args.val_out or names[1]}
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, 'category.txt'), 'w') as f:
        f.writelines(name + '\n' for name in categories)
    for split in SPLITS:
        rows, skipped = build_rows(splits[split], args, tmpl, counts)
        path = os.path.join(args.out_dir, outs[split])
        write_list(path, rows)
        print(f'{split}: {len(rows)} of {len(splits[split])} videos -> {path}')
        if skipped:
            shown = ', '.join(skipped[:5]) + (', ...' if len(skipped) > 5 else '')
            print(f'{split}: left out {len(skipped)} videos without frames/files: {shown}', file=sys.stderr)
    print(f'{len(categories)} classes -> {os.path.join(args.out_dir, "category.txt")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
