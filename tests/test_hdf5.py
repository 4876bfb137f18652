import os
import pickle

import h5py
import numpy as np
import pytest

from ops.hdf5_store import HDF5FrameStore, has_video, write_flow_frames, write_video_frames
from ops.video_io import FrameReadError, read_flow_folder, read_rgb_folder


def _jpegs(folder, names):
    return [open(os.path.join(folder, n), 'rb').read() for n in names]


@pytest.fixture
def packed(tmp_path, write_rgb_jpegs, write_flow_jpegs):
    rgb = write_rgb_jpegs(str(tmp_path / 'frames' / 'v0'), 7, video_index=0)
    flow = write_flow_jpegs(str(tmp_path / 'flow' / 'v0'), 7, video_index=0)
    with h5py.File(tmp_path / 'rgb.h5', 'w') as f:
        write_video_frames(f, 'v0', _jpegs(rgb, [f'img_{k:05d}.jpg' for k in range(1, 8)]))
        write_video_frames(f, 'nested/v1', _jpegs(rgb, ['img_00001.jpg']))
    with h5py.File(tmp_path / 'flow.h5', 'w') as f:
        write_flow_frames(f, 'v0', _jpegs(flow, [f'flow_x_{k:05d}.jpg' for k in range(1, 8)]),
                          _jpegs(flow, [f'flow_y_{k:05d}.jpg' for k in range(1, 8)]))
    return dict(rgb=rgb, flow=flow, rgb_h5=str(tmp_path / 'rgb.h5'), flow_h5=str(tmp_path / 'flow.h5'))


def test_hdf5_decodes_byte_identically_to_jpeg(packed):
    store = HDF5FrameStore(packed['rgb_h5'])
    numbers = [3, 1, 3, 7]
    assert store.num_frames('v0') == 7
    assert np.array_equal(store.read_rgb('v0', numbers), read_rgb_folder(packed['rgb'], 'img_{:05d}.jpg', numbers))
    assert store.read_elements('v0', [2]) == _jpegs(packed['rgb'], ['img_00003.jpg'])
    assert store.num_frames('nested/v1') == 1


def test_hdf5_flow_pairs(packed):
    store = HDF5FrameStore(packed['flow_h5'])
    assert store.num_frames('v0') == 7
    expected = read_flow_folder(packed['flow'], 'flow_{}_{:05d}.jpg', [2, 5, 7])
    assert np.array_equal(store.read_flow('v0', [2, 5, 9]), expected)   # 9 clamps to 7


def test_one_image_flow_layout(tmp_path):
    from PIL import Image
    import io
    buf = io.BytesIO()
    Image.fromarray(np.dstack([np.full((4, 4), v, np.uint8) for v in (10, 20, 30)])).save(buf, 'PNG')
    with h5py.File(tmp_path / 'f.h5', 'w') as f:
        write_video_frames(f, 'v', [buf.getvalue()])
    assert HDF5FrameStore(str(tmp_path / 'f.h5')).read_flow('v', [1])[0, 0, 0].tolist() == [10, 20]


def test_fixed_length_bytes_datasets_are_read(tmp_path, packed):
    # The Multimodal-Distillation packer stores numpy 'S' arrays.
    blobs = _jpegs(packed['rgb'], ['img_00001.jpg', 'img_00002.jpg'])
    with h5py.File(tmp_path / 's.h5', 'w') as f:
        f.create_dataset('v0', data=np.array(blobs))
    frames = HDF5FrameStore(str(tmp_path / 's.h5')).read_rgb('v0', [2])
    assert np.array_equal(frames, read_rgb_folder(packed['rgb'], 'img_{:05d}.jpg', [2]))


def test_lazy_open_and_reopen_after_fork(packed):
    store = HDF5FrameStore(packed['rgb_h5'])
    assert store._file is None                           # nothing opened at construction
    store.num_frames('v0')
    assert store._pid == os.getpid()
    clone = pickle.loads(pickle.dumps(store))            # spawned workers get no handle
    assert clone._file is None and clone.num_frames('v0') == 7
    store._pid = -1                                      # as seen from a forked child
    old = store._file
    store.num_frames('v0')
    assert store._file is not old and store._pid == os.getpid()
    old.close()
    store.close()


def test_missing_video_or_file_raises_read_error(tmp_path, packed):
    with pytest.raises(FrameReadError, match='nope'):
        HDF5FrameStore(packed['rgb_h5']).read_rgb('nope', [1])
    with pytest.raises(FrameReadError, match='absent.h5'):
        HDF5FrameStore(str(tmp_path / 'absent.h5')).num_frames('v0')


def test_resume_marker_and_rewrite(tmp_path):
    with h5py.File(tmp_path / 'r.h5', 'w') as f:
        f.create_dataset('half', shape=(2,), dtype=h5py.vlen_dtype(np.uint8))   # an interrupted write
        assert not has_video(f, 'half') and not has_video(f, 'absent')
        write_video_frames(f, 'half', [b'\xff\xd8a', b'\xff\xd8b'])
        assert has_video(f, 'half') and f['half'].attrs['num_frames'] == 2
        with pytest.raises(ValueError, match='x frames'):
            write_flow_frames(f, 'bad', [b'a'], [])
