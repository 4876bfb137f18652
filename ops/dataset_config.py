"""Dataset registry: where each dataset's lists, frames and categories live, and its traits.

Every value can be overridden by the caller (the CLI exposes --root_path, --train_list, --val_list,
--category_file/--num_class, --image_tmpl, --flow_tmpl, --data_format), and an unregistered name works
when the overrides give everything that is needed. Paths may contain '{modality}', replaced by the
folder name of the modality's files ('RGB' for RGB and RGBDiff, which reads RGB frames; 'Flow'; 'Audio';
'Layout' for box files), so each modality of a mutual-learning run, a distillation or an ensemble can have its
own root and lists.
"""
import dataclasses
import os
from typing import Optional

from ops.audio import audio_settings
from ops.heads import check_heads, heads_text
from ops.modality import check_modality
from ops.toy import TOY_CLASSES, VIDEO_FPS, ensure_toy_dataset, ensure_toy_layout

DATA_FORMATS = ('frames', 'video', 'hdf5')

def check_data_format(data_format: str) -> None:
    if data_format not in DATA_FORMATS:
        raise ValueError(f'unknown data_format {data_format!r}; allowed: {", ".join(DATA_FORMATS)}')


def modality_folder(modality: str) -> str:
    """What '{modality}' in a path becomes: RGBDiff reads RGB frames, so it shares the RGB files."""
    check_modality(modality)
    if modality == 'Audio':
        return 'Audio'
    if modality == 'Layout':
        return 'Layout'
    return 'Flow' if modality == 'Flow' else 'RGB'


def fill_modality(path: Optional[str], modality: str) -> Optional[str]:
    """'data/mydata/{modality}' -> 'data/mydata/RGB' (None stays None)."""
    return None if path is None else path.replace('{modality}', modality_folder(modality))


@dataclasses.dataclass(frozen=True)
class Layout:
    """Root folder (or HDF5 file, may contain '{split}') and the two list files, relative to data_root."""
    root: str
    train_list: str
    val_list: str


def _entry(*, layouts, category_file=None, num_class=None, categories=None, image_tmpl='img_{:05d}.jpg',
           flow_tmpl='flow_{}_{:05d}.jpg', start_index=1, data_format='frames', flip=True,
           input_size=224, scale_size=256, train_defaults=None, csv_top5=False, flip_pairs=(),
           ila_pair_net='k400', ila_head='linear', heads=None, fps=None, box_tmpl='{}.json'):
    # layouts: data_format -> {'RGB' | 'Flow': Layout}; RGBDiff uses the RGB layout.
    # categories: class names known without reading a file (the generated toy set, so that parsing a
    # toy command line reads and writes nothing).
    # flip: horizontal flip in training when --flip auto; flip_pairs: classes swapped by a flip
    # (used whenever flipping is on); ila_pair_net: ILA's pair network for --ila_pair_net auto; ila_head:
    # ILA's classifier for --ila_head auto (text on Kinetics, as ILA's master branch).
    # heads: multi-head labels (ops/heads.py), one label column per head in the lists, num_class their total.
    # box_tmpl: Layout box file of a video (ops/layout.py), formatted with the list's video path.
    # fps: frame rate of the lists' frame numbers, where the Audio modality places its windows.
    return dict(heads=heads, layouts=layouts, category_file=category_file, num_class=num_class, categories=categories,
                image_tmpl=image_tmpl, flow_tmpl=flow_tmpl, start_index=start_index,
                data_format=data_format, flip=flip, input_size=input_size, scale_size=scale_size,
                train_defaults=dict(train_defaults or {}), csv_top5=csv_top5, flip_pairs=tuple(flip_pairs),
                ila_pair_net=ila_pair_net, ila_head=ila_head, fps=fps, box_tmpl=box_tmpl)


# Something-Something v1/v2: classes whose names say left/right (TDN/MSN ops/transforms.py,
# GroupRandomHorizontalFlip_sth); a mirrored clip takes the paired label.
SOMETHING_FLIP_PAIRS = ((86, 87), (93, 94), (166, 167))


def _split_lists(root, pattern):
    return Layout(root, pattern.format(split='train'), pattern.format(split='val'))


