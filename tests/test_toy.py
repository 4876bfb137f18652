"""The built-in toy dataset: layout, list contents, determinism, balance, time-reversal pairs, atomicity."""
import multiprocessing
import os

import numpy as np
import pytest
from PIL import Image

from ops.dataset import VideoDataSet, parse_list
from ops.readers import ReaderConfig
from ops.sampling import SamplingConfig
from ops.toy import (FLOW_BOUND, META_FILE, TOY_CLASSES, TOY_PAIRS, analytic_flow, dequantize_flow,
                     ensure_toy_dataset, quantize_flow, render_clip)
from ops import toy as toy_module
from ops.utils import tree_digest

SMALL = dict(num_train=16, num_val=8, num_frames=12, size=32, workers=1)


@pytest.fixture(scope='module')
def toy_root(tmp_path_factory):
    return ensure_toy_dataset(str(tmp_path_factory.mktemp('toy_a')), **SMALL)


def _read(path):
    with open(path) as f:
        return f.read()


def test_layout_and_lists(toy_root):
    assert _read(os.path.join(toy_root, 'category.txt')).splitlines() == list(TOY_CLASSES)
    rgb = {s: parse_list(os.path.join(toy_root, f'{s}_rgb.txt'), 'frames') for s in ('train', 'val')}
    flow = {s: parse_list(os.path.join(toy_root, f'{s}_flow.txt'), 'frames') for s in ('train', 'val')}
    video = {s: parse_list(os.path.join(toy_root, f'{s}_video.txt'), 'video') for s in ('train', 'val')}
    assert len(rgb['train']) == 16 and len(rgb['val']) == 8
    train_ids = {r.path for r in rgb['train']}
    assert not train_ids & {r.path for r in rgb['val']}
    for split in ('train', 'val'):
        for r, f, v in zip(rgb[split], flow[split], video[split]):
            assert f.path == r.path and v.path == r.path + '.mp4'
            assert r.label == f.label == v.label
            assert f.num_frames == r.num_frames - 1
            assert 12 - 1 <= r.num_frames <= 12 + 1  # length jitter num_frames // 8
            frames = sorted(os.listdir(os.path.join(toy_root, 'frames', r.path)))
            assert frames == [f'img_{k:05d}.jpg' for k in range(1, r.num_frames + 1)]
            flows = sorted(os.listdir(os.path.join(toy_root, 'flow', r.path)))
            assert flows == sorted([f'flow_{a}_{k:05d}.jpg' for a in 'xy' for k in range(1, r.num_frames)])
            assert os.path.getsize(os.path.join(toy_root, 'videos', r.path + '.mp4')) > 0
    img = Image.open(os.path.join(toy_root, 'frames', rgb['train'][0].path, 'img_00001.jpg'))
    assert img.mode == 'RGB' and img.size == (32, 32)
    img = Image.open(os.path.join(toy_root, 'flow', rgb['train'][0].path, 'flow_x_00001.jpg'))
    assert img.mode == 'L' and img.size == (32, 32)
    assert not [n for n in os.listdir(os.path.dirname(toy_root)) if n.startswith('.toy.tmp-')]
    probe = os.path.join(os.path.dirname(toy_root), 'probe')
    os.makedirs(probe)  # the dataset folder gets the same permissions as any new folder (umask)
    assert os.stat(toy_root).st_mode == os.stat(probe).st_mode


def test_class_balance(toy_root):
    for split, per_class in (('train', 2), ('val', 1)):
        labels = [r.label for r in parse_list(os.path.join(toy_root, f'{split}_rgb.txt'), 'frames')]
        assert np.bincount(labels, minlength=len(TOY_CLASSES)).tolist() == [per_class] * len(TOY_CLASSES)


def test_deterministic(toy_root, tmp_path):
    other = ensure_toy_dataset(str(tmp_path), **SMALL)
    for name in ('category.txt', 'train_rgb.txt', 'val_rgb.txt', 'train_flow.txt', 'val_flow.txt',
                 'train_video.txt', 'val_video.txt'):
        assert _read(os.path.join(other, name)) == _read(os.path.join(toy_root, name))
    for sub in ('frames', 'flow', 'videos'):
        assert tree_digest(os.path.join(other, sub)) == tree_digest(os.path.join(toy_root, sub))


def test_pairs_are_exact_time_reversals():
    # TSN averages per-frame scores, so it sees the same multiset of frames for both classes of a pair.
    assert TOY_PAIRS[0] == ('moving_right', 'moving_left')
    for k in range(0, len(TOY_CLASSES), 2):
        for seed in range(3):
            fwd = render_clip(k, 10, 32, np.random.default_rng(seed))
            bwd = render_clip(k + 1, 10, 32, np.random.default_rng(seed))
            assert fwd.shape == (10, 32, 32, 3) and fwd.dtype == np.uint8
            np.testing.assert_array_equal(fwd[::-1], bwd)
            assert not np.array_equal(fwd, bwd)  # there is motion / change to see


