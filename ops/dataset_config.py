"""Dataset registry: where each dataset's lists, frames and categories live, and its traits.

Every value can be overridden by the caller (the CLI exposes --root_path, --train_list, --val_list,
--category_file/--num_class, --image_tmpl, --flow_tmpl, --data_format), and an unregistered name works
when the overrides give everything that is needed. Paths may contain '{modality}', replaced by the
folder name of the modality's files ('RGB' for RGB and RGBDiff, which reads RGB frames; 'Flow'; 'Layout'
for box files), so each modality of a mutual-learning run, a distillation or an ensemble can have its own
root and lists.
"""
import dataclasses
import os
import string
from typing import Optional

from ops.modality import check_modality
from ops.toy import TOY_CLASSES, ensure_toy_dataset, ensure_toy_layout

DATA_FORMATS = ('frames', 'video', 'hdf5')

def check_data_format(data_format: str) -> None:
    if data_format not in DATA_FORMATS:
        raise ValueError(f'unknown data_format {data_format!r}; allowed: {", ".join(DATA_FORMATS)}')


def modality_folder(modality: str) -> str:
    """What '{modality}' in a path becomes: RGBDiff reads RGB frames, so it shares the RGB files."""
    check_modality(modality)
    if modality == 'Layout':
        return 'Layout'
    return 'Flow' if modality == 'Flow' else 'RGB'


def fill_modality(path: Optional[str], modality: str) -> Optional[str]:
    """'data/mydata/{modality}' -> 'data/mydata/RGB' (None stays None)."""
    return None if path is None else path.replace('{modality}', modality_folder(modality))


def template_fields(tmpl: str) -> int:
    """Number of replacement fields in a file-name template ('flow_{}_{:05d}.jpg' -> 2)."""
    return sum(1 for _, field, _, _ in string.Formatter().parse(tmpl) if field is not None)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Root folder (or HDF5 file, may contain '{split}') and the two list files, relative to data_root."""
    root: str
    train_list: str
    val_list: str


def _entry(*, layouts, category_file=None, num_class=None, categories=None, image_tmpl='img_{:05d}.jpg',
           flow_tmpl='flow_{}_{:05d}.jpg', start_index=1, data_format='frames', flip=True,
           input_size=224, scale_size=256, train_defaults=None, csv_top5=False, flip_pairs=(),
           ila_pair_net='k400', box_tmpl='{}.json'):
    # layouts: data_format -> {'RGB' | 'Flow': Layout}; RGBDiff uses the RGB layout.
    # categories: class names known without reading a file (the generated toy set, so that parsing a
    # toy command line reads and writes nothing).
    # flip: horizontal flip in training when --flip auto; flip_pairs: classes swapped by a flip
    # (used whenever flipping is on); ila_pair_net: ILA's pair network for --ila_pair_net auto.
    # box_tmpl: Layout box file of a video (ops/layout.py), formatted with the list's video path.
    return dict(layouts=layouts, category_file=category_file, num_class=num_class, categories=categories,
                image_tmpl=image_tmpl, flow_tmpl=flow_tmpl, start_index=start_index,
                data_format=data_format, flip=flip, input_size=input_size, scale_size=scale_size,
                train_defaults=dict(train_defaults or {}), csv_top5=csv_top5, flip_pairs=tuple(flip_pairs),
                ila_pair_net=ila_pair_net, box_tmpl=box_tmpl)


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
        num_class=400,
        layouts={'frames': {
            'RGB': _split_lists('kinetics/images', 'kinetics/labels/{split}_videofolder.txt')}}),
    'toy': _entry(
        categories=TOY_CLASSES, flip=False, input_size=64, scale_size=64,
        # Short quickstart command: main.py's defaults for this dataset (any flag overrides them).
        train_defaults=dict(arch='resnet18', num_segments=8, batch_size=16, lr=2e-3, optimizer='adamw',
                            weight_decay=1e-4, epochs=3, lr_type='cos', warmup_epochs=0, dropout=0.5,
                            pretrain='none', no_partialbn=True, workers=2, eval_freq=1, clip_gradient=20.0,
                            layout_arch='stlt_tiny'),
        layouts={
            'frames': {'RGB': _split_lists('toy/frames', 'toy/{split}_rgb.txt'),
                       'Flow': _split_lists('toy/flow', 'toy/{split}_flow.txt'),
                       # box files derived from the clips' trajectories (ops.toy.ensure_toy_layout)
                       'Layout': _split_lists('toy/boxes', 'toy/{split}_rgb.txt')},
            'video': {'RGB': _split_lists('toy/videos', 'toy/{split}_video.txt')},
            # HDF5 stores reuse the frames lists (`vid num_frames label`); one file per split.
            'hdf5': {'RGB': _split_lists('toy/hdf5/{split}_rgb.h5', 'toy/{split}_rgb.txt'),
                     'Flow': _split_lists('toy/hdf5/{split}_flow.h5', 'toy/{split}_flow.txt')}}),
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


def read_categories(path: str, option: str = '--category_file') -> list:
    if not os.path.isfile(path):
        raise FileNotFoundError(f'category file not found: {path} (set it with {option}, or give --num_class)')
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def resolve_dataset(name: str, modality: str, *, data_root: str = 'data', root_path: Optional[str] = None,
                    train_list: Optional[str] = None, val_list: Optional[str] = None,
                    category_file: Optional[str] = None, num_class: Optional[int] = None,
                    image_tmpl: Optional[str] = None, flow_tmpl: Optional[str] = None,
                    data_format: Optional[str] = None, categories: Optional[list] = None,
                    splits: tuple = ('train', 'val'), box_tmpl: Optional[str] = None) -> DatasetInfo:
    """Registry values joined with data_root; explicit arguments win and are used as given.

    A root_path containing '{split}' is formatted with 'train' and 'val' (per-split HDF5 files); '{modality}'
    in root_path and the lists becomes the modality's folder name (see modality_folder). `categories`
    (class names, e.g. recorded in a checkpoint) stands in for a category file, as do the class names of
    a registry entry that has them (toy). `splits`: the lists the caller needs (evaluation needs only
    'val'; a missing train list is then None).
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
    if categories is None and category_file is None and num_class is None and entry['categories']:
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
    if modality == 'Flow':
        tmpl = flow_tmpl if flow_tmpl is not None else entry['flow_tmpl']
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
        csv_top5=entry['csv_top5'], flip_pairs=entry['flip_pairs'], ila_pair_net=entry['ila_pair_net'])


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
                categories=list(info.categories) if info.categories is not None else None)


def list_lines(path):
    """Yield (line number, stripped text, whitespace-split fields) of a list file's data lines.

    Blank lines and lines starting with '#' are skipped: the one comment rule of every list this
    project reads or writes (training/test lists, extraction and packing inputs)."""
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            text = line.strip()
            if text and not text.startswith('#'):
                yield lineno, text, text.split()
