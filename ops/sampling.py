"""Temporal sampling: one pure function for every mode (TSM + MML formulas, 1-based frame indices).

A clip is a list of T segment START indices in [1, n]; the dataset reads L consecutive frames from each
start, clamped to n. Decisions that differ from the reference code (all documented in the README):
  * val == uniform test: TSM's val path returns all-ones for n <= T + L - 1; we always use the centre
    formula, which is well defined for short videos (n=7, T=8 -> [1,2,3,4,4,5,6,7], TSM's test values).
  * when n < L, the sampling length is taken as 1 (every start is 1, reads clamp), so indices stay in
    [1, n] for any n, T, L >= 1.
  * dense train start is drawn from [0, max(0, n - dense_length)] inclusive; TSM's exclusive
    randint(0, sample_pos - 1) never drew the last start.
  * dense validation is deterministic (the single centred clip); TSM drew a random start.
  * dense test starts are linspace(0, max(0, n - dense_length), K) as integers, which equals TSM's
    linspace(0, sample_pos - 1, K) with sample_pos = max(1, 1 + n - dense_length): for n=100, T=8,
    window 64, K=10 the starts are [1,5,...,37] after +1 (reference check vector). A single dense clip
    (K=1) starts at int((sample_pos - 1) / 2), i.e. it is centred (MML).
"""
import dataclasses
from typing import List, Optional, Sequence

import numpy as np

SAMPLE_MODES = ('train', 'val', 'test')


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of every random decision of one sample: same (seed, epoch, index), same views."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def _check(mode, **counts):
    if mode not in SAMPLE_MODES:
        raise ValueError(f'unknown sampling mode {mode!r}; allowed: {", ".join(SAMPLE_MODES)}')
    for name, value in counts.items():
        if int(value) < 1:
            raise ValueError(f'{name} must be >= 1, got {value}')


def _span(n, length):
    # Number of valid start positions; at least 1 so that videos shorter than L still sample frame 1.
    return max(n - length + 1, 1)


def _uniform(n, T, length):
    tick = _span(n, length) / float(T)
    return [int(tick / 2.0 + tick * i) for i in range(T)]


def _shifted(n, T, length):
    tick = _span(n, length) / float(T)
    return [int(tick * i) for i in range(T)]


def _dense(n, T, dense_length, start):
    stride = dense_length // T
    return [(i * stride + start) % n for i in range(T)]


