"""Print the frame indices a sampling protocol picks, as JSON, to check a protocol before a long run.

    python scripts/show_sampling.py --num_frames 50 --num_segments 8 --mode val
    {"clips": [[4, 10, 16, 22, 29, 35, 41, 47]]}
    python scripts/show_sampling.py --num_frames 300 --num_segments 8 --mode test --random_sample --twice_sample

Each clip lists T 1-based segment START frames; the loader reads L consecutive frames from each start
(clamped to the last frame). The same function (ops.sampling.sample_indices) drives training,
validation and testing. Train-mode draws come from numpy's default_rng(--seed).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402

from ops.modality import MODALITIES, frames_per_segment  # noqa: E402
from ops.sampling import SAMPLE_MODES, sample_indices  # noqa: E402
from ops.utils import HelpFormatter  # noqa: E402


def get_args_parser():
    p = argparse.ArgumentParser(
        description='Print the 1-based segment start indices of a sampling protocol as JSON '
                    '{"clips": [[...], ...]}.',
        formatter_class=HelpFormatter)
    p.add_argument('--num_frames', type=int, required=True, help='frames in the video (n)')
    p.add_argument('--num_segments', type=int, required=True, help='segments per clip (T)')
    p.add_argument('--new_length', type=int, default=None,
                   help='consecutive frames read per segment (L); default 1, or the modality default '
                        'with --modality (for RGBDiff it counts differences, as in the model)')
    p.add_argument('--modality', choices=MODALITIES, default=None,
                   help='derive L like the dataset does (RGB 1, Flow 5, RGBDiff new_length + 1)')
    p.add_argument('--mode', choices=SAMPLE_MODES, default='val', help='sampling mode')
    p.add_argument('--dense_sample', action='store_true', help='dense sampling window')
    p.add_argument('--twice_sample', action='store_true', help='test: add the shifted uniform clip')
    p.add_argument('--random_sample', action='store_true',
                   help='MML: train coin between dense and uniform; test: dense clips + uniform')
    p.add_argument('--dense_length', type=int, default=64, help='dense window length')
    p.add_argument('--dense_number', type=int, default=10, help='dense clips at test time')
    p.add_argument('--seed', type=int, default=0, help='seed of the train-mode random draws')
    return p


def main(argv=None):
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.modality is not None:
        length = frames_per_segment(args.modality, args.new_length)
    else:
        length = 1 if args.new_length is None else args.new_length
    try:
        clips = sample_indices(args.num_frames, args.num_segments, length, args.mode,
                               dense=args.dense_sample, twice=args.twice_sample,
                               random_sample=args.random_sample, dense_length=args.dense_length,
                               dense_number=args.dense_number, rng=np.random.default_rng(args.seed))
    except ValueError as err:
        parser.error(str(err))
    print(json.dumps({'clips': clips}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
