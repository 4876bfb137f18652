"""Export a checkpoint to ONNX or torch.export (.pt2) and prove the file computes what eager computes.

    python scripts/export.py --weights ckpt.best.pth.tar --format onnx --output tsm.onnx --check clip.mp4
    python scripts/export.py --weights ckpt.best.pth.tar --format pt2 --num_segments 16 --batch 1 --check val.txt

The exported model takes normalised clips (B, T*F*C, S, S) and returns logits (B, num_class); its config,
normalisation and class names are stored in the file (ops/export.py). The check decodes real clips from
--check (videos, folders or a list, read exactly as predict.py / test_models.py read them; random
input only when --check is not given), runs eager and the exported file (onnxruntime, or
torch.export.load), prints the max absolute logit difference and the top-1 agreement, and exits 1 when
the difference exceeds --atol. A model that cannot be exported exits 2 with the reason.
Measured on a shared 2-core CPU machine: a ResNet-18 TSM (T=4, 32 px) exports to ONNX and checks one
clip in about 15 s wall, most of it start-up and imports; torch.export (.pt2) takes about twice as long.
"""
import argparse
import itertools
import os
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ops.dataset_config import parse_class_names  # noqa: E402
from ops.export import (FORMATS, ExportError, compare, export_onnx, export_pt2, load_exported,  # noqa: E402
                        load_model, metadata)


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="checkpoint written by main.py (or converted)")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--output", default=None, help="exported file (default: the checkpoint's name + .onnx/.pt2)")
    p.add_argument("--num_segments", type=int, default=None, help="T of the exported model (default: checkpoint)")
    p.add_argument("--input_size", type=int, default=None, help="S, crop side in pixels (default: checkpoint)")
    p.add_argument("--batch", default="dynamic", help="'dynamic' or a fixed batch size")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17; 19 for MSN's DeformConv)")
    p.add_argument("--check", nargs="*", default=None, metavar="INPUT",
                   help="videos, folders or a list for the parity check (predict.py's inputs)")
    p.add_argument("--max_clips", type=int, default=8, help="clips (views) compared at most")
    p.add_argument("--atol", type=float, default=1e-3, help="largest accepted |exported - eager| logit difference")
    p.add_argument("--class_names", default=None,
                   help='text-head models (ILA --ila_head text): comma list of the class names the exported '
                        'file classifies (default: the trained ones); their text features become constants')
    return p


def parse_args(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    if not os.path.isfile(args.weights):
        parser.error(f"--weights: no such file {args.weights!r}")
    suffix = "." + args.format
    if args.output is None:
        args.output = os.path.splitext(args.weights.replace(".pth.tar", ""))[0] + suffix
    elif not args.output.endswith(suffix):
        parser.error(f"--output {args.output!r} must end in {suffix} for --format {args.format}")
    if args.batch == "dynamic":
        args.batch_size = None
    else:
        try:
            args.batch_size = int(args.batch)
        except ValueError:
            parser.error(f"--batch {args.batch!r}: 'dynamic' or a positive integer")
        if args.batch_size < 1:
            parser.error("--batch must be >= 1")
    for name in ("num_segments", "input_size", "max_clips"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    args.class_name_list = None
    if args.class_names is not None:
        try:
            args.class_name_list = parse_class_names(args.class_names)
        except ValueError as exc:
            parser.error(str(exc))
    if args.opset is not None and args.opset < 7:
        parser.error(f"--opset {args.opset}: ONNX opsets below 7 cannot express these models (default 17)")
    return args


def real_clips(args, model):
    """Up to --max_clips evaluation views (K, T*F*C, h, w) of the --check inputs, via predict.py's reading."""
    import predict
    argv = ["--weights", args.weights, "--test_segments", str(model.num_segments), "--no_progress",
            *args.check]
    pargs = predict.parse_args(argv)
    items, errors, _ = predict.collect_inputs(pargs.inputs, pargs.root_path)   # (notes: what was found)
    failed = dict(errors)
    modality = [model.modality]
    ctx = types.SimpleNamespace(device=torch.device("cpu"))

    def views():
        # lazy: no further group is probed and no further video decoded once --max_clips views are read
        for kind in ("video", "frames"):
            group = [it for it in items if it.kind == kind]
            for m in predict.group_models(pargs, ctx, group, modality, failed) if group else []:
                for i in range(len(m.dataset)):
                    yield from m.dataset[i][0]

    clips = list(itertools.islice(views(), args.max_clips))
    for path, message in failed.items():
        print(f"export: --check {path}: {message}", file=sys.stderr)
    if not clips:
        raise SystemExit("export: no readable clip in --check")
    clips = torch.stack(clips)
    # the loaders hand uint8 pixels to the model; the exported graph takes normalised float clips
    return model.normalize_input(clips) if clips.dtype == torch.uint8 else clips


def main(argv=None):
    args = parse_args(argv)
    try:
        model, config, class_names = load_model(args.weights, args.num_segments, args.class_name_list)
    except (OSError, RuntimeError, ValueError) as exc:
        raise SystemExit(f"--weights {args.weights}: {exc}") from None
    size = args.input_size or model.crop_size
    meta = metadata(model, config, class_names, size, args.weights)
    example = torch.randn(args.batch_size or 2, model.input_channels, size, size)
    try:
        if args.format == "onnx":
            opset = export_onnx(model, example, args.output, args.batch_size is None, args.opset, meta)
            what = f"onnx opset {opset}"
        else:
            export_pt2(model, example, args.output, args.batch_size is None, meta)
            what = "torch.export program"
    except ExportError as exc:
        print(f"export: {args.weights}: {exc}", file=sys.stderr)
        return 2
    batch = "dynamic batch" if args.batch_size is None else f"batch {args.batch_size}"
    print(f"exported {args.output} ({what}, {batch}); input {meta['input']}")

    if args.check:
        clips = real_clips(args, model)
        source = f"{len(clips)} real clips from {', '.join(args.check)}"
        if clips.shape[-1] != size:
            clips = F.interpolate(clips, size=(size, size), mode="bilinear", align_corners=False)
            source += f" (resized to {size} px)"
    else:
        clips = torch.randn(args.max_clips, model.input_channels, size, size)
        source = f"{len(clips)} random clips (give --check VIDEO for real ones)"
    result = compare(model, load_exported(args.output), clips, args.batch_size)
    ok = result["max_abs_diff"] <= args.atol
    print(f"parity on {source}: max |exported - eager| {result['max_abs_diff']:.3g} (logits up to "
          f"{result['max_abs_logit']:.3g}), top-1 agreement {100 * result['top1_agreement']:.1f}% -> "
          f"{'OK' if ok else 'FAILED'} (--atol {args.atol:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
