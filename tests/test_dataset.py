import logging
import os
import re

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from ops.dataset import (MultiModalDataSet, VideoDataSet, VideoRecord, aligned_frame_counts, pair_records,
                         parse_list, worker_init_fn)
from ops.dataset_config import DATASETS, resolve_dataset
from ops.modality import frames_per_segment
from ops.hdf5_store import write_flow_frames, write_video_frames
from ops.readers import ReaderConfig
from ops.sampling import SamplingConfig, sample_indices
from ops.toy import TOY_CLASSES
from ops.transforms import build_transform

RAW = dict(mean=(0.0,), std=(1.0,), div=False)
W, H = 32, 24


def frame_code(video_index, k):
    return 8 * k + 40 * video_index


@pytest.fixture
def png_data(tmp_path, write_list):
    """Lossless frames. RGB: R = 4x ramp, G = frame code, B = 8y. Flow: x = 4x ramp, y = frame code."""
    counts = {'a': 14, 'b': 10, 'c': 12}
    ramp = np.tile((4 * np.arange(W)).astype(np.uint8), (H, 1))
    rows = np.tile((8 * np.arange(H)).astype(np.uint8)[:, None], (1, W))
    for i, (vid, n) in enumerate(counts.items()):
        os.makedirs(tmp_path / 'rgb' / vid)
        os.makedirs(tmp_path / 'flow' / vid)
        for k in range(1, n + 1):
            code = np.full((H, W), frame_code(i, k), np.uint8)
            Image.fromarray(np.dstack([ramp, code, rows])).save(tmp_path / 'rgb' / vid / f'img_{k:05d}.png')
            Image.fromarray(ramp).save(tmp_path / 'flow' / vid / f'flow_x_{k:05d}.png')
            Image.fromarray(code).save(tmp_path / 'flow' / vid / f'flow_y_{k:05d}.png')
    lines = [f'{vid} {n} {i}' for i, (vid, n) in enumerate(counts.items())]
    return dict(root=str(tmp_path / 'rgb'), flow_root=str(tmp_path / 'flow'), counts=counts,
                list=write_list(tmp_path / 'list.txt', lines))


def rgb_set(d, mode='train', transform=None, twice=False, **kw):
    return VideoDataSet(d['root'], d['list'], modality='RGB', transform=transform,
                        sampling=SamplingConfig(num_segments=4, mode=mode, twice=twice),
                        reading=ReaderConfig(image_tmpl='img_{:05d}.png'), **kw)


def flow_set(d, mode='train', transform=None, **kw):
    return VideoDataSet(d['flow_root'], d['list'], modality='Flow', transform=transform,
                        sampling=SamplingConfig(num_segments=4, mode=mode),
                        reading=ReaderConfig(image_tmpl='flow_{}_{:05d}.png'), **kw)


# ---- list parsing ----------------------------------------------------------------------------------
def test_parse_list_formats(tmp_path, write_list):
    path = write_list(tmp_path / 'l.txt', ['# comment', '', 'a/b  12\t3', '   ', 'c 0 1'])
    assert parse_list(path, 'frames') == [VideoRecord('a/b', 12, 3), VideoRecord('c', 0, 1)]
    path = write_list(tmp_path / 'v.txt', ['x/y.mp4 2'])
    records = parse_list(path, 'video')
    assert records == [VideoRecord('x/y.mp4', None, 2)] and records[0].video_id == 'x/y.mp4'


@pytest.mark.parametrize('line, reason', [('a 12', '2 columns instead of 3'), ('a 12 3 4', '4 columns'),
                                          ('a twelve 3', 'integers'), ('a 12 -1', '>= 0')])
def test_parse_list_malformed_line_quotes_file_line_number_and_line(tmp_path, write_list, line, reason):
    path = write_list(tmp_path / 'bad.txt', ['ok 3 0', '# c', line])
    with pytest.raises(ValueError, match=reason) as info:
        parse_list(path, 'frames')
    assert f'{path}:3:' in str(info.value) and repr(line) in str(info.value)


def test_missing_list_names_option(tmp_path):
    with pytest.raises(FileNotFoundError, match='--val_list'):
        VideoDataSet('r', str(tmp_path / 'none.txt'), list_option='--val_list')


def test_label_out_of_range_at_construction(frames_dataset):
    with pytest.raises(ValueError, match=r'outside \[0, 2\).*v2 -> 2'):
        VideoDataSet(frames_dataset['root'], frames_dataset['rgb_list'], num_class=2)


