"""One reader per data format (ops/readers.py): the table, the config checks and what each reader returns."""
import os

import h5py
import numpy as np
import pytest

from conftest import frame_value
from ops.dataset import VideoRecord
from ops.dataset_config import DATA_FORMATS
from ops.hdf5_store import write_video_frames
from ops.readers import READERS, FrameReader, Hdf5Reader, ReaderConfig, VideoReader, make_reader


def test_every_data_format_has_a_reader_and_unknown_options_raise():
    assert tuple(READERS) == DATA_FORMATS     # the --data_format choices
    with pytest.raises(ValueError, match="unknown data_format 'avi'; allowed: frames, video, hdf5"):
        ReaderConfig('avi')
    with pytest.raises(ValueError, match='decord, pyav'):
        ReaderConfig(video_backend='cv2')
    with pytest.raises(ValueError, match='max_retries must be >= 0, got -1'):
        ReaderConfig(max_retries=-1)
    with pytest.raises(ValueError, match="'video' holds RGB only"):
        make_reader('videos', ReaderConfig('video'), 'Flow')


def test_the_three_readers_read_the_same_frames(tmp_path, write_rgb_jpegs, write_mp4):
    folder = write_rgb_jpegs(str(tmp_path / 'frames' / 'a'), 6)
    write_mp4(str(tmp_path / 'videos' / 'a.mp4'), 6, size=(32, 24))
    with h5py.File(tmp_path / 'a.h5', 'w') as f:
        write_video_frames(f, 'a', [open(os.path.join(folder, f'img_{k:05d}.jpg'), 'rb').read() for k in range(1, 7)])
    listed = VideoRecord('a', 6, 0)
    readers = {'frames': (str(tmp_path / 'frames'), listed), 'hdf5': (str(tmp_path / 'a.h5'), listed),
               'video': (str(tmp_path / 'videos'), VideoRecord('a.mp4', None, 0))}
    clips = {}
    for data_format, (root, record) in readers.items():
        reader = make_reader(root, ReaderConfig(data_format, video_backend='pyav'), 'RGB')
        assert type(reader) is {'frames': FrameReader, 'hdf5': Hdf5Reader, 'video': VideoReader}[data_format]
        num_frames, handle = reader.open(record)
        assert num_frames == 6    # the list's count, or the decoder's for a video file
        clips[data_format] = reader.read(record, handle, [1, 4, 6])
        reader.close()
    assert clips['frames'].shape == (3, 24, 32, 3) and clips['frames'].dtype == np.uint8
    np.testing.assert_array_equal(clips['frames'], clips['hdf5'])     # the same JPEG bytes
    for clip in clips.values():
        grey = clip[:, 12, 16].astype(int).mean(axis=1)
        assert np.abs(grey - [frame_value(0, k) for k in (1, 4, 6)]).max() <= 3
