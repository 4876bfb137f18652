import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ops.sampling import SAMPLE_MODES, SamplingConfig, num_test_clips, sample_aligned, sample_indices, sample_rng

UNIFORM_50 = [4, 10, 16, 22, 29, 35, 41, 47]


def test_reference_uniform_vectors():
    assert sample_indices(50, 8, 1, 'val') == [UNIFORM_50]
    assert sample_indices(50, 8, 1, 'test') == [UNIFORM_50]
    assert sample_indices(50, 8, 6, 'val') == [[3, 9, 15, 20, 26, 31, 37, 43]]
    assert sample_indices(100, 8, 5, 'val') == [[7, 19, 31, 43, 55, 67, 79, 91]]


def test_twice():
    assert sample_indices(50, 8, 1, 'test', twice=True) == [UNIFORM_50, [1, 7, 13, 19, 26, 32, 38, 44]]


def test_dense_test_tsm_vector():
    clips = sample_indices(100, 8, 1, 'test', dense=True)   # window 64, stride 8, 10 clips
    assert [c[0] for c in clips] == [1, 5, 9, 13, 17, 21, 25, 29, 33, 37]
    assert clips[0] == [1, 9, 17, 25, 33, 41, 49, 57]
    assert len(clips) == num_test_clips(dense=True) == 10


def test_dense_short_video_wraps_and_repeats():
    clips = sample_indices(40, 8, 1, 'test', dense=True)
    assert all(c == clips[0] for c in clips)          # sample_pos == 1: every start is 0 (TSM too)
    assert clips[0] == [1, 9, 17, 25, 33, 1, 9, 17]   # (8 i) % 40 + 1


def test_single_dense_clip_is_centred():
    assert sample_indices(50, 8, 1, 'test', dense=True, dense_length=32, dense_number=1) == \
        [[10, 14, 18, 22, 26, 30, 34, 38]]
    assert sample_indices(50, 8, 1, 'val', dense=True, dense_length=32) == [[10, 14, 18, 22, 26, 30, 34, 38]]


def test_random_mode_test_order():
    # MML reference vectors: dense clips, then the centre clip, then (twice) the shifted clip.
    assert sample_indices(50, 8, 1, 'test', random_sample=True, dense_length=32, dense_number=1) == \
        [[10, 14, 18, 22, 26, 30, 34, 38], UNIFORM_50]
    clips = sample_indices(50, 8, 1, 'test', random_sample=True, twice=True, dense_length=32, dense_number=2)
    assert clips == [[1, 5, 9, 13, 17, 21, 25, 29], [19, 23, 27, 31, 35, 39, 43, 47], UNIFORM_50,
                     [1, 7, 13, 19, 26, 32, 38, 44]]
    assert num_test_clips(random_sample=True, twice=True, dense_number=2) == 4


def test_short_videos():
    assert sample_indices(7, 8, 1, 'test') == [[1, 2, 3, 4, 4, 5, 6, 7]]
    assert sample_indices(7, 8, 1, 'val') == [[1, 2, 3, 4, 4, 5, 6, 7]]   # TSM val gave all ones
    assert sample_indices(1, 8, 5, 'val') == [[1] * 8]
    assert sample_indices(3, 8, 1, 'train', rng=sample_rng(0, 0, 0)) == [[1] * 8]   # n <= T: zeros + 1