def test_zero_frame_videos_dropped_with_count(tmp_path, frames_dataset, write_list, caplog):
    path = write_list(tmp_path / 'z.txt', ['v0 10 0', 'empty 0 1', 'v1 12 1', 'gone 0 0'])
    with caplog.at_level(logging.WARNING, logger='ops.dataset'):
        ds = VideoDataSet(frames_dataset['root'], path)
    assert ds.video_ids == ['v0', 'v1'] and ds.num_dropped == 2
    assert 'dropped 2 videos with 0 frames' in caplog.text


def test_unknown_options_raise(frames_dataset):
    with pytest.raises(ValueError, match='train, val, test'):
        VideoDataSet(frames_dataset['root'], frames_dataset['rgb_list'], sampling=SamplingConfig(mode='eval'))
    with pytest.raises(ValueError, match='decord, pyav'):
        VideoDataSet(frames_dataset['root'], frames_dataset['rgb_list'], reading=ReaderConfig(video_backend='cv2'))


# ---- loading and layout ------------------------------------------------------------------------------
def test_rgb_val_reads_sampled_frames(png_data):
    ds = rgb_set(png_data, mode='val')
    clip, label, index = ds[0]
    assert clip.shape == (4 * 3, H, W) and (label, index) == (0, 0)
    starts, = sample_indices(14, 4, 1, 'val')
    assert [round(float(v) * 255) for v in clip[1::3, 0, 0]] == [frame_code(0, k) for k in starts]


def test_flow_layout_x1_y1_to_x5_y5_and_clamp(png_data):
    ds = flow_set(png_data, mode='val')
    clip, _, _ = ds[1]   # 10 frames, L = 5
    assert clip.shape == (4 * 5 * 2, H, W)
    per_step = (clip[:, 0, 5] * 255).round().long().view(4, 5, 2)
    starts, = sample_indices(10, 4, 5, 'val')
    assert per_step[..., 0].eq(20).all()                                       # x = ramp at column 5
    expected = [[frame_code(1, min(s + k, 10)) for k in range(5)] for s in starts]
    assert per_step[..., 1].tolist() == expected                               # y = frame code, clamped


def test_rgbdiff_loads_new_length_plus_one_frames(png_data):
    ds = VideoDataSet(png_data['root'], png_data['list'], modality='RGBDiff', sampling=SamplingConfig(2, 'val'),
                      reading=ReaderConfig(image_tmpl='img_{:05d}.png'))
    assert ds.new_length == 5 and ds.frames_per_segment == frames_per_segment('RGBDiff') == 6
    assert ds[0][0].shape == (2 * 6 * 3, H, W)


