"""Evaluate a uni-directional TSM checkpoint frame by frame with the streaming model (ops/online.py).

    python test_models.py toy --weights W --save_scores offline.npz
    python scripts/online_eval.py toy --weights W --compare offline.npz

Takes test_models.py's options and builds the same test views (sampling, crops, transform). Each view's
T frames go through ``step`` one at a time (the views of a video are streamed as one batch), and a
video's score is the mean of its per-frame logits over frames and views: what test_models.py computes
with average consensus. Prints top-1 / top-5 and, with --compare (a test_models.py --save_scores file of
the same checkpoint), how many per-video predictions agree and the max abs difference of the scores.
Single process, one checkpoint.
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from opts import get_test_parser, parse_test_args  # noqa: E402
from ops import distributed as D  # noqa: E402
from ops.online import stream_clip, to_streaming  # noqa: E402
from ops.scores import align_to, format_metrics, load_scores, metrics, video_scores  # noqa: E402


def _load_test_models():
    # test_models.py is an entry point, not a package module; ModelUnderTest builds views exactly as it does.
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'test_models.py')
    spec = importlib.util.spec_from_file_location('test_models_entry', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_args(argv=None):
    parser = get_test_parser()
    parser.prog = 'online_eval.py'
    parser.add_argument('--compare', default=None, help='test_models.py --save_scores file to compare with')
    args = parse_test_args(argv, parser=parser)
    if len(args.weights_list) != 1:
        parser.error('--weights: one checkpoint')
    if args.compare and not os.path.isfile(args.compare):
        parser.error(f'--compare: no such file {args.compare!r}')
    return args


@torch.no_grad()
def main(args):
    tm = _load_test_models()
    ctx = D.setup_distributed(device=args.device)
    try:
        mt = tm.ModelUnderTest(args, 0, ctx)
        if mt.model.temporal.module != 'tsm' or mt.model.temporal.shift_direction != 'uni':
            raise SystemExit(f'{mt.path}: not a uni-directional TSM checkpoint (train with --shift_direction uni)')
        stream = to_streaming(mt.model)
        T = mt.num_segments
        per_view = []
        for i in range(len(mt.dataset)):
            clips = mt.dataset[i][0]                                  # (V, T*3, h, w)
            V, _, h, w = clips.shape
            frames, _ = stream_clip(stream, clips.reshape(V, T, 3, h, w).to(ctx.device))   # (V, T, C)
            per_view.append(frames.mean(1).float().cpu().numpy())      # segment consensus per view
        logits = np.stack(per_view)                                    # (N, V, C)
        labels = np.array([r.label for r in mt.dataset.records], dtype=np.int64)
        scores = video_scores(logits, args.softmax)
        res, _ = metrics(scores, labels, mt.spec.num_class)
        print(f'streaming {mt.path}: {len(labels)} videos, {T} frames x {mt.num_views} views, '
              f'{format_metrics(res)}', flush=True)
        if args.compare:
            ref = load_scores(args.compare)
            ref_scores = video_scores(align_to(mt.dataset.video_ids, ref['video_ids'], ref['scores'], args.compare),
                                      args.softmax)
            same = int((ref_scores.argmax(1) == scores.argmax(1)).sum())
            print(f'vs {args.compare}: {same}/{len(labels)} per-video predictions agree; max abs score '
                  f'difference {np.abs(ref_scores - scores).max():.3g}', flush=True)
    finally:
        D.cleanup()


if __name__ == '__main__':
    main(parse_args())