def test_train_segments_one_draw_per_segment():
    clip, = sample_indices(80, 8, 1, 'train', rng=sample_rng(1, 2, 3))
    assert [(i - 1) // 10 for i in clip] == list(range(8))   # avg = 10: one index inside each segment


def test_train_sorted_draws_when_segments_shorter_than_one_frame():
    clip, = sample_indices(12, 8, 6, 'train', rng=sample_rng(0, 0, 5))   # avg = 7 // 8 = 0, n > T
    assert clip == sorted(clip) and all(1 <= i <= 7 for i in clip)


def test_train_dense_start_covers_last_position():
    # Starts in [0, n - D] inclusive (TSM's exclusive bound never drew the last one).
    starts = {sample_indices(70, 8, 1, 'train', dense=True, rng=sample_rng(0, 0, i))[0][0] for i in range(200)}
    assert starts == set(range(1, 8))


def test_random_sample_train_coin_uses_both_paths():
    kinds = set()
    for i in range(40):
        clip, = sample_indices(200, 8, 1, 'train', random_sample=True, rng=sample_rng(0, 0, i))
        kinds.add(np.diff(clip).tolist() == [8] * 7)   # dense stride 64 // 8
    assert kinds == {True, False}


def test_same_rng_same_clips_and_train_needs_rng():
    a = sample_indices(90, 8, 1, 'train', rng=sample_rng(3, 1, 7))
    assert a == sample_indices(90, 8, 1, 'train', rng=sample_rng(3, 1, 7))
    assert a != sample_indices(90, 8, 1, 'train', rng=sample_rng(3, 2, 7))
    with pytest.raises(ValueError, match='rng'):
        sample_indices(90, 8, 1, 'train')


def test_invalid_arguments():
    with pytest.raises(ValueError, match='train, val, test'):
        sample_indices(10, 8, 1, 'eval')
    with pytest.raises(ValueError, match='num_frames'):
        sample_indices(0, 8)


def test_aligned_shortest_modality_and_shifts():
    rgb, flow = sample_aligned([50, 48], [1, 5], 'train', num_segments=8, dense=True, dense_length=32,
                               rng=sample_rng(0, 0, 0))
    (r,), (f,) = rgb, flow
    assert np.all(np.diff(f) == 4) and np.all(np.diff(r) == 4)
    assert 0 <= r[0] - f[0] <= 2                       # shift in [0, 50 - 48]
    assert sample_aligned([30, 30], [1, 5], 'val', num_segments=4)[0] == \
        sample_aligned([30, 30], [1, 5], 'val', num_segments=4)[1]


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 2000), T=st.integers(1, 64), L=st.integers(1, 20), mode=st.sampled_from(SAMPLE_MODES),
       dense=st.booleans(), twice=st.booleans(), random_sample=st.booleans(), dense_length=st.integers(1, 128),
       dense_number=st.integers(1, 12), seed=st.integers(0, 2 ** 31))
def test_every_index_in_range(n, T, L, mode, dense, twice, random_sample, dense_length, dense_number, seed):
    clips = sample_indices(n, T, L, mode, dense=dense, twice=twice, random_sample=random_sample,
                           dense_length=dense_length, dense_number=dense_number, rng=sample_rng(seed, 0, 0))
    assert all(len(c) == T and all(1 <= i <= n for i in c) for c in clips)
    if mode == 'test':
        assert len(clips) == num_test_clips(dense=dense, twice=twice, random_sample=random_sample,
                                            dense_number=dense_number)
    else:
        assert len(clips) == 1


@settings(max_examples=100, deadline=None)
@given(counts=st.lists(st.integers(1, 500), min_size=1, max_size=3), T=st.integers(1, 16),
       mode=st.sampled_from(SAMPLE_MODES), seed=st.integers(0, 1000))
def test_aligned_indices_in_range(counts, T, mode, seed):
    per_mod = sample_aligned(counts, [1] * len(counts), mode, num_segments=T, rng=sample_rng(seed, 0, 0))
    for n, clips in zip(counts, per_mod):
        assert all(1 <= i <= n for c in clips for i in c)


def test_sampling_config_is_checked_once_and_drives_sample_indices():
    config = SamplingConfig(num_segments=4, mode='test', random_sample=True, twice=True, dense_number=3)
    assert config.num_clips == 3 + 2 == len(config.clips(100, 1))
    assert config.clips(100, 5) == sample_indices(100, 4, 5, 'test', random_sample=True, twice=True, dense_number=3)
    assert SamplingConfig(mode='val', twice=True).num_clips == 1     # twice adds a clip in test mode only
    rng_a, rng_b = sample_rng(2, 0, 0), sample_rng(2, 0, 0)
    assert SamplingConfig(num_segments=4).aligned_clips([30, 34], [1, 5], rng_a) == \
        sample_aligned([30, 34], [1, 5], 'train', num_segments=4, rng=rng_b)
    for bad, message in ((dict(mode='eval'), 'allowed: train, val, test'), (dict(num_segments=0), 'num_segments'),
                         (dict(dense_length=0), 'dense_length must be >= 1, got 0')):
        with pytest.raises(ValueError, match=message):
            SamplingConfig(**bad)
