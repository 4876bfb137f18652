"""Fuse score files saved by `test_models.py --save_scores` and print the same metrics (top-1, top-5 with
more than 5 classes, mean class accuracy, ECE), without re-running any model (RGB + Flow + RGBDiff models,
or 8- and 16-frame models of one modality).

    python scripts/ensemble_scores.py rgb.npz flow.npz --coeff 1,1.5 [--softmax | --view_softmax] [--num_class N]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from ops.scores import add_calibration, align_to, format_metrics, fused_scores, load_scores, metrics  # noqa: E402
from ops.heads import head_metrics, heads_text, metrics_line, same_heads  # noqa: E402


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scores", nargs="+", help="npz files from test_models.py --save_scores")
    p.add_argument("--coeff", default=None, help="comma floats, one per file (default all 1)")
    p.add_argument("--softmax", action="store_true", help="softmax each model's view-averaged logits first")
    p.add_argument("--view_softmax", action="store_true",
                   help="softmax of every view, then the average (as test_models.py --view_softmax); "
                        "exclusive with --softmax")
    p.add_argument("--num_class", type=int, default=None, help="default: the score files' class count")
    return p


def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.softmax and args.view_softmax:
        parser.error("--softmax (after averaging logits) and --view_softmax (before averaging) are exclusive")
    try:
        coeffs = [1.0] * len(args.scores) if args.coeff is None else [float(c) for c in args.coeff.split(",")]
    except ValueError:
        parser.error(f"--coeff: cannot parse {args.coeff!r} (comma floats)")
    if len(coeffs) != len(args.scores):
        parser.error(f"--coeff has {len(coeffs)} values for {len(args.scores)} score files")
    try:
        files = [load_scores(p) for p in args.scores]
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    ref = files[0]
    num_class = ref["scores"].shape[2]
    heads = ref["heads"]             # multi-head score files: fused and reported per head
    per_model = []
    for path, f, c in zip(args.scores, files, coeffs):
        if not same_heads(f["heads"], heads):
            parser.error(f"{path} has the heads {heads_text(f['heads'])}, {args.scores[0]} has {heads_text(heads)}")
        if f["scores"].shape[2] != num_class:
            parser.error(f"{path} has {f['scores'].shape[2]} classes, {args.scores[0]} has {num_class}")
        try:
            labels = align_to(ref["video_ids"], f["video_ids"], f["labels"], path)
            per_model.append(align_to(ref["video_ids"], f["video_ids"], f["scores"], path))
        except ValueError as exc:
            parser.error(str(exc))
        if not np.array_equal(labels, ref["labels"]):
            parser.error(f"{path}: labels differ from {args.scores[0]} for the same videos")
        print(f"{os.path.basename(path)} (coeff {c:g}): {f['protocol']}")
    if args.num_class is not None and args.num_class < num_class:
        parser.error(f"--num_class {args.num_class} is smaller than the score files' {num_class} classes")
    fused = fused_scores(per_model, coeffs, softmax=args.softmax, view_softmax=args.view_softmax, heads=heads)
    if heads:
        if args.num_class is not None:
            parser.error(f"--num_class does not apply to multi-head score files (heads {heads_text(heads)})")
        res, _ = head_metrics(fused, ref["labels"], heads, metrics)
        add_calibration(res, fused, ref["labels"], coeffs, args.softmax or args.view_softmax, heads)
        print(f"Overall {metrics_line(res, heads)}  ({res['num_videos']:,} videos)")
        return res
    res, _ = metrics(fused, ref["labels"], args.num_class or num_class)
    add_calibration(res, fused, ref["labels"], coeffs, args.softmax or args.view_softmax)
    print(f"Overall {format_metrics(res)}  ({res['num_videos']:,} videos)")
    return res


if __name__ == "__main__":
    main()