def test_test_mode_views_crop_major(png_data):
    t = build_transform(False, 'RGB', input_size=16, scale_size=24, test_crops=3, **RAW)
    ds = rgb_set(png_data, mode='test', transform=t, twice=True)
    assert ds.num_views == 6
    clip, _, _ = ds[0]
    assert clip.shape == (6, 4 * 3, 16, 16)
    centre, shifted = sample_indices(14, 4, 1, 'test', twice=True)
    codes = clip[:, 1::3, 0, 0].round().long()
    for crop in range(3):
        assert codes[2 * crop].tolist() == [frame_code(0, k) for k in centre]
        assert codes[2 * crop + 1].tolist() == [frame_code(0, k) for k in shifted]
    assert [int(clip[2 * c, 0, 0, 0]) // 4 for c in range(3)] == [0, 16, 8]   # left, right, centre x


def test_same_seed_same_clip_and_epoch_changes_it(png_data):
    t = build_transform(True, 'RGB', input_size=16)
    a, b = rgb_set(png_data, transform=t, seed=3), rgb_set(png_data, transform=t, seed=3)
    for i in range(3):
        assert torch.equal(a[i][0], b[i][0])
    assert any(not torch.equal(a[i][0], rgb_set(png_data, transform=t, seed=4)[i][0]) for i in range(3))
    b.set_epoch(1)
    assert any(not torch.equal(a[i][0], b[i][0]) for i in range(3))


def test_two_modality_datasets_make_identical_decisions(png_data):
    # MML per-process loading: same seed + aligned counts -> same frames, same crop, same flip.
    paired = pair_records({'RGB': parse_list(png_data['list'], 'frames'),
                           'Flow': parse_list(png_data['list'], 'frames')})
    counts = aligned_frame_counts(paired)
    common = dict(aligned_num_frames=counts, aligned_new_lengths=[1, 5], seed=11)
    rgb = rgb_set(png_data, transform=build_transform(True, 'RGB', input_size=16, scales=(1, .875, .75), **RAW),
                  records=paired['RGB'], aligned_position=0, **common)
    flow = flow_set(png_data, transform=build_transform(True, 'Flow', input_size=16, scales=(1, .875, .75), **RAW),
                    records=paired['Flow'], aligned_position=1, **common)
    flips = set()
    for epoch in range(3):
        rgb.set_epoch(epoch)
        flow.set_epoch(epoch)
        for i in range(3):
            r = rgb[i][0].view(4, 3, 16, 16)
            f = flow[i][0].view(4, 5, 2, 16, 16)[:, 0]   # first flow step of each segment
            assert torch.equal(f[:, 1], r[:, 1])        # same frame codes: same temporal indices
            flipped = torch.equal(f[:, 0], 255 - r[:, 0])
            assert flipped or torch.equal(f[:, 0], r[:, 0])   # same box; flipped flow x is inverted
            flips.add(flipped)
    assert flips == {True, False}


def test_multimodal_dataset_identical_views(png_data):
    paired = pair_records({'RGB': parse_list(png_data['list'], 'frames'),
                           'Flow': parse_list(png_data['list'], 'frames')})
    parts = {'RGB': rgb_set(png_data, transform=build_transform(True, 'RGB', input_size=16, **RAW),
                            records=paired['RGB']),
             'Flow': flow_set(png_data, transform=build_transform(True, 'Flow', input_size=16, **RAW),
                              records=paired['Flow'])}
    with pytest.raises(ValueError, match='same scales'):
        MultiModalDataSet(parts)   # default scales differ: RGB 4, Flow 3
    parts['Flow'].transform = build_transform(True, 'Flow', input_size=16, scales=(1, .875, .75, .66), **RAW)
    mm = MultiModalDataSet(parts, seed=5)
    for i in range(3):
        clips, label, index = mm[i]
        assert set(clips) == {'RGB', 'Flow'} and (label, index) == (i, i)
        r, f = clips['RGB'].view(4, 3, 16, 16), clips['Flow'].view(4, 5, 2, 16, 16)[:, 0]
        assert torch.equal(f[:, 1], r[:, 1])
        assert torch.equal(f[:, 0], 255 - r[:, 0]) or torch.equal(f[:, 0], r[:, 0])


def test_pair_records_by_id_and_errors():
    rgb = [VideoRecord('a', 5, 0), VideoRecord('b', 6, 1), VideoRecord('c', 7, 0)]
    flow = [VideoRecord('c', 6, 0), VideoRecord('a', 4, 0), VideoRecord('b', 5, 1)]
    paired = pair_records({'RGB': rgb, 'Flow': flow})
    assert [r.video_id for r in paired['Flow']] == ['a', 'b', 'c']
    assert aligned_frame_counts(paired) == [[5, 4], [6, 5], [7, 6]]
    with pytest.raises(ValueError, match='1 videos missing from the Flow list: c'):
        pair_records({'RGB': rgb, 'Flow': flow[1:]})
    with pytest.raises(ValueError, match='labels differ.*b'):
        pair_records({'RGB': rgb, 'Flow': [flow[0], flow[1], VideoRecord('b', 5, 0)]})


# ---- read failures -------------------------------------------------------------------------------------
def _truncate(path):
    data = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])


def test_truncated_jpeg_is_logged_counted_and_replaced(frames_dataset, caplog):
    _truncate(os.path.join(frames_dataset['root'], 'v1', 'img_00006.jpg'))
    ds = VideoDataSet(frames_dataset['root'], frames_dataset['rgb_list'], sampling=SamplingConfig(12, 'val'))
    with caplog.at_level(logging.WARNING, logger='ops.dataset'):
        clip, label, index = ds[1]
    assert index != 1 and label == index and ds.failures >= 1
    assert 'img_00006.jpg' in caplog.text
    strict = VideoDataSet(frames_dataset['root'], frames_dataset['rgb_list'], sampling=SamplingConfig(12, 'val'),
                          reading=ReaderConfig(strict=True))
    with pytest.raises(RuntimeError, match='img_00006.jpg'):
        strict[1]


