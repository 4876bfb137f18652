"""One reader per data format: how a dataset finds and decodes the frames (or the soundtrack) of a video.

Every reader has the same small interface, used by ops.dataset.VideoDataSet:
  open(record) -> (num_frames, handle): the video's frame count and what read() needs (None for stored
      frames; the open video file; for the Audio modality the pair (waveform, fps) of the whole track).
  read(record, handle, numbers) -> uint8 (N, H, W, C) of the sorted, distinct 1-based frame numbers.
  has_audio(record) / audio_name(record): the start-up check of an Audio list, and how a video without
      audio is named in its error.
  close(): drop what the parent process opened before the DataLoader workers start.
The reader is chosen once, from READERS, by the ReaderConfig's data_format.
"""
import dataclasses
import os
from typing import Mapping, Optional

import torch

from ops.audio import audio_settings, has_audio_track, load_waveform, media_durations, resample
from ops.dataset_config import check_data_format
from ops.hdf5_store import HDF5FrameStore
from ops.video_io import (FrameReadError, VideoFile, check_video_backend, read_flow_folder, read_rgb_folder,
                          video_info)


@dataclasses.dataclass(frozen=True)
class ReaderConfig:
    """Where and how a dataset reads its videos, and how it treats read failures.

    image_tmpl: frame file name in a video's folder (frames format; Flow: '{}' is x or y); start_index: the
    number of a video's first frame file; video_backend, autorotate: decoding of video files; audio: the
    AudioSettings values (ops/audio.py) of the Audio modality (None: the defaults). strict: a read failure
    raises instead of being replaced by another video, at most max_retries times in a row."""
    data_format: str = 'frames'
    image_tmpl: str = 'img_{:05d}.jpg'
    start_index: int = 1
    video_backend: str = 'decord'
    autorotate: bool = True
    audio: Optional[Mapping] = None
    strict: bool = False
    max_retries: int = 10

    def __post_init__(self):
        check_data_format(self.data_format)
        check_video_backend(self.video_backend)
        if int(self.max_retries) < 0:
            raise ValueError(f'max_retries must be >= 0, got {self.max_retries}')


def _audio_handle(where, num_frames, waveform, fps):
    # -> (num_frames, (waveform, fps)); windows are placed at frame times, so a frame rate is needed
    if not fps:
        raise FrameReadError(f'{where}: no frame rate to place the audio windows (give --audio_fps)')
    return num_frames, (waveform, fps)


class _Reader:
    """What the readers share: the root, the config, the modality read and, for Audio, its settings."""

    def __init__(self, root: str, config: ReaderConfig, modality: str):
        self.root = root
        self.config = config
        self.modality = modality
        self.audio = audio_settings(config.audio) if modality == 'Audio' else None

    def audio_file(self, record) -> str:
        """The audio file of a video under the root (frames lists: the audio template)."""
        return os.path.join(self.root, self.audio.tmpl.format(record.path))

    def audio_name(self, record) -> str:
        return self.audio_file(record)

    def close(self) -> None:
        """Nothing is held between clips."""


class FrameReader(_Reader):
    """Frame folders <root>/<path>/ of image files; the list gives the frame counts."""

    def open(self, record):
        if self.audio is None:
            return record.num_frames, None
        where = self.audio_file(record)
        return _audio_handle(where, record.num_frames, load_waveform(where, self.audio.sample_rate),
                             self.audio.fps)

    def read(self, record, handle, numbers):
        folder = os.path.join(self.root, record.path)
        if self.modality == 'Flow':
            return read_flow_folder(folder, self.config.image_tmpl, numbers, start_index=self.config.start_index,
                                    video_id=record.path)
        return read_rgb_folder(folder, self.config.image_tmpl, numbers, start_index=self.config.start_index)

    def has_audio(self, record) -> bool:
        # its existence only: opening every header would cost minutes on large sets
        return os.path.isfile(self.audio_file(record))


class VideoReader(_Reader):
    """Video files <root>/<path>; the decoder gives the frame count (and, for Audio, the frame rate)."""

    def __init__(self, root: str, config: ReaderConfig, modality: str):
        if modality == 'Flow':
            raise ValueError("data_format 'video' holds RGB only; Flow needs 'frames' or 'hdf5'")
        super().__init__(root, config, modality)

    def audio_file(self, record) -> str:
        """The video file itself: its soundtrack."""
        return os.path.join(self.root, record.path)

    def open(self, record):
        path = os.path.join(self.root, record.path)
        if self.audio is None:
            video = VideoFile(path, self.config.video_backend, autorotate=self.config.autorotate)
            return video.num_frames, video
        num_frames = video_info(path).num_frames
        try:
            fps = self.audio.fps or media_durations(path)[1]
        except Exception as err:   # PyAV's errors for a broken header
            raise FrameReadError(f'cannot probe {path}: {err}') from err
        return _audio_handle(path, num_frames, load_waveform(path, self.audio.sample_rate), fps)

    def read(self, record, handle, numbers):
        try:
            return handle.read(numbers)
        finally:
            handle.close()

    def has_audio(self, record) -> bool:
        path = self.audio_file(record)
        try:
            return os.path.isfile(path) and has_audio_track(path)
        except Exception:   # PyAV raises many types for a broken file; counted as missing
            return False


class Hdf5Reader(_Reader):
    """One HDF5 store (ops/hdf5_store.py) at the root, a dataset per video id; the list gives the counts."""

    def __init__(self, root: str, config: ReaderConfig, modality: str):
        super().__init__(root, config, modality)
        self.store = HDF5FrameStore(root)

    def open(self, record):
        if self.audio is None:
            return record.num_frames, None
        samples, rate = self.store.read_audio(record.video_id, self.audio.sample_rate)
        waveform = resample(torch.from_numpy(samples), rate, self.audio.sample_rate)
        return _audio_handle(f'{self.root}:{record.video_id}', record.num_frames, waveform, self.audio.fps)

    def read(self, record, handle, numbers):
        read = self.store.read_flow if self.modality == 'Flow' else self.store.read_rgb
        return read(record.video_id, numbers)

    def has_audio(self, record) -> bool:
        return self.store.has(record.video_id)

    def audio_name(self, record) -> str:
        return f'{record.video_id} (in {self.root})'

    def close(self) -> None:
        """Close the store: workers re-open their own."""
        self.store.close()


READERS = {'frames': FrameReader, 'video': VideoReader, 'hdf5': Hdf5Reader}


def make_reader(root: str, config: ReaderConfig, modality: str) -> _Reader:
    """The reader of config.data_format (checked by ReaderConfig against ops.dataset_config.DATA_FORMATS)."""
    return READERS[config.data_format](root, config, modality)