def _dense_starts(n, dense_length, k):
    last = max(0, n - dense_length)
    if k == 1:
        return [last // 2]
    return [int(s) for s in np.linspace(0, last, num=k, dtype=int)]


def _train_segments(n, T, length, rng):
    span = _span(n, length)
    avg = span // T
    if avg > 0:
        return [i * avg + int(r) for i, r in enumerate(rng.integers(avg, size=T))]
    if n > T:
        return sorted(int(r) for r in rng.integers(span, size=T))
    return [0] * T


def _offsets(n, T, length, mode, dense, twice, random_sample, dense_length, dense_number, rng,
             random_clips=None):
    """0-based clip offsets for one modality of n frames."""
    if mode == 'test' and random_clips:
        # ILA protocol: K clips drawn with the TSN training formula from the sample's seeded generator.
        if rng is None:
            raise ValueError('random_clips sampling needs rng (np.random.Generator)')
        return [_train_segments(n, T, length, rng) for _ in range(int(random_clips))]
    if mode == 'train':
        if rng is None:
            raise ValueError('train sampling needs rng (np.random.Generator)')
        if dense or (random_sample and int(rng.integers(2)) == 0):
            start = int(rng.integers(max(0, n - dense_length) + 1))
            return [_dense(n, T, dense_length, start)]
        return [_train_segments(n, T, length, rng)]
    if mode == 'val':
        if dense:
            return [_dense(n, T, dense_length, _dense_starts(n, dense_length, 1)[0])]
        return [_uniform(n, T, length)]
    clips = []
    if dense or random_sample:
        clips += [_dense(n, T, dense_length, s) for s in _dense_starts(n, dense_length, dense_number)]
    if random_sample or not dense:
        clips.append(_uniform(n, T, length))
        if twice:
            clips.append(_shifted(n, T, length))
    return clips


def sample_indices(num_frames: int, num_segments: int, new_length: int = 1, mode: str = 'val', *,
                   dense: bool = False, twice: bool = False, random_sample: bool = False,
                   dense_length: int = 64, dense_number: int = 10, random_clips: Optional[int] = None,
                   rng: Optional[np.random.Generator] = None) -> List[List[int]]:
    """Clips of T 1-based segment starts.

    train: one clip (TSN segments, dense window, or with random_sample a fair coin between the two).
    val: one deterministic clip (centre formula, or the centred dense window).
    test: dense clips (dense or random_sample), then the centre clip (unless dense only), then the
    shifted clip if twice. random_clips=K (test only): K clips drawn like training clips from rng.
    """
    _check(mode, num_frames=num_frames, num_segments=num_segments, new_length=new_length,
           dense_length=dense_length, dense_number=dense_number)
    offsets = _offsets(int(num_frames), int(num_segments), int(new_length), mode, dense, twice,
                       random_sample, int(dense_length), int(dense_number), rng, random_clips)
    return [[o + 1 for o in clip] for clip in offsets]


def num_test_clips(*, dense: bool = False, twice: bool = False, random_sample: bool = False,
                   dense_number: int = 10, random_clips: Optional[int] = None) -> int:
    """Clips per video that sample_indices returns in test mode."""
    if random_clips:
        return int(random_clips)
    if random_sample:
        return dense_number + (2 if twice else 1)
    if dense:
        return dense_number
    return 2 if twice else 1


def sample_aligned(num_frames_per_modality: Sequence[int], new_lengths: Sequence[int], mode: str = 'train', *,
                   num_segments: int, dense: bool = False, twice: bool = False, random_sample: bool = False,
                   dense_length: int = 64, dense_number: int = 10, random_clips: Optional[int] = None,
                   rng: Optional[np.random.Generator] = None) -> List[List[List[int]]]:
    """MML alignment: offsets computed once on the shortest modality (with that modality's L).

    Returns, per modality, its clips. In train mode each modality m then gets one random shift in
    [0, n_m - n_min], drawn for every modality in list order (so all processes consume rng
    identically). val/test add no shift: every modality gets the shortest modality's indices, which is
    exact co-indexing when all counts are equal (the distillation case).
    """
    counts = [int(n) for n in num_frames_per_modality]
    if not counts or len(counts) != len(new_lengths):
        raise ValueError(f'need one new_length per modality, got {len(new_lengths)} for {len(counts)} counts')
    shortest = int(np.argmin(counts))
    base = sample_indices(counts[shortest], num_segments, new_lengths[shortest], mode, dense=dense,
                          twice=twice, random_sample=random_sample, dense_length=dense_length,
                          dense_number=dense_number, random_clips=random_clips, rng=rng)
    result = []
    for n in counts:
        shift = int(rng.integers(n - counts[shortest] + 1)) if mode == 'train' else 0
        result.append([[i + shift for i in clip] for clip in base])
    return result


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How a dataset picks the clips of a video: sample_indices' options (see its docstring), checked once.

    The defaults are a training dataset's (TSN's 3 segments); frames per segment belong to the modality and
    are passed to clips() instead."""
    num_segments: int = 3
    mode: str = 'train'
    dense: bool = False
    twice: bool = False
    random_sample: bool = False
    dense_length: int = 64
    dense_number: int = 10
    random_clips: Optional[int] = None

    def __post_init__(self):
        _check(self.mode, num_segments=self.num_segments, dense_length=self.dense_length,
               dense_number=self.dense_number)

    def _options(self) -> dict:
        # the keyword options of sample_indices and sample_aligned
        return dict(dense=self.dense, twice=self.twice, random_sample=self.random_sample,
                    dense_length=self.dense_length, dense_number=self.dense_number, random_clips=self.random_clips)

    @property
    def num_clips(self) -> int:
        """Clips per video: num_test_clips in test mode, one in train and val mode."""
        if self.mode != 'test':
            return 1
        return num_test_clips(dense=self.dense, twice=self.twice, random_sample=self.random_sample,
                              dense_number=self.dense_number, random_clips=self.random_clips)

    def clips(self, num_frames: int, new_length: int, rng: Optional[np.random.Generator] = None) -> List[List[int]]:
        """sample_indices of one video of num_frames frames, new_length frames read per segment start."""
        return sample_indices(num_frames, self.num_segments, new_length, self.mode, rng=rng, **self._options())

    def aligned_clips(self, num_frames_per_modality: Sequence[int], new_lengths: Sequence[int],
                      rng: Optional[np.random.Generator] = None) -> List[List[List[int]]]:
        """sample_aligned of one video: per modality, its clips."""
        return sample_aligned(num_frames_per_modality, new_lengths, self.mode, num_segments=self.num_segments,
                              rng=rng, **self._options())