DATASETS = {
    'ucf101': _entry(
        category_file='UCF101/labels/classInd.txt',
        layouts={'frames': {
            'RGB': _split_lists('UCF101/jpg', 'UCF101/file_list/ucf101_rgb_{split}_split_1.txt'),
            'Flow': _split_lists('UCF101/jpg', 'UCF101/file_list/ucf101_flow_{split}_split_1.txt')}}),
    'hmdb51': _entry(
        num_class=51,
        layouts={'frames': {
            'RGB': _split_lists('HMDB51/images', 'HMDB51/splits/hmdb51_rgb_{split}_split_1.txt'),
            'Flow': _split_lists('HMDB51/images', 'HMDB51/splits/hmdb51_flow_{split}_split_1.txt')}}),
    'something': _entry(
        category_file='something/v1/category.txt', image_tmpl='{:05d}.jpg',
        # SSv1 flow: folder '{:06d}'.format(int(video)), files '{video:06d}-{x|y}_{idx:05d}.jpg'.
        flow_tmpl='{:06d}-{}_{:05d}.jpg', flip=False, flip_pairs=SOMETHING_FLIP_PAIRS, ila_pair_net='ssv2',
        layouts={'frames': {
            'RGB': _split_lists('something/v1/20bn-something-something-v1',
                                'something/v1/{split}_videofolder.txt'),
            'Flow': _split_lists('something/v1/20bn-something-something-v1-flow',
                                 'something/v1/{split}_videofolder_flow.txt')}}),
    'somethingv2': _entry(
        category_file='something/v2/category.txt', image_tmpl='{:06d}.jpg',
        # SSv2 flow release: one RGB image per step, R = x, G = y.
        flow_tmpl='{:06d}.jpg', flip=False, flip_pairs=SOMETHING_FLIP_PAIRS, ila_pair_net='ssv2',
        csv_top5=True,   # test_models --csv_file writes `vid;i1;...;i5` (the SSv2 submission format)
        layouts={'frames': {
            'RGB': _split_lists('something/v2/20bn-something-something-v2-frames',
                                'something/v2/{split}_videofolder.txt'),
            'Flow': _split_lists('something/v2/20bn-something-something-v2-flow',
                                 'something/v2/{split}_videofolder_flow.txt')}}),
    'jester': _entry(
        category_file='jester/category.txt', image_tmpl='{:05d}.jpg', flip=False,
        layouts={'frames': {
            'RGB': _split_lists('jester/20bn-jester-v1', 'jester/{split}_videofolder.txt')}}),
    'kinetics': _entry(
        num_class=400, ila_head='text',
        layouts={'frames': {
            'RGB': _split_lists('kinetics/images', 'kinetics/labels/{split}_videofolder.txt')}}),
    # EPIC-Kitchens action segments as frame folders, one list line `segment num_frames verb noun`
    # (ops/heads.py); the action is right when verb and noun are. Flow frames come in u/ v/ folders:
    # give their template with --flow_tmpl.
    'epic100': _entry(
        heads=(('verb', 97), ('noun', 300)), image_tmpl='frame_{:010d}.jpg',
        layouts={'frames': {
            'RGB': _split_lists('EPIC-KITCHENS-100/frames', 'EPIC-KITCHENS-100/lists/{split}_rgb.txt'),
            'Flow': _split_lists('EPIC-KITCHENS-100/flow', 'EPIC-KITCHENS-100/lists/{split}_flow.txt')}}),
    'epic55': _entry(
        heads=(('verb', 125), ('noun', 352)), image_tmpl='frame_{:010d}.jpg',
        layouts={'frames': {
            'RGB': _split_lists('EPIC-KITCHENS-55/frames', 'EPIC-KITCHENS-55/lists/{split}_rgb.txt'),
            'Flow': _split_lists('EPIC-KITCHENS-55/flow', 'EPIC-KITCHENS-55/lists/{split}_flow.txt')}}),
    'toy': _entry(
        categories=TOY_CLASSES, flip=False, input_size=64, scale_size=64, fps=VIDEO_FPS,
        # Short quickstart command: main.py's defaults for this dataset (any flag overrides them).
        train_defaults=dict(arch='resnet18', num_segments=8, batch_size=16, lr=2e-3, optimizer='adamw',
                            weight_decay=1e-4, epochs=3, lr_type='cos', warmup_epochs=0, dropout=0.5,
                            pretrain='none', no_partialbn=True, workers=2, eval_freq=1, clip_gradient=20.0,
                            layout_arch='stlt_tiny'),
        layouts={
            'frames': {'RGB': _split_lists('toy/frames', 'toy/{split}_rgb.txt'),
                       'Flow': _split_lists('toy/flow', 'toy/{split}_flow.txt'),
                       # Audio: a .wav per video (--audio_tmpl '{}.wav'), listed with the RGB frame counts
                       'Audio': _split_lists('toy/audio', 'toy/{split}_rgb.txt'),
                       # box files derived from the clips' trajectories (ops.toy.ensure_toy_layout)
                       'Layout': _split_lists('toy/boxes', 'toy/{split}_rgb.txt')},
            'video': {'RGB': _split_lists('toy/videos', 'toy/{split}_video.txt'),
                      'Audio': _split_lists('toy/videos', 'toy/{split}_video.txt')},
            # HDF5 stores reuse the frames lists (`vid num_frames label`); one file per split.
            'hdf5': {'RGB': _split_lists('toy/hdf5/{split}_rgb.h5', 'toy/{split}_rgb.txt'),
                     'Flow': _split_lists('toy/hdf5/{split}_flow.h5', 'toy/{split}_flow.txt'),
                     'Audio': _split_lists('toy/hdf5/{split}_audio.h5', 'toy/{split}_rgb.txt')}}),
}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    modality: str
    num_class: int
    categories: Optional[list]
    root_path: str            # training root (folder, or HDF5 file for data_format 'hdf5')
    train_list: str
    val_list: str
    image_tmpl: str           # template of this modality (flow_tmpl for Flow, box_tmpl for Layout)
    start_index: int
    data_format: str
    flip: bool
    input_size: int
    scale_size: int
    train_defaults: dict
    val_root_path: str = ''   # validation root; differs from root_path only for per-split HDF5 files
    csv_top5: bool = False    # --csv_file format: top-5 class indices instead of the top-1 name
    flip_pairs: tuple = ()    # (a, b) class pairs swapped when a training clip is mirrored
    ila_pair_net: str = 'k400'  # ILA pair network the reference uses on this dataset
    heads: Optional[tuple] = None  # multi-head labels ((name, classes), ...); num_class is their total
    audio: Optional[dict] = None  # Audio only: ops.audio.AudioSettings as a dict (fps, template included)
    ila_head: str = 'linear'    # ILA classifier the reference uses on this dataset
    category_file: Optional[str] = None  # the file the categories were read from, if any