def test_pair_frame_statistics_similar():
    # Different seeds per class: the per-frame brightness distributions of the two directions match.
    def frame_means(label, seeds):
        return np.concatenate([render_clip(label, 12, 32, np.random.default_rng(s)).mean(axis=(1, 2, 3))
                               for s in seeds])
    for k in range(0, len(TOY_CLASSES), 2):
        a, b = frame_means(k, range(0, 24)), frame_means(k + 1, range(100, 124))
        assert abs(a.mean() - b.mean()) < 0.25 * (a.std() + b.std())


def _object_flow(label, seed=0, size=32, n=8):
    clip, path, shape = toy_module._render(label, n, size, np.random.default_rng(seed))
    return analytic_flow(path, shape, size), path


def test_analytic_flow_signs():
    right, _ = _object_flow(0)
    left, _ = _object_flow(1)
    down, _ = _object_flow(2)
    assert right[..., 0].sum() > 0 and left[..., 0].sum() < 0 and abs(right[..., 1]).max() == 0
    assert down[..., 1].sum() > 0 and abs(down[..., 0]).max() == 0
    grow, (x, y, _, _) = _object_flow(4)
    grid = np.arange(32) + 0.5
    # Approaching: flow points away from the centre (positive divergence).
    assert (grow[..., 0] * (grid[None, None, :] - x[:-1, None, None])).sum() > 0
    fade, _ = _object_flow(6)
    assert abs(fade).max() == 0


def test_quantize_flow_tsn_mapping():
    flow = np.array([[[0.0, -FLOW_BOUND], [FLOW_BOUND, 100.0], [10.0, -10.0]]], np.float32)
    qx, qy = quantize_flow(flow)
    assert qx.tolist() == [[128, 255, 191]] and qy.tolist() == [[0, 255, 64]]
    assert abs(dequantize_flow(np.uint8(191)) - 10.0) < 2 * FLOW_BOUND / 255


def test_dataset_reads_toy(toy_root):
    vid = parse_list(os.path.join(toy_root, 'val_rgb.txt'), 'frames')[0]
    for sub, lst, modality, fmt, tmpl, channels in (
            ('frames', 'val_rgb.txt', 'RGB', 'frames', 'img_{:05d}.jpg', 3),
            ('flow', 'val_flow.txt', 'Flow', 'frames', 'flow_{}_{:05d}.jpg', 2 * 5),
            ('videos', 'val_video.txt', 'RGB', 'video', 'img_{:05d}.jpg', 3)):
        ds = VideoDataSet(os.path.join(toy_root, sub), os.path.join(toy_root, lst), modality=modality,
                          sampling=SamplingConfig(4, 'val'),
                          reading=ReaderConfig(data_format=fmt, image_tmpl=tmpl, strict=True),
                          num_class=len(TOY_CLASSES))
        clip, label, _ = ds[0]
        assert clip.shape == (4 * channels, 32, 32) and label == vid.label


def test_existing_set_is_reused_and_checked(toy_root):
    data_root = os.path.dirname(toy_root)
    assert ensure_toy_dataset(data_root) == toy_root  # no sizes given: whatever exists
    assert ensure_toy_dataset(data_root, num_train=16) == toy_root
    with pytest.raises(ValueError, match='num_train=16'):
        ensure_toy_dataset(data_root, num_train=32)


def test_bad_sizes_and_incomplete_folder(tmp_path):
    with pytest.raises(ValueError, match='size'):
        ensure_toy_dataset(str(tmp_path), size=33)
    with pytest.raises(ValueError, match='num_frames'):
        ensure_toy_dataset(str(tmp_path), num_frames=2)
    (tmp_path / 'toy').mkdir()
    with pytest.raises(RuntimeError, match=META_FILE):
        ensure_toy_dataset(str(tmp_path))


def test_interrupted_generation_is_not_taken_as_complete(tmp_path):
    # A crash leaves only a hidden temp folder; the next call regenerates and removes it.
    leftover = tmp_path / '.toy.tmp-crashed'
    (leftover / 'frames').mkdir(parents=True)
    root = ensure_toy_dataset(str(tmp_path), num_train=8, num_val=8, num_frames=6, size=16, workers=1)
    assert os.path.isfile(os.path.join(root, META_FILE)) and not leftover.exists()


def test_concurrent_callers(tmp_path):
    # Two processes race for the same folder: one generates, the other waits for it (file lock).
    ctx = multiprocessing.get_context('spawn')
    kwargs = dict(num_train=8, num_val=8, num_frames=6, size=16, workers=1)
    procs = [ctx.Process(target=ensure_toy_dataset, args=(str(tmp_path),), kwargs=kwargs) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert sorted(n for n in os.listdir(tmp_path) if n != '.toy.lock') == ['toy']
    assert len(parse_list(str(tmp_path / 'toy' / 'train_rgb.txt'), 'frames')) == 8
    assert ensure_toy_dataset(str(tmp_path), **kwargs) == str(tmp_path / 'toy')
