import os

import numpy as np
import pytest
from PIL import Image

from ops.video_io import (available_video_backends, FrameReadError, VideoFile, backend_info, flow_paths, read_flow_folder,
                          read_rgb_folder, video_num_frames)


def test_rgb_folder_reads_requested_frames(tmp_path, write_rgb_jpegs, frame_value):
    folder = write_rgb_jpegs(str(tmp_path / 'v'), 6, video_index=1)
    frames = read_rgb_folder(folder, 'img_{:05d}.jpg', [1, 4, 6])
    assert frames.shape == (3, 24, 32, 3) and frames.dtype == np.uint8
    assert np.abs(frames[:, 0, 0, 0].astype(int) - [frame_value(1, k) for k in (1, 4, 6)]).max() <= 2


def test_start_index_zero(tmp_path):
    os.makedirs(tmp_path / 'v')
    for k in range(3):   # files 00000..00002 hold frames 1..3
        Image.fromarray(np.full((4, 4, 3), 50 * k, np.uint8)).save(tmp_path / 'v' / f'{k:06d}.jpg')
    frames = read_rgb_folder(str(tmp_path / 'v'), '{:06d}.jpg', [1, 3], start_index=0)
    assert frames[:, 0, 0, 0].tolist() == [0, 100]


def test_flow_two_grayscale_files(tmp_path, write_flow_jpegs, frame_value):
    folder = write_flow_jpegs(str(tmp_path / 'f'), 3, video_index=0)
    flow = read_flow_folder(folder, 'flow_{}_{:05d}.jpg', [2, 3])
    assert flow.shape == (2, 24, 32, 2)
    assert np.abs(flow[0, 0, 0].astype(int) - [frame_value(0, 2), 255 - frame_value(0, 2)]).max() <= 2


def test_flow_one_rgb_image_r_is_x_g_is_y(tmp_path):
    os.makedirs(tmp_path / 'f')
    Image.fromarray(np.dstack([np.full((8, 8), 30, np.uint8), np.full((8, 8), 200, np.uint8),
                               np.full((8, 8), 90, np.uint8)])).save(tmp_path / 'f' / '000001.png')
    flow = read_flow_folder(str(tmp_path / 'f'), '{:06d}.png', [1])
    assert flow.shape == (1, 8, 8, 2) and flow[0, 0, 0].tolist() == [30, 200]


def test_ssv1_flow_template_paths():
    assert flow_paths('root/12', '12', '{:06d}-{}_{:05d}.jpg', 3) == (
        os.path.join('root', '000012', '000012-x_00003.jpg'), os.path.join('root', '000012', '000012-y_00003.jpg'))


def test_missing_and_truncated_frames_raise_with_path(tmp_path, write_rgb_jpegs):
    folder = write_rgb_jpegs(str(tmp_path / 'v'), 3)
    with pytest.raises(FrameReadError, match='img_00009.jpg'):
        read_rgb_folder(folder, 'img_{:05d}.jpg', [9])
    path = os.path.join(folder, 'img_00002.jpg')
    data = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(FrameReadError, match='img_00002.jpg'):
        read_rgb_folder(folder, 'img_{:05d}.jpg', [1, 2])


@pytest.mark.parametrize('backend', available_video_backends())
def test_mp4_both_backends(tmp_path, write_mp4, frame_value, backend):
    path = write_mp4(str(tmp_path / 'clip.mp4'), 12, video_index=0)
    with VideoFile(path, backend) as video:
        assert video.num_frames == 12
        frames = video.read([1, 5, 12, 30, 5])   # 30 clamps to the last frame
    assert frames.shape == (5, 48, 64, 3)
    expected = [frame_value(0, k) for k in (1, 5, 12, 12, 5)]
    assert np.abs(frames[:, 24, 32, 0].astype(int) - expected).max() <= 3
    assert backend_info(backend).startswith(backend + ' ')


def test_backends_agree(tmp_path, write_mp4):
    path = write_mp4(str(tmp_path / 'clip.mp4'), 9, video_index=2)
    a = VideoFile(path, 'decord').read(range(1, 10))
    b = VideoFile(path, 'pyav').read(range(1, 10))
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2


def test_decord_width_bug_falls_back_to_pyav(tmp_path, write_mp4, frame_value):
    # decord2 3.4 cannot decode 32-px-wide videos; the reader switches to PyAV.
    path = write_mp4(str(tmp_path / 'narrow.mp4'), 6, video_index=0, size=(32, 24))
    video = VideoFile(path, 'decord')
    frames = video.read([2, 6])
    assert frames.shape == (2, 24, 32, 3)
    assert np.abs(frames[:, 12, 16, 0].astype(int) - [frame_value(0, 2), frame_value(0, 6)]).max() <= 3


@pytest.mark.parametrize('backend', available_video_backends())
def test_undecodable_video_raises_with_path(tmp_path, backend):
    path = tmp_path / 'broken.mp4'
    path.write_bytes(b'not a video at all' * 10)
    with pytest.raises(FrameReadError, match='broken.mp4'):
        video_num_frames(str(path), backend)


def test_unknown_backend():
    with pytest.raises(ValueError, match='decord, pyav'):
        VideoFile('x.mp4', 'opencv')


def test_frame_count_cache_follows_file_changes(tmp_path, write_mp4):
    # video_info is cached per (path, size, mtime): a rewritten file is probed again.
    path = write_mp4(str(tmp_path / 'clip.mp4'), 5)
    assert video_num_frames(path) == 5
    write_mp4(path, 9)
    os.utime(path, ns=(1, 1))   # a different mtime even on coarse-clock file systems
    assert video_num_frames(path, 'pyav') == 9


def test_torchcodec_listed_exactly_when_its_decoder_imports():
    from ops.video_io import _torchcodec_decoder_class
    try:
        usable = _torchcodec_decoder_class().__name__ == 'VideoDecoder'
    except RuntimeError as err:
        assert 'pip install torchcodec' in str(err)
        usable = False
    assert ('torchcodec' in available_video_backends()) == usable