def test_bounded_retries_then_loud_error(frames_dataset):
    os.rename(frames_dataset['root'], frames_dataset['root'] + '_moved')
    ds = VideoDataSet(frames_dataset['root'], frames_dataset['rgb_list'], sampling=SamplingConfig(mode='val'),
                      reading=ReaderConfig(max_retries=3))
    with pytest.raises(RuntimeError, match='4 read failures in a row'):
        ds[0]
    assert ds.failures == 4


# ---- video and HDF5 formats ------------------------------------------------------------------------------
@pytest.mark.parametrize('backend', ('decord', 'pyav'))
def test_video_list_dataset(tmp_path, write_mp4, write_list, backend):
    write_mp4(str(tmp_path / 'videos' / 'a.mp4'), 12, video_index=0)
    path = write_list(tmp_path / 'video.txt', ['a.mp4 1'])
    ds = VideoDataSet(str(tmp_path / 'videos'), path, sampling=SamplingConfig(4, 'val'),
                      reading=ReaderConfig(data_format='video', video_backend=backend))
    clip, label, _ = ds[0]
    assert clip.shape == (12, 48, 64) and label == 1
    starts, = sample_indices(12, 4, 1, 'val')
    values = (clip[0::3, 24, 32] * 255).round().long()
    assert (values - torch.tensor([8 * k for k in starts])).abs().max() <= 3


def test_hdf5_dataset_equals_frames_dataset(tmp_path, frames_dataset):
    counts = frames_dataset['counts']
    with h5py.File(tmp_path / 'rgb.h5', 'w') as f, h5py.File(tmp_path / 'flow.h5', 'w') as g:
        for vid, n in counts.items():
            rgb = os.path.join(frames_dataset['root'], vid)
            flow = os.path.join(frames_dataset['flow_root'], vid)
            write_video_frames(f, vid, [open(os.path.join(rgb, f'img_{k:05d}.jpg'), 'rb').read()
                                        for k in range(1, n + 1)])
            write_flow_frames(g, vid, *[[open(os.path.join(flow, f'flow_{a}_{k:05d}.jpg'), 'rb').read()
                                         for k in range(1, n + 1)] for a in 'xy'])
    for modality, root, h5, tmpl in (('RGB', 'root', 'rgb.h5', 'img_{:05d}.jpg'),
                                     ('Flow', 'flow_root', 'flow.h5', 'flow_{}_{:05d}.jpg')):
        t = build_transform(True, modality, input_size=16)
        kw = dict(sampling=SamplingConfig(num_segments=3), modality=modality, transform=t, seed=2)
        jpeg = VideoDataSet(frames_dataset[root], frames_dataset['rgb_list'], reading=ReaderConfig(image_tmpl=tmpl),
                            **kw)
        packed = VideoDataSet(str(tmp_path / h5), frames_dataset['rgb_list'], reading=ReaderConfig('hdf5'), **kw)
        for i in range(3):
            assert torch.equal(jpeg[i][0], packed[i][0])


# ---- DataLoader workers --------------------------------------------------------------------------------
def test_workers_give_same_samples_and_share_failure_count(frames_dataset):
    _truncate(os.path.join(frames_dataset['root'], 'v2', 'img_00005.jpg'))
    ds = VideoDataSet(frames_dataset['root'], frames_dataset['rgb_list'], sampling=SamplingConfig(9), seed=1,
                      transform=build_transform(True, 'RGB', input_size=16))
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2, worker_init_fn=worker_init_fn,
                                         persistent_workers=True)
    for epoch in range(2):
        ds.set_epoch(epoch)                       # reaches the persistent workers
        got = [(int(i), c[0]) for c, _, i in loader]
        assert ds.failures >= 1                   # counted in a worker, visible here
        assert 2 not in [i for i, _ in got]       # video 2 was replaced (its index is not reported)
        for i, clip in got:
            assert torch.equal(clip, ds[i][0])    # workers decide exactly as this process does


