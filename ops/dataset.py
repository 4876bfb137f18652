"""Annotation lists and the video dataset (frames, video files or HDF5 stores; RGB, Flow, RGBDiff, Audio).

Every random decision of a sample comes from sample_rng(seed, epoch, index), split into independent
streams for temporal sampling, spatial augmentation and failure replacement, so two processes (or two
modality datasets) with the same seed make the same decisions for the same video.
"""
import dataclasses
import logging
import multiprocessing
import os
import random
import signal
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ops.audio import mel_filterbank, spectrogram_images
from ops.dataset_config import check_data_format, list_lines
from ops.modality import check_modality, default_new_length, frames_per_segment
from ops.readers import ReaderConfig, make_reader
from ops.sampling import SamplingConfig, sample_rng
from ops.video_io import FrameReadError, flow_paths, frame_path

logger = logging.getLogger(__name__)

_LIST_COLUMNS = {'frames': ('path', 'num_frames', 'label'), 'hdf5': ('path', 'num_frames', 'label'),
                 'video': ('path', 'label')}


@dataclasses.dataclass(frozen=True)
class VideoRecord:
    path: str
    num_frames: Optional[int]   # None for video lists: the decoder gives the count
    label: Union[int, Tuple[int, ...]]   # a tuple, one label per head, in multi-head lists (ops/heads.py)

    @property
    def video_id(self) -> str:
        return self.path


def parse_list(list_file: str, data_format: str, option: str = '--train_list',
               allow_duplicates: bool = False, heads=None) -> List[VideoRecord]:
    """Strict list parsing: `path num_frames label` (frames, hdf5) or `path label` (video).

    heads (a multi-head layout, ops/heads.py): one label column per head instead of `label`
    (`path num_frames verb noun`), each checked against its head's class count; the record's label is
    then the tuple of them.

    Whitespace separated; blank lines and lines starting with '#' are skipped. A malformed line raises
    ValueError quoting the file, the line number and the line; so does a video listed twice (both line
    numbers), unless allow_duplicates (scripts/check_data.py counts them itself).
    """
    check_data_format(data_format)
    if list_file is None or not os.path.isfile(list_file):
        raise FileNotFoundError(f'list file not found: {list_file} (given by {option})')
    columns = _LIST_COLUMNS[data_format]
    if heads:
        columns = columns[:-1] + tuple(name for name, _ in heads)
    records = []
    first_line = {}
    for lineno, text, parts in list_lines(list_file):

        def bad(reason):
            return ValueError(f'{list_file}:{lineno}: {reason}; expected "{" ".join(columns)}" '
                              f'({data_format} list), got: {text!r}')
        if len(parts) != len(columns):
            raise bad(f'{len(parts)} columns instead of {len(columns)}')
        values = dict(zip(columns, parts))
        label_columns = [name for name, _ in heads] if heads else ['label']
        try:
            labels = [int(values[c]) for c in label_columns]
            num_frames = int(values['num_frames']) if 'num_frames' in values else None
        except ValueError:
            raise bad(f'num_frames and {" ".join(label_columns)} must be integers') from None
        if min(labels) < 0 or (num_frames is not None and num_frames < 0):
            raise bad(f'num_frames and {" ".join(label_columns)} must be >= 0')
        for (name, size), value in zip(heads or (), labels):
            if value >= size:
                raise bad(f'head {name!r} has {size} classes, label {value} is out of range')
        label = tuple(labels) if heads else labels[0]
        if not allow_duplicates and values['path'] in first_line:
            raise ValueError(f'{list_file}:{lineno}: video {values["path"]!r} is listed again (first at line '
                             f'{first_line[values["path"]]}); every video must appear once (given by {option})')
        first_line.setdefault(values['path'], lineno)
        records.append(VideoRecord(values['path'], num_frames, label))
    return records


