import numpy as np
import pytest
import torch
from PIL import Image

from ops.sampling import sample_rng
from ops.transforms import (FLOW_SCALES, RGB_SCALES, build_transform, center_crop_box, crop_pairs, eval_crop_boxes,
                            fixed_offsets, multiscale_crop_box, scaled_size)

RAW = dict(mean=(0.0,), std=(1.0,), div=False)   # output = pixel values, to read coordinates back


def coordinate_frames(W, H, num_frames=2):
    """uint8 (F, H, W, 3): channel 0 = x % 256, channel 1 = x // 256, channel 2 = y (H <= 256)."""
    y, x = np.mgrid[0:H, 0:W]
    frame = np.stack([x % 256, x // 256, y], axis=-1).astype(np.uint8)
    return torch.from_numpy(np.repeat(frame[None], num_frames, axis=0))


def top_left(view):
    """(F, 3, h, w) raw view -> (x, y) of its top-left pixel in the source frame."""
    px = view[0, :, 0, 0].round().long().tolist()
    return px[0] + 256 * px[1], px[2]


def test_reference_pairs_and_offsets():
    assert crop_pairs(341, 256, 224, RGB_SCALES) == [
        (256, 256), (224, 256), (256, 224), (224, 224), (192, 224), (224, 192), (192, 192), (168, 192),
        (192, 168), (168, 168)]
    assert len(crop_pairs(341, 256, 224, FLOW_SCALES)) == 7
    assert fixed_offsets(341, 256, 224, 224) == [
        (0, 0), (116, 0), (0, 32), (116, 32), (58, 16), (0, 16), (116, 16), (58, 32), (58, 0), (29, 8), (87, 8),
        (29, 24), (87, 24)]


def test_snapping_within_3px():
    assert crop_pairs(300, 226, 224, (1,))[0] == (224, 224)
    assert crop_pairs(300, 227, 224, (1,))[0] == (227, 227)
    assert crop_pairs(300, 250, 224, (1,))[0] == (250, 250)


def test_multiscale_box_choice_is_uniform_over_pairs_and_offsets():
    pairs = crop_pairs(341, 256, 224, RGB_SCALES)
    # u[0] picks pair index int(u0 * 10), u[1] offset index int(u1 * 13).
    assert multiscale_crop_box(341, 256, 224, RGB_SCALES, [0.35, 0.0, 0.9]) == (0, 0) + pairs[3]
    assert multiscale_crop_box(341, 256, 224, RGB_SCALES, [0.35, 12.5 / 13, 0.9]) == (87, 24, 224, 224)
    assert multiscale_crop_box(341, 256, 224, RGB_SCALES, [0.999, 0.35, 0.0]) == (86, 44, 168, 168)


def test_train_crop_on_coordinate_frame_matches_box():
    frames = coordinate_frames(341, 256)
    t = build_transform(True, 'RGB', input_size=224, flip=False, **RAW)
    for seed in range(30):
        u = sample_rng(seed, 0, 0).random(3)
        x, y, w, h = multiscale_crop_box(341, 256, 224, RGB_SCALES, u)
        out = t(frames, sample_rng(seed, 0, 0))
        assert out.shape == (1, 2, 3, 224, 224)
        if (w, h) == (224, 224):   # no resize: exact pixels
            assert top_left(out[0]) == (x, y)
            assert torch.equal(out[0, :, 2, :, 0], torch.arange(y, y + 224).float().expand(2, -1))


def test_train_flip_mirrors_box_and_inverts_flow_x_only():
    frames = coordinate_frames(341, 256)
    rgb = build_transform(True, 'RGB', input_size=224, scales=(224 / 256,), **RAW)
    flow = build_transform(True, 'Flow', input_size=224, scales=(224 / 256,), **RAW)
    seeds = [s for s in range(40) if sample_rng(s, 0, 0).random(3)[2] < 0.5]
    seed = seeds[0]
    x, y, w, h = multiscale_crop_box(341, 256, 224, (224 / 256,), sample_rng(seed, 0, 0).random(3))
    out = rgb(frames, sample_rng(seed, 0, 0))[0]
    assert top_left(out.flip(-1)) == (x, y)                       # flipped: left column is x + w - 1
    assert out[0, 0, 0, 0] + 256 * out[0, 1, 0, 0] == x + w - 1
    fl = flow(frames[..., :2].contiguous(), sample_rng(seed, 0, 0))[0]
    assert torch.equal(fl[:, 0], 255 - out[:, 0])                 # x channel inverted
    assert torch.equal(fl[:, 1], out[:, 1])                       # y channel untouched


def test_no_flip_when_dataset_forbids_it():
    frames = coordinate_frames(341, 256)
    t = build_transform(True, 'RGB', input_size=224, scales=(224 / 256,), flip=False, **RAW)
    for seed in range(10):
        x, y, _, _ = multiscale_crop_box(341, 256, 224, (224 / 256,), sample_rng(seed, 0, 0).random(3))
        assert top_left(t(frames, sample_rng(seed, 0, 0))[0]) == (x, y)


def test_two_modalities_same_rng_same_box_and_flip():
    frames = coordinate_frames(341, 256, num_frames=3)
    for seed in range(10):
        rgb = build_transform(True, 'RGB', scales=RGB_SCALES, **RAW)(frames, sample_rng(seed, 1, 2))
        diff = build_transform(True, 'RGBDiff', scales=RGB_SCALES, **RAW)(frames, sample_rng(seed, 1, 2))
        assert torch.equal(rgb, diff)
        flow = build_transform(True, 'Flow', scales=RGB_SCALES, **RAW)(frames[..., 1:].contiguous(),
                                                                      sample_rng(seed, 1, 2))
        assert torch.equal(flow[:, :, 1], rgb[:, :, 2])           # y channel: same crop and flip


def test_test_crop_boxes_reference():
    assert scaled_size(341, 256, 256) == (341, 256)
    assert scaled_size(480, 331, 256) == (371, 256)               # torchvision Resize: long side truncated
    assert scaled_size(240, 320, 256) == (256, 341)
    assert [b[0] for b in eval_crop_boxes(341, 256, 256, 3)] == [0, 84, 42]   # full-res left, right, centre
    assert eval_crop_boxes(341, 256, 224, 3) == [(0, 16, 224, 224), (116, 16, 224, 224), (58, 16, 224, 224)]
    assert eval_crop_boxes(256, 341, 224, 3) == [(16, 0, 224, 224), (16, 116, 224, 224), (16, 58, 224, 224)]
    assert eval_crop_boxes(341, 256, 224, 5) == [(0, 0, 224, 224), (116, 0, 224, 224), (0, 32, 224, 224),
                                                 (116, 32, 224, 224), (58, 16, 224, 224)]
    assert eval_crop_boxes(341, 256, 224, 1) == [center_crop_box(341, 256, 224)] == [(58, 16, 224, 224)]
    assert center_crop_box(343, 256, 224) == (60, 16, 224, 224)   # round(59.5) = 60, round(58.5) = 58
    with pytest.raises(ValueError, match='test_crops'):
        eval_crop_boxes(341, 256, 224, 4)


def test_ten_crops_order_on_coordinate_frame():
    frames = coordinate_frames(341, 256)
    out = build_transform(False, 'RGB', test_crops=10, **RAW)(frames)
    assert out.shape == (10, 2, 3, 224, 224)
    boxes = eval_crop_boxes(341, 256, 224, 5)
    for k, (x, y, w, h) in enumerate(boxes):
        assert top_left(out[2 * k]) == (x, y)
        assert torch.equal(out[2 * k + 1], out[2 * k].flip(-1))


def test_flow_ten_crops_invert_x_in_flipped_views():
    frames = coordinate_frames(341, 256)[..., :2].contiguous()
    out = build_transform(False, 'Flow', test_crops=10, **RAW)(frames)
    assert torch.equal(out[1, :, 0], 255 - out[0, :, 0].flip(-1))
    assert torch.equal(out[1, :, 1], out[0, :, 1].flip(-1))


def test_full_res_three_crops():
    frames = coordinate_frames(341, 256)
    out = build_transform(False, 'RGB', test_crops=3, full_res=True, **RAW)(frames)
    assert out.shape == (3, 2, 3, 256, 256)
    assert [top_left(v)[0] for v in out] == [0, 84, 42]


def test_test_scale_shorter_side_then_centre_crop():
    frames = torch.full((2, 48, 64, 3), 100, dtype=torch.uint8)
    out = build_transform(False, 'RGB', input_size=24, scale_size=32, **RAW)(frames)
    assert out.shape == (1, 2, 3, 24, 24)
    assert torch.allclose(out, torch.full_like(out, 100.0))


def test_resize_matches_pil_bilinear():
    rng = np.random.default_rng(0)
    img = (np.cumsum(np.cumsum(rng.integers(-3, 4, (96, 128, 3)), 0), 1) % 256).astype(np.uint8)
    out = build_transform(False, 'RGB', input_size=72, scale_size=72, **RAW)(torch.from_numpy(img[None]))
    pil = np.asarray(Image.fromarray(img).resize((96, 72), Image.BILINEAR)).astype(np.float32)
    x, y, w, h = center_crop_box(96, 72, 72)
    ref = torch.from_numpy(pil[y:y + h, x:x + w]).permute(2, 0, 1)
    assert (out[0, 0] - ref).abs().max() <= 1


def test_normalisation_per_modality():
    frames = torch.full((1, 8, 8, 3), 255, dtype=torch.uint8)
    rgb = build_transform(False, 'RGB', input_size=8, scale_size=8)(frames)
    assert torch.allclose(rgb[0, 0, :, 0, 0], torch.tensor([(1 - .485) / .229, (1 - .456) / .224, (1 - .406) / .225]))
    flow = build_transform(False, 'Flow', input_size=8, scale_size=8)(frames[..., :2].contiguous())
    assert torch.allclose(flow[0, 0, :, 0, 0], torch.tensor([0.5 / 0.226] * 2))
    diff = build_transform(False, 'RGBDiff', input_size=8, scale_size=8)(frames)
    assert torch.allclose(diff, torch.ones_like(diff))


def test_bad_arguments():
    with pytest.raises(ValueError, match='RGB, Flow, RGBDiff'):
        build_transform(True, 'Depth')
    with pytest.raises(ValueError, match='uint8'):
        build_transform(False, 'RGB')(torch.zeros(1, 8, 8, 3))
    with pytest.raises(ValueError, match='rng'):
        build_transform(True, 'RGB')(torch.zeros(1, 8, 8, 3, dtype=torch.uint8))


# ---- issue 15: flips with label swaps, ILA colour / grayscale / erasing ----

def test_flip_pairs_parse_and_swap_labels_of_flipped_clips_only():
    from ops.transforms import parse_flip_pairs
    pairs = parse_flip_pairs('86:87,93:94,166:167')
    assert pairs == {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}
    assert parse_flip_pairs('none') == {} and parse_flip_pairs('') == {}
    for bad in ('86-87', '3:3', '1:2,2:5', 'a:b'):
        with pytest.raises(ValueError, match='--flip_pairs'):
            parse_flip_pairs(bad)
    t = build_transform(True, 'RGB', input_size=8, flip=True, flip_pairs=pairs, **RAW)
    flip, keep = np.array([0.0, 0.0, 0.2]), np.array([0.0, 0.0, 0.7])     # u[2] < 0.5 flips
    assert [t.label_for(y, flip) for y in (86, 87, 94, 166, 5)] == [87, 86, 93, 167, 5]
    assert [t.label_for(y, keep) for y in (86, 87, 5)] == [86, 87, 5]
    frames = coordinate_frames(8, 8)
    assert top_left(t.apply(frames, flip)[0]) == (7, 0)                # the same draw mirrors the clip
    off = build_transform(True, 'RGB', input_size=8, flip=False, flip_pairs=pairs, **RAW)
    assert off.label_for(86, flip) == 86


def test_dataset_returns_swapped_label_with_the_mirrored_clip(frames_dataset):
    from ops.dataset import VideoDataSet
    from ops.sampling import SamplingConfig
    t = build_transform(True, 'RGB', input_size=16, flip=True, flip_pairs={0: 2, 2: 0}, **RAW)
    ds = VideoDataSet(frames_dataset['root'], frames_dataset['rgb_list'], sampling=SamplingConfig(2), transform=t,
                      seed=1)
    seen = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        for i, vid in enumerate(('v0', 'v1', 'v2')):
            flipped = t.flipped(t.draw(ds.streams(i)[1]))            # the sample's own spatial stream
            label = ds[i][1]
            assert label == ({0: 2, 2: 0}.get(i, i) if flipped else i)
            seen.add((i, flipped))
    assert (0, True) in seen and (0, False) in seen


def test_colour_grayscale_erasing_hand_values():
    from ops.transforms import TrainParams
    t = build_transform(True, 'RGB', input_size=8, flip=False, color_jitter=1.0, grayscale=1.0,
                        random_erasing=1.0, **RAW)
    frames = torch.full((2, 8, 8, 3), 200, dtype=torch.uint8)
    frames[..., 1] = 100
    geometry = np.zeros(3)
    # brightness 0.5 only (contrast/saturation 1, hue 0): 200 -> 100, 100 -> 50
    out = t.apply(frames, TrainParams(geometry, ((0, 1, 2, 3), 0.5, 1.0, 1.0, 0.0), False, None))[0]
    assert out[:, 0].eq(100).all() and out[:, 1].eq(50).all() and out[:, 2].eq(100).all()
    # grayscale: 0.2989 R + 0.587 G + 0.114 B of (200, 100, 200) = 141.3 -> every channel equal
    gray = t.apply(frames, TrainParams(geometry, None, True, None))[0]
    assert gray[:, 0].eq(gray[:, 1]).all() and gray[:, 1].eq(gray[:, 2]).all()
    assert abs(float(gray[0, 0, 0, 0]) - 141.3) <= 1
    # erasing: the box is 0 in every frame and channel, the rest untouched
    erased = t.apply(frames, TrainParams(geometry, None, False, (2, 3, 4, 2)))[0]
    assert erased[:, :, 3:5, 2:6].eq(0).all()
    assert erased[:, 0].sum() == 200 * (2 * 64 - 2 * 8)


def test_extra_draws_identical_for_two_modalities_and_distribution_of_erasing_boxes():
    rgb = build_transform(True, 'RGB', input_size=32, color_jitter=0.8, grayscale=0.2, random_erasing=0.25)
    flow = build_transform(True, 'Flow', input_size=32, color_jitter=0.8, grayscale=0.2, random_erasing=0.25)
    applied = {'colour': 0, 'gray': 0, 'erase': 0}
    for i in range(400):
        a, b = rgb.draw(sample_rng(0, 0, i)), flow.draw(sample_rng(0, 0, i))
        assert np.array_equal(a.geometry, b.geometry) and (a.colour, a.gray, a.erase) == (b.colour, b.gray, b.erase)
        applied['colour'] += a.colour is not None
        applied['gray'] += a.gray
        if a.erase is not None:
            applied['erase'] += 1
            x, y, w, h = a.erase
            assert 0 <= x and x + w <= 32 and 0 <= y and y + h <= 32 and w * h <= 32 * 32 / 3 * 1.2
        if a.colour is not None:
            order, bright, contrast, sat, hue = a.colour
            assert sorted(order) == [0, 1, 2, 3] and 0.6 <= bright <= 1.4 and 0.6 <= contrast <= 1.4
            assert 0.8 <= sat <= 1.2 and -0.1 <= hue <= 0.1
    assert 0.74 < applied['colour'] / 400 < 0.86 and 0.15 < applied['gray'] / 400 < 0.25
    assert 0.19 < applied['erase'] / 400 < 0.31
    # Flow frames are not colour-jittered (2 channels), only erased.
    frames = torch.full((2, 32, 32, 2), 77, dtype=torch.uint8)
    from ops.transforms import TrainParams
    out = build_transform(True, 'Flow', input_size=32, flip=False, color_jitter=1.0, **RAW).apply(
        frames, TrainParams(np.zeros(3), ((0, 1, 2, 3), 0.5, 1.0, 1.0, 0.0), True, None))
    assert out.eq(77).all()
    with pytest.raises(ValueError, match='grayscale'):
        build_transform(True, 'RGB', grayscale=1.5)