# ---- registry ------------------------------------------------------------------------------------------
def test_registry_and_resolve(tmp_path):
    assert set(DATASETS) == {'ucf101', 'hmdb51', 'something', 'somethingv2', 'jester', 'kinetics', 'toy',
                             'epic100', 'epic55'}
    info = resolve_dataset('hmdb51', 'Flow', data_root='/d')
    assert (info.num_class, info.image_tmpl, info.flip) == (51, 'flow_{}_{:05d}.jpg', True)
    assert info.train_list == '/d/HMDB51/splits/hmdb51_flow_train_split_1.txt'
    # toy: class names from the registry, so that an empty data root resolves (nothing is read)
    toy = resolve_dataset('toy', 'RGBDiff', data_root=str(tmp_path), data_format='hdf5')
    assert toy.categories == list(TOY_CLASSES) and not toy.flip and toy.input_size == 64
    assert os.listdir(tmp_path) == []
    (tmp_path / 'cats.txt').write_text('left\nright\n\n')
    assert resolve_dataset('toy', 'RGB', data_root=str(tmp_path),
                           category_file=str(tmp_path / 'cats.txt')).categories == ['left', 'right']
    assert toy.root_path.endswith('toy/hdf5/train_rgb.h5') and toy.val_root_path.endswith('toy/hdf5/val_rgb.h5')
    video = resolve_dataset('toy', 'RGB', data_root=str(tmp_path), data_format='video')
    assert video.val_list.endswith('val_video.txt') and video.root_path.endswith('toy/videos')
    own = resolve_dataset('mine', 'RGB', root_path='r', train_list='t', val_list='v', num_class=7)
    assert (own.num_class, own.image_tmpl, own.data_format) == (7, 'img_{:05d}.jpg', 'frames')
    with pytest.raises(ValueError, match=r'not registered \(registered: epic100, epic55, hmdb51, jester.*--val_list'):
        resolve_dataset('mine', 'RGB', root_path='r', train_list='t', num_class=7)
    with pytest.raises(FileNotFoundError, match='--category_file'):
        resolve_dataset('jester', 'RGB', data_root=str(tmp_path))
    with pytest.raises(ValueError, match='no registered Flow layout'):
        resolve_dataset('kinetics', 'Flow')
    with pytest.raises(ValueError, match='frames, video, hdf5'):
        resolve_dataset('toy', 'RGB', data_format='lmdb')


def test_wrong_image_tmpl_or_overlong_list_names_the_template_and_first_missing_file(frames_dataset, write_list,
                                                                                     tmp_path):
    import types

    from ops.dataset import check_list_counts, parse_list
    from ops.run_data import check_counts_on_disk
    d = frames_dataset
    records = parse_list(d['rgb_list'], 'frames')
    common = dict(root=d['root'], modality='RGB', start_index=1, list_file=d['rgb_list'], option='--val_list')
    check_list_counts(records, image_tmpl='img_{:05d}.jpg', **common)            # the files as listed
    # A wrong template: nothing under it; the template option, the template and the first file are named.
    with pytest.raises(ValueError) as exc:
        check_list_counts(records, image_tmpl='frame_{:06d}.jpg', **common)
    text = str(exc.value)
    first = os.path.join(d['root'], 'v0', 'frame_000001.jpg')
    assert f"with --image_tmpl 'frame_{{:06d}}.jpg': video v0 has 10 frames in the list but its first frame " \
           f"{first} does not exist (the folder holds e.g. ['img_00001.jpg', 'img_00002.jpg', 'img_00003.jpg'])" \
           in text and 'another modality' not in text
    # A list whose counts run past the files: the first missing file, not just the last listed one.
    os.remove(os.path.join(d['root'], 'v1', 'img_00012.jpg'))
    longer = write_list(tmp_path / 'long.txt', ['v0 10 0', 'v1 14 1'])
    with pytest.raises(ValueError, match=re.escape(
            f"video v1 has 14 frames in the list but the first missing file is "
            f"{os.path.join(d['root'], 'v1', 'img_00012.jpg')} (frame 12 of the 14 listed; --image_tmpl "
            f"'img_{{:05d}}.jpg')")):
        check_list_counts(parse_list(longer, 'frames'), image_tmpl='img_{:05d}.jpg', **dict(common, list_file=longer))
    # At start-up main.py stops with that message (the Flow side names --flow_tmpl).
    spec = types.SimpleNamespace(data_format='frames', root_path=d['flow_root'], val_root_path=d['flow_root'],
                                 modality='Flow', image_tmpl='flow_{}_{:04d}.jpg', start_index=1)
    with pytest.raises(SystemExit, match=r"error: .*rgb\.txt \(--train_list\) does not match the Flow files under "
                                         r".* with --flow_tmpl 'flow_\{\}_\{:04d\}\.jpg': .*flow_x_0001\.jpg does not "
                                         r"exist"):
        check_counts_on_disk(records, spec, 'train', d['rgb_list'], '--train_list')