def pair_records(lists: Mapping[str, Sequence[VideoRecord]]) -> Dict[str, List[VideoRecord]]:
    """Pair the lists of several modalities by video id (not by line order).

    Returns modality -> records in the order of the first list. A video missing from one list, a
    repeated video id or disagreeing labels raise ValueError naming the videos.
    """
    if not lists:
        raise ValueError('pair_records needs at least one list')
    by_id = {}
    for modality, records in lists.items():
        ids = [r.video_id for r in records]
        if len(set(ids)) != len(ids):
            dup = sorted({v for v in ids if ids.count(v) > 1})
            raise ValueError(f'{modality} list repeats video ids: {", ".join(dup[:10])}')
        by_id[modality] = {r.video_id: r for r in records}
    all_ids = set().union(*(set(m) for m in by_id.values()))
    problems = []
    for modality, records in by_id.items():
        missing = sorted(all_ids - set(records))
        if missing:
            more = f' (and {len(missing) - 10} more)' if len(missing) > 10 else ''
            problems.append(f'{len(missing)} videos missing from the {modality} list: '
                            f'{", ".join(missing[:10])}{more}')
    if problems:
        raise ValueError('; '.join(problems))
    first = next(iter(lists.values()))
    order = [r.video_id for r in first]
    bad_labels = [v for v in order if len({by_id[m][v].label for m in by_id}) > 1]
    if bad_labels:
        raise ValueError(f'labels differ between modalities for videos: {", ".join(bad_labels[:10])}')
    return {m: [by_id[m][v] for v in order] for m in lists}


def aligned_frame_counts(paired: Mapping[str, Sequence[VideoRecord]]) -> List[List[int]]:
    """Per record, the frame count of every modality (in the mapping's order), for MML alignment."""
    columns = list(paired.values())
    counts = []
    for records in zip(*columns):
        if any(r.num_frames is None for r in records):
            raise ValueError(f'video {records[0].video_id}: aligned sampling needs frame counts in every list')
        counts.append([r.num_frames for r in records])
    return counts