def read_categories(path: str, option: str = '--category_file') -> list:
    if not os.path.isfile(path):
        raise FileNotFoundError(f'category file not found: {path} (set it with {option}, or give --num_class)')
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def read_class_names(path: str, option: str = '--category_file') -> list:
    """Class names that a text classifier encodes, read strictly: one per line, as read_categories reads
    them, but a blank line before the last name (an empty name: the names after it would shift) or a
    repeated name raises naming the file and line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{option} {path}: no such file')
    names, seen, blank = [], {}, None
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            name = line.strip()
            if not name:
                blank = blank or lineno
                continue
            if blank is not None:
                raise ValueError(f'{path}:{blank}: empty class name (blank line before the name on line '
                                 f'{lineno}; {option} holds one class name per line)')
            if name in seen:
                raise ValueError(f'{path}:{lineno}: class name {name!r} repeats line {seen[name]}')
            seen[name] = lineno
            names.append(name)
    if not names:
        raise ValueError(f'{option} {path}: no class names')
    return names


def parse_class_names(text: str, option: str = '--class_names') -> list:
    """'open door,close door' -> ['open door', 'close door']; an empty or repeated name raises naming it."""
    names = [n.strip() for n in text.split(',')]
    for i, name in enumerate(names, 1):
        if not name:
            raise ValueError(f'{option} {text!r}: name {i} of {len(names)} is empty')
        if name in names[:i - 1]:
            raise ValueError(f'{option} {text!r}: name {i} {name!r} repeats name {names.index(name) + 1}')
    return names


def resolve_dataset(name: str, modality: str, *, data_root: str = 'data', root_path: Optional[str] = None,
                    train_list: Optional[str] = None, val_list: Optional[str] = None,
                    category_file: Optional[str] = None, num_class: Optional[int] = None,
                    image_tmpl: Optional[str] = None, flow_tmpl: Optional[str] = None,
                    data_format: Optional[str] = None, categories: Optional[list] = None,
                    splits: tuple = ('train', 'val'), heads=None, audio: Optional[dict] = None,
                    box_tmpl: Optional[str] = None) -> DatasetInfo:
    """Registry values joined with data_root; explicit arguments win and are used as given.

    A root_path containing '{split}' is formatted with 'train' and 'val' (per-split HDF5 files); '{modality}'
    in root_path and the lists becomes the modality's folder name (see modality_folder). `heads`
    (('verb', 97), ...) or the registry's heads make a multi-head dataset: num_class is their total
    and class names are not read (--num_class / --category_file are refused with them). `categories`
    (class names, e.g. recorded in a checkpoint) stands in for a category file, as do the class names of
    a registry entry that has them (toy). `splits`: the lists the caller needs (evaluation needs only
    'val'; a missing train list is then None). `audio`: AudioSettings fields (None values keep the
    default; fps defaults to the registry's), used by the Audio modality only.
    """
    check_modality(modality)
    entry = DATASETS.get(name)
    registered = entry is not None
    if entry is None:
        entry = _entry(layouts={})
    fmt = data_format or entry['data_format']
    check_data_format(fmt)
    layout = entry['layouts'].get(fmt, {}).get(modality_folder(modality))

    def from_registry(value):
        return None if value is None else os.path.join(data_root, value)

    root = root_path if root_path is not None else from_registry(layout and layout.root)
    train = train_list if train_list is not None else from_registry(layout and layout.train_list)
    val = val_list if val_list is not None else from_registry(layout and layout.val_list)
    root, train, val = (fill_modality(p, modality) for p in (root, train, val))
    heads = heads if heads is not None else entry['heads']
    if heads:
        heads = check_heads(heads)
        if category_file is not None or num_class is not None:
            raise ValueError(f'dataset {name!r} has the heads {heads_text(heads)}: their class counts replace '
                             '--num_class / --category_file')
        num_class = sum(size for _, size in heads)
        categories = category_file = None
    if categories is None and category_file is None and num_class is None and entry['categories'] and not heads:
        categories = list(entry['categories'])
    if categories is not None and category_file is None and num_class is None:
        num_class = len(categories)
    else:
        categories = None
    cat_file = category_file
    if cat_file is None and num_class is None and entry['category_file'] is not None:
        cat_file = os.path.join(data_root, entry['category_file'])
    if num_class is None and cat_file is None:
        num_class = entry['num_class']

    needed = (('--root_path', root, True), ('--train_list', train, 'train' in splits),
              ('--val_list', val, 'val' in splits), ('--category_file or --num_class', cat_file or num_class, True))
    missing = [opt for opt, value, need in needed if need and value is None]
    if missing:
        if registered:
            where = f'dataset {name!r} has no registered {modality} layout for data_format {fmt!r}'
        else:
            where = f'dataset {name!r} is not registered (registered: {", ".join(sorted(DATASETS))})'
        raise ValueError(f'{where}; give {", ".join(missing)}')

    if num_class is None:
        categories = read_categories(cat_file)
        num_class = len(categories)
    num_class = int(num_class)
    if num_class < 1:
        raise ValueError(f'num_class must be >= 1, got {num_class}')
    audio_info = None
    if modality == 'Audio':
        given = {k: v for k, v in (audio or {}).items() if v is not None}
        audio_info = audio_settings(given, fps=given.get('fps', entry['fps'])).as_dict()
    if modality == 'Flow':
        tmpl = flow_tmpl if flow_tmpl is not None else entry['flow_tmpl']
    elif modality == 'Audio':
        tmpl = audio_info['tmpl']
    elif modality == 'Layout':
        tmpl = box_tmpl if box_tmpl is not None else entry['box_tmpl']
    else:
        tmpl = image_tmpl if image_tmpl is not None else entry['image_tmpl']
    return DatasetInfo(
        name=name, modality=modality, num_class=num_class, categories=categories,
        root_path=root.replace('{split}', 'train'), train_list=train, val_list=val, image_tmpl=tmpl,
        start_index=entry['start_index'], data_format=fmt, flip=entry['flip'],
        input_size=entry['input_size'], scale_size=entry['scale_size'],
        train_defaults=dict(entry['train_defaults']), val_root_path=root.replace('{split}', 'val'),
        csv_top5=entry['csv_top5'], flip_pairs=entry['flip_pairs'], ila_pair_net=entry['ila_pair_net'],
        heads=heads or None, audio=audio_info,
        ila_head=entry['ila_head'], category_file=cat_file if categories is not None and cat_file else None)


def ensure_builtin_data(name: str, data_root: str, root_path: Optional[str] = None,
                        modalities: tuple = ()) -> None:
    """Generate the built-in toy dataset under data_root on first use (not when root_path points at the
    data). Called when a run starts, never while parsing: the registry knows the toy classes and defaults
    without its files. Atomic, and safe when several ranks race (ops.toy.ensure_toy_dataset). Its box
    files are derived when a Layout modality is among `modalities` (ops.toy.ensure_toy_layout)."""
    if name == 'toy' and root_path is None:
        ensure_toy_dataset(data_root)
        if 'Layout' in modalities:
            ensure_toy_layout(data_root)


def data_record(info: DatasetInfo) -> dict:
    """What a checkpoint records about its data, so evaluation can reuse it without repeating flags:
    absolute paths (evaluation may run from another folder), templates, format and class names."""
    return dict(dataset=info.name, modality=info.modality, data_format=info.data_format,
                root_path=os.path.abspath(info.val_root_path), val_list=os.path.abspath(info.val_list),
                image_tmpl=info.image_tmpl, num_class=info.num_class,
                categories=list(info.categories) if info.categories is not None else None,
                **({'heads': [list(h) for h in info.heads]} if info.heads else {}),
                **({'audio': dict(info.audio)} if info.audio is not None else {}))


def list_lines(path):
    """Yield (line number, stripped text, whitespace-split fields) of a list file's data lines.

    Blank lines and lines starting with '#' are skipped: the one comment rule of every list this
    project reads or writes (training/test lists, extraction and packing inputs)."""
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            text = line.strip()
            if text and not text.startswith('#'):
                yield lineno, text, text.split()