def worker_init_fn(worker_id: int) -> None:
    """DataLoader worker setup: distinct global seeds per worker and epoch (torch gives each worker
    base_seed + id, with a new base_seed per epoch), one torch thread per worker. Video readers are
    opened with one decoding thread each. (OpenCV is not used for loading; reconfiguring its thread pool
    in a forked worker can deadlock when the parent used it, so it is left alone.)

    Workers ignore SIGTERM and SIGINT: a terminal, scancel and SLURM pre-emption signal the whole process
    group, and the main process decides (checkpoint, then exit 75). Torch's own worker handler would die
    on a SIGTERM from anyone but the parent, and the run would be lost. Workers still exit when the
    main process dies (torch's parent watchdog) and on SIGKILL."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    info = torch.utils.data.get_worker_info()
    seed = (info.seed if info is not None else torch.initial_seed()) % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)
    torch.set_num_threads(1)


def _dropped_zero_frame(records, list_file):
    kept = [r for r in records if r.num_frames is None or r.num_frames > 0]
    dropped = len(records) - len(kept)
    if dropped:
        logger.warning('%s: dropped %d videos with 0 frames', list_file, dropped)
    return kept, dropped


class _SampleBookkeeping(Dataset):
    """Shared by the datasets: epoch and failure counters in shared memory (so set_epoch reaches forked
    or spawned DataLoader workers, persistent ones included, and failures counted in workers are visible
    here) and the per-sample generators. Subclasses set self.records and self.seed."""

    FAILED_KEPT = 8   # indices of the first failed videos kept for the per-epoch report

    def _init_counters(self):
        self._epoch = multiprocessing.Value('l', 0)
        self._failures = multiprocessing.Value('l', 0)
        self._failed = multiprocessing.Array('l', [-1] * self.FAILED_KEPT, lock=False)

    def note_failure(self, index: int) -> None:
        """Count one read failure of video `index` (from any DataLoader worker) and keep its index if
        it is among the first FAILED_KEPT of the count."""
        with self._failures.get_lock():
            slot = self._failures.value
            self._failures.value += 1
            if slot < self.FAILED_KEPT:
                self._failed[slot] = int(index)

    def failure_report(self) -> dict:
        """{'read_failures': count since reset_failures(), 'failed_videos': ids of the first of them}."""
        with self._failures.get_lock():
            total = self._failures.value
            kept = [self._failed[i] for i in range(min(total, self.FAILED_KEPT))]
        return {'read_failures': total,
                'failed_videos': [self.records[i].video_id for i in kept if 0 <= i < len(self.records)]}

    def failure_state(self) -> list:
        """[count, indices of the first failed videos]: what a mid-epoch checkpoint keeps, so that the
        epoch's report after a resume counts the failures before the interruption too (with prefetching
        workers it includes batches loaded but not yet trained on, which are read again after resuming)."""
        with self._failures.get_lock():
            total = self._failures.value
            return [total, [int(self._failed[i]) for i in range(min(total, self.FAILED_KEPT))]]

    def reset_failures(self, state=None) -> None:
        """Zero the failure counters, or set them to a failure_state() (resuming in the middle of an epoch)."""
        total, kept = state if state is not None else (0, [])
        with self._failures.get_lock():
            self._failures.value = int(total)
            for i in range(self.FAILED_KEPT):
                self._failed[i] = int(kept[i]) if i < len(kept) else -1

    def __len__(self):
        return len(self.records)

    @property
    def epoch(self) -> int:
        return self._epoch.value

    def set_epoch(self, epoch: int) -> None:
        """Call before iter(loader) of each epoch."""
        self._epoch.value = int(epoch)

    @property
    def failures(self) -> int:
        return self._failures.value

    @property
    def video_ids(self) -> List[str]:
        return [r.video_id for r in self.records]

    def streams(self, index: int):
        """(temporal, spatial, replacement) generators of one sample."""
        return sample_rng(self.seed, self.epoch, index).spawn(3)


class VideoDataSet(_SampleBookkeeping):
    """TSM's TSNDataSet with one sampling function, explicit modes and counted read-failure recovery.

    __getitem__(i) -> (clip, label, index): train/val clip (T*F*C, h, w), test clip (V, T*F*C, h, w)
    with V = crops * clips, crop-major (TSM order). index is i, or the replacement video's index when
    video i could not be read (so per-video evaluation notices the missing views).

    sampling (ops/sampling.py) says which clips a video gives, reading (ops/readers.py) how its frames are
    read; aligned_*: MML alignment (aligned_frame_counts, sample_aligned) at column aligned_position.
    """

    def __init__(self, root_path, list_file, *, modality='RGB', new_length=None, transform=None,
                 sampling=SamplingConfig(), reading=ReaderConfig(), seed=0, num_class=None, records=None,
                 aligned_num_frames=None, aligned_new_lengths=None, aligned_position=0, list_option='--train_list'):
        check_modality(modality)
        self.root_path = root_path
        self.list_file = list_file
        self.modality = modality
        self.new_length = default_new_length(modality) if new_length is None else int(new_length)
        self.frames_per_segment = frames_per_segment(modality, self.new_length)
        self.transform = transform
        self.sampling = sampling
        self.reading = reading
        self.reader = make_reader(root_path, reading, modality)
        # AudioSettings (ops/audio.py) of the Audio modality, else None
        self.audio = self.reader.audio
        self.seed = int(seed)
        self._init_counters()
        self.strict = reading.strict
        self.max_retries = int(reading.max_retries)
        self.num_class = num_class

        parsed = list(records) if records is not None else parse_list(list_file, reading.data_format, list_option)
        self.records, self.num_dropped = _dropped_zero_frame(parsed, list_file)
        if not self.records:
            raise ValueError(f'no usable videos in {list_file} (given by {list_option})')
        if num_class is not None:   # multi-head labels were checked per head by parse_list
            bad = [r for r in self.records if isinstance(r.label, int) and not 0 <= r.label < num_class]
            if bad:
                raise ValueError(f'{list_file}: {len(bad)} labels outside [0, {num_class}), e.g. '
                                 + ', '.join(f'{r.video_id} -> {r.label}' for r in bad[:5]))
        self.aligned_num_frames = aligned_num_frames
        self.aligned_new_lengths = aligned_new_lengths
        self.aligned_position = int(aligned_position)
        if aligned_num_frames is not None:
            if len(aligned_num_frames) != len(self.records) or aligned_new_lengths is None:
                raise ValueError(f'aligned_num_frames has {len(aligned_num_frames)} entries for '
                                 f'{len(self.records)} records (and needs aligned_new_lengths)')
        self.num_missing_audio = 0
        if self.audio is not None:
            self._filterbank = mel_filterbank(self.audio.n_fft // 2 + 1, self.audio.n_mels, self.audio.mel_rate)
            self._check_audio_sources(list_file, list_option)

    @property
    def mode(self) -> str:
        return self.sampling.mode

    @property
    def num_segments(self) -> int:
        return self.sampling.num_segments

    def _check_audio_sources(self, list_file, list_option):
        """Start-up check that every video has audio: an error naming the first ones, or (allow_missing)
        a logged count of the videos dropped."""
        missing = [record for record in self.records if not self.reader.has_audio(record)]
        self.reader.close()   # what the check opened here in the parent; workers open their own
        if not missing:
            return
        names = ', '.join(self.reader.audio_name(r) for r in missing[:5])
        more = f' and {len(missing) - 5} more' if len(missing) > 5 else ''
        if not self.audio.allow_missing:
            raise ValueError(f'{list_file} ({list_option}): {len(missing)} videos have no audio: {names}{more}; '
                             'give --allow_missing_audio to skip them')
        logger.warning('%s: skipped %d of %d videos without audio: %s%s', list_file, len(missing),
                       len(self.records), names, more)
        dropped = set(id(r) for r in missing)
        self.records = [r for r in self.records if id(r) not in dropped]
        self.num_missing_audio = len(missing)
        if not self.records:
            raise ValueError(f'no video of {list_file} ({list_option}) has audio')

    @property
    def num_clips(self) -> int:
        return self.sampling.num_clips

    @property
    def num_views(self) -> int:
        crops = getattr(self.transform, 'num_crops', 1) if self.mode == 'test' else 1
        return crops * self.num_clips

    # ---- reading -----------------------------------------------------------------------------
    def open(self, record: VideoRecord):
        """(num_frames, handle): the reader's (ops/readers.py); the handle is passed to read()."""
        return self.reader.open(record)

    def read(self, record: VideoRecord, handle, num_frames: int, clips: Sequence[Sequence[int]]) -> torch.Tensor:
        """Clip starts -> uint8 (K*T*L, H, W, C): L consecutive frames per start, clamped to num_frames."""
        L = self.frames_per_segment
        numbers = [min(start + k, num_frames) for clip in clips for start in clip for k in range(L)]
        if self.audio is not None:   # float spectrogram images (K*T, 3, size, size), see to_output
            waveform, fps = handle
            return spectrogram_images(waveform, numbers, fps, getattr(self.transform, 'crop_size', 224),
                                      self.audio, self._filterbank)
        unique = sorted(set(numbers))   # clamped and RGBDiff-overlapping frames are decoded once
        frames = torch.from_numpy(self.reader.read(record, handle, unique))
        if numbers == unique:
            return frames
        # index_select: list indexing (advanced indexing) of a uint8 clip is ~40x slower
        position = {k: i for i, k in enumerate(unique)}
        return frames.index_select(0, torch.tensor([position[k] for k in numbers]))

    def sample(self, num_frames: int, index: int, rng) -> List[List[int]]:
        if self.aligned_num_frames is not None:
            return self.sampling.aligned_clips(self.aligned_num_frames[index], self.aligned_new_lengths,
                                               rng)[self.aligned_position]
        return self.sampling.clips(num_frames, self.frames_per_segment, rng)

    def to_output(self, frames: torch.Tensor, rng, params=None, transform=None) -> torch.Tensor:
        """uint8 (K*T*L, H, W, C) -> train/val (T*L*C, h, w) or test (V, T*L*C, h, w), crop-major."""
        transform = self.transform if transform is None else transform
        if self.audio is not None:
            # Spectrograms are neither cropped nor flipped: each of the V test views (crops) of clip k is
            # the same image, so Audio scores line up with the other modalities' views.
            K = self.num_clips
            clips = frames.reshape(K, -1, *frames.shape[2:])      # (K, T*3, size, size)
            if self.mode != 'test':
                return clips[0]
            return clips.repeat(self.num_views // K, 1, 1, 1)
        if transform is None:
            views = (frames.permute(0, 3, 1, 2).float() / 255.0).unsqueeze(0)
        elif params is not None:
            views = transform.apply(frames, params)
        else:
            views = transform(frames, rng)
        V, FK, C, h, w = views.shape
        if self.mode != 'test':
            if V != 1:
                raise ValueError(f'{self.mode} transform returned {V} views; multi-crop needs mode="test"')
            return views.reshape(FK * C, h, w)
        K = self.num_clips
        return views.reshape(V * K, FK // K * C, h, w)

    def _load(self, index: int):
        record = self.records[index]
        t_rng, s_rng, _ = self.streams(index)
        num_frames, handle = self.open(record)
        clips = self.sample(num_frames, index, t_rng)
        frames = self.read(record, handle, num_frames, clips)
        params = draw_params(self.transform, s_rng)
        if params is None:
            return self.to_output(frames, s_rng), record.label
        return self.to_output(frames, None, params=params), self.transform.label_for(record.label, params)

    def __getitem__(self, index):
        return load_with_retries(self, index, self._load)


def draw_params(transform, rng):
    """A training transform's random parameters for one sample (None for evaluation transforms or none)."""
    draw = getattr(transform, 'draw', None)
    return draw(rng) if draw is not None else None


def load_with_retries(dataset, index, load):
    """Run load(index); on FrameReadError log, count and replace the video by one drawn from the
    sample's replacement stream, at most dataset.max_retries times in a row (strict: no replacement)."""
    current = index
    replace_rng = dataset.streams(index)[2]
    for attempt in range(dataset.max_retries + 1):
        try:
            clip, label = load(current)
            # multi-head: a (H,) tensor, so that a batch collates to (B, H)
            return clip, (label if isinstance(label, int) else torch.tensor(label)), current
        except FrameReadError as err:
            dataset.note_failure(current)
            if dataset.strict:
                raise RuntimeError(f'read failure (strict data): {err}') from err
            logger.warning('read failure %d in a row for video %s: %s', attempt + 1,
                           dataset.records[current].video_id, err)
            last_err = err
            current = int(replace_rng.integers(len(dataset)))
    raise RuntimeError(f'{dataset.max_retries + 1} read failures in a row, last: {last_err}; '
                       'check the data with scripts/check_data.py') from last_err


def _geometry(transform):
    # What decides crop boxes and flips; equal geometry + equal draws -> identical views.
    keys = ('train', 'input_size', 'scale_size', 'scales', 'flip', 'test_crops', 'crop_size', 'flip_pairs',
            'color_jitter', 'grayscale', 'random_erasing')
    return tuple(getattr(transform, k, None) for k in keys)


class MultiModalDataSet(_SampleBookkeeping):
    """Every modality of one sample with identical temporal indices and crop/flip (distillation).

    datasets: modality -> VideoDataSet over the same videos in the same order (build them with
    records=pair_records(...)[modality]), the same SamplingConfig and transform geometry (scales,
    sizes, flip). Temporal indices come from sample_aligned (offsets on the shortest modality; exact
    co-indexing when counts are equal); one draw of crop/flip parameters is applied to every modality.
    __getitem__(i) -> ({modality: clip}, label, index).
    """

    def __init__(self, datasets: Mapping[str, VideoDataSet], *, seed: int = 0):
        if not datasets:
            raise ValueError('MultiModalDataSet needs at least one dataset')
        self.datasets = dict(datasets)
        first = next(iter(self.datasets.values()))
        for modality, ds in self.datasets.items():
            if ds.video_ids != first.video_ids:
                raise ValueError(f'{modality} dataset lists other videos (or another order); use pair_records')
            if ds.sampling != first.sampling:
                raise ValueError(f'{modality} dataset differs in mode, num_segments or sampling options')
            # A modality without views (Layout: boxes of the whole frame) takes no crop geometry.
            if ds.transform is not None and first.transform is not None and \
                    _geometry(ds.transform) != _geometry(first.transform):
                raise ValueError(f'{modality} transform has other crop geometry than the first modality: '
                                 f'{_geometry(ds.transform)} vs {_geometry(first.transform)}; give every '
                                 'modality the same scales and sizes (MML uses scales [1, .875, .75, .66])')
        self.records = first.records
        self.sampling = first.sampling
        self.seed = int(seed)
        self.strict = first.strict
        self.max_retries = first.max_retries
        self._init_counters()

    def _load(self, index):
        t_rng, s_rng, _ = self.streams(index)
        parts = list(self.datasets.values())
        opened = [ds.open(ds.records[index]) for ds in parts]
        first = parts[0]
        all_clips = self.sampling.aligned_clips([n for n, _ in opened], [ds.frames_per_segment for ds in parts],
                                                t_rng)
        params = draw_params(first.transform, s_rng)
        out = {}
        for (modality, ds), (n, handle), clips in zip(self.datasets.items(), opened, all_clips):
            frames = ds.read(ds.records[index], handle, n, clips)
            out[modality] = ds.to_output(frames, None, params=params) if params is not None \
                else ds.to_output(frames, s_rng)
        label = self.records[index].label
        return out, (first.transform.label_for(label, params) if params is not None else label)

    def __getitem__(self, index):
        return load_with_retries(self, index, self._load)


def check_list_counts(records: Sequence[VideoRecord], *, root: str, modality: str, image_tmpl: str,
                      start_index: int, list_file: str, option: str, sample: int = 16) -> None:
    """A frames list must describe the files of its own modality: for up to `sample` evenly spaced videos,
    the last listed frame exists and the one after it does not (Flow folders hold one step fewer than
    the RGB frames, so an RGB list given to a Flow model, or the reverse, fails here, before training).
    Raises ValueError naming the list, the video and the file."""
    check_modality(modality)
    if not records or modality == 'Audio':   # audio sources are checked by the Audio dataset itself
        return
    if modality == 'Layout':      # box files, one per video: they must exist and parse
        from ops.layout import check_box_files   # here: ops.layout imports the archs package (torchvision)
        return check_box_files(records, root=root, box_tmpl=image_tmpl, list_file=list_file, option=option,
                               sample=sample)
    tmpl_option = '--flow_tmpl' if modality == 'Flow' else '--image_tmpl'
    step = max(1, len(records) // sample)
    for record in list(records)[::step][:sample]:
        if not record.num_frames:
            continue
        folder = os.path.join(root, record.path)
        last = start_index + record.num_frames - 1

        def file_of(number):
            if modality == 'Flow':
                return flow_paths(folder, record.video_id, image_tmpl, number)[0]
            return frame_path(folder, image_tmpl, number)
        where = (f'{list_file} ({option}) does not match the {modality} files under {root} with {tmpl_option} '
                 f'{image_tmpl!r}: video {record.video_id} has {record.num_frames} frames in the list but')
        if not os.path.isfile(file_of(start_index)):
            try:
                held = sorted(os.listdir(folder))
            except OSError:
                held = None
            shown = 'the folder does not exist' if held is None else (
                f'the folder holds e.g. {held[:3]}' if held else 'the folder is empty')
            raise ValueError(f'{where} its first frame {file_of(start_index)} does not exist ({shown}). Is '
                             f'{tmpl_option} right (the template tried: {image_tmpl!r}, frames numbered from '
                             f'{start_index})?')
        if not os.path.isfile(file_of(last)):
            missing = next(n for n in range(start_index, last + 1) if not os.path.isfile(file_of(n)))
            problem = (f'the first missing file is {file_of(missing)} (frame {missing - start_index + 1} of the '
                       f'{record.num_frames} listed; {tmpl_option} {image_tmpl!r})')
        elif os.path.isfile(file_of(last + 1)):
            problem = f'{file_of(last + 1)} exists beyond its {record.num_frames} listed frames'
        else:
            continue
        raise ValueError(
            f'{where} {problem}. Is it the list of another modality, or were the frames extracted again '
            f'since the list was built? Give each modality its own list and root with the {{modality}} '
            f'placeholder, e.g. {option} "lists/{"train" if option == "--train_list" else "val"}_{{modality}}.txt" '
            f'--root_path "data/{{modality}}"')
