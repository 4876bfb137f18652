"""Multi-crop x multi-clip evaluation of one checkpoint or an ensemble (TSM / MML compatible).

    python test_models.py somethingv2 --weights ckpt.best.pth.tar --test_crops 3 --twice_sample --full_res
    python test_models.py toy --weights rgb.pth.tar,flow.pth.tar --coeff 1,1.5 --save_scores s.npz

Semantics (TSM): per video, the logits of every view (crops x clips, crop-major) are averaged; --softmax
applies a softmax AFTER that average (--view_softmax instead averages per-view softmaxes, TDN/MSN/ILA); an
ensemble is the coefficient-weighted sum of the per-model scores
(TSM also divided by the number of models, which changes no ranking). Models without a temporal module
(TSN) run per frame and their frame logits are averaged, as in TSM. The model is rebuilt from the
checkpoint's own configuration; flags only change the test protocol. Videos are sharded over torchrun /
SLURM / per-rank processes and gathered back; results do not depend on --batch_size,
--max_views_per_batch or the number of processes.

Outputs (main process): the protocol line and metrics on stdout (top-5 only with more than 5 classes;
ECE: expected calibration error, 15 bins, of the fused scores' probabilities); confusion.npy,
confusion.png, per_class.csv, reliability.png and summary.json in --output_dir (default: next to
--save_scores, else eval_DATASET next to the first checkpoint); --save_scores PATH.npz (one file per model
of an ensemble: PATH.0.npz, ...), which scripts/ensemble_scores.py fuses without re-running models;
--csv_file in TSM's formats. The last lines name every file written. A multi-head
checkpoint (ops/heads.py, e.g. EPIC-Kitchens verb/noun) reports top-1/top-5 and ECE per head and the action
(every head right), and writes each report file per head (confusion_verb.png, reliability_noun.png, ...).
"""
import json
import logging
import os
import sys
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from opts import audio_options, dataset_spec, parse_test_args
from ops import distributed as D
from ops import features as feature_io
from ops.checkpoint import load_checkpoint, load_weights, model_config_from_checkpoint
from ops.dataset import VideoDataSet, check_list_counts, parse_list, worker_init_fn
from ops.heads import check_heads, check_same_heads, head_file, head_metrics, heads_text, metrics_line, same_heads, \
    split_heads
from ops.dataset_config import read_class_names
from ops.models import TSN, has_text_head, is_temporal, to_channels_last, with_class_names
from ops.layout_dataset import LayoutDataSet
from ops.readers import ReaderConfig
from ops.sampler import ShardSampler
from ops.sampling import SamplingConfig
from ops.scores import (add_calibration, align_to, format_metrics, fused_scores, metrics, save_scores,
                        write_report, write_tsm_csv)
from ops.transforms import build_transform
from ops.utils import AMP_DTYPES, atomic_open, progress_bar, to_device
from ops.video_io import count_shorter

logger = logging.getLogger("test_models")


def protocol_text(num_frames, crops, clips, crop_size, full_res, num_videos, mode):
    """e.g. '8 frames x 3 crops x 2 clips (twice), 256 px full-res, 24,777 videos'; crop_size None: boxes."""
    res = f"{crop_size} px" + (" full-res" if full_res else "") if crop_size is not None else "whole-frame boxes"
    return (f"{num_frames} frames x {crops} crop{'s' if crops > 1 else ''} x {clips} clip"
            f"{'s' if clips > 1 else ''} ({mode}), {res}, {num_videos:,} videos")


def dense_short_note(dataset, args):
    """', k of N videos shorter than the W-frame dense window' for dense sampling (their dense clips wrap and
    all test clips are the same clip, TSM's formula), else ''. Video lists are probed (cached for the loader)."""
    if not args.dense_sample:
        return ""
    short = count_shorter(dataset.root_path, dataset.records, dataset.reading.data_format, args.dense_length)
    return f", {short} of {len(dataset.records)} videos shorter than the {args.dense_length}-frame dense window"


def sampling_mode(args):
    """The sampling protocol's name in reports: uniform, dense, twice, random[+twice] or random<K>."""
    if args.random_clips:
        return f"random{args.random_clips}"
    if args.random_sample:
        return "random" + ("+twice" if args.twice_sample else "")
    if args.dense_sample:
        return "dense"
    return "twice" if args.twice_sample else "uniform"


class ModelUnderTest:
    """One checkpoint with its own modality, segments, data set and loader.

    Everything that can be wrong with a checkpoint or a list raises SystemExit naming it, before any
    video is decoded. keep_ids restricts the list to these videos (ensemble partner of a --max_num run).
    spec (a DatasetInfo) and records replace the dataset and its test list (predict.py: videos given on
    the command line); dataset_class is VideoDataSet or a subclass (predict.py's windows of long videos).
    """

    def __init__(self, args, index, ctx, keep_ids=None, records=None, dataset_class=VideoDataSet, spec=None):
        """index: which of --weights; the model is rebuilt from the checkpoint's own config (the --arch,
        --modality and shift flags only override what the file does not say), then its test set."""
        path = args.weights_list[index]
        overrides = {k: v for k, v in dict(arch=args.arch, modality=args.modality,
                                           shift_div=args.shift_div, shift_place=args.shift_place,
                                           shift_direction=args.shift_direction).items()
                     if v is not None}
        if args.shift:
            overrides["is_shift"] = True
        try:
            ckpt = load_checkpoint(path, require=("state_dict",))
            refuse_overrides_of_configured(ckpt, overrides, path)
            config = model_config_from_checkpoint(ckpt, path=path, **overrides)
            temporal = is_temporal(config)
        except (OSError, RuntimeError, ValueError) as exc:
            raise SystemExit(f"--weights {path}: {exc}") from None
        self.path = path
        self.modality = config["modality"]
        self.num_segments = args.test_segments_list[index] or config["num_segments"]
        # Whole clips for temporal models, and for per-segment features (ops/features.py), which need the
        # clip in one call: a TSN's frames do not interact, so its logits are the same either way.
        self.temporal = temporal or bool(args.save_features and args.per_segment)
        try:
            spec = spec or test_data_spec(args, index, ckpt, self.modality, heads=config.get("heads"))
            if records is None:
                records = parse_list(spec.val_list, spec.data_format, option="--test_list", heads=spec.heads)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"{path} ({self.modality}): {exc}") from None
        self.spec = spec
        self.heads = check_heads(config["heads"]) if config.get("heads") else None
        if not same_heads(self.heads, spec.heads):
            raise SystemExit(f"{path}: the checkpoint has the heads {heads_text(self.heads)} but the list of "
                             f"dataset {args.dataset} has {heads_text(spec.heads)}")
        if has_text_head(config) and spec.categories is not None:
            # A text head classifies over the class names given (zero-shot), else over its trained list.
            try:
                names = read_class_names(spec.category_file) if spec.category_file else spec.categories
                config = with_class_names(config, names)
            except (OSError, ValueError) as exc:
                raise SystemExit(f"{path}: {exc}") from None
        if config["num_class"] != spec.num_class:
            raise SystemExit(f"{path}: the checkpoint has {config['num_class']} classes but dataset "
                             f"{args.dataset} has {spec.num_class} (--num_class / --category_file)")
        if keep_ids is not None:
            records = [r for r in records if r.video_id in keep_ids]
        elif args.max_num > 0:
            records = records[:args.max_num]
        check_modality_matches(self.modality, spec, records, path)

        # Test-time model: weights come from the file (the config's pretrain is 'none'); scores are always
        # averaged over segments and views.
        config = dict(config, consensus_type="avg")
        # Temporal models see the whole clip; a TSN (per-frame) model is run on single frames as TSM does.
        config["num_segments"] = self.num_segments if self.temporal else 1
        try:
            self.model = TSN.from_config(config)
            report = load_weights(self.model, ckpt["state_dict"], strict=True)
        except (RuntimeError, ValueError) as exc:
            raise SystemExit(f"--weights {path}: {exc}") from None
        if report.get("changed"):
            logger.info("%s: %s", path, report)
        if args.save_features and not self.model.has_linear_head:
            raise SystemExit(f"--save_features: {path} classifies with a text head (cosine against class-name "
                             "features adapted per video), so its logits are no linear layer of features")
        self.model.eval().to(ctx.device)
        if args.channels_last:
            to_channels_last(self.model)
        self.forward = torch.compile(self.model) if args.compile else self.model
        if self.modality == "Layout":     # boxes of the whole frame: no crops (ops/layout.py)
            transform = None
            dataset_class = LayoutDataSet
        else:
            transform = build_transform(False, self.modality, input_size=self.model.crop_size,
                                        scale_size=args.scale_size or (
                                            spec.scale_size if self.model.crop_size == spec.input_size
                                            else self.model.scale_size),
                                        test_crops=args.test_crops, full_res=args.full_res,
                                        **self.model.normalization(), output="uint8")
        self.crop_size = transform.crop_size if transform is not None else None
        try:
            sampling = SamplingConfig(num_segments=self.num_segments, mode="test", dense=args.dense_sample,
                                      twice=args.twice_sample, random_sample=args.random_sample,
                                      dense_length=args.dense_length, dense_number=args.dense_number,
                                      random_clips=args.random_clips)
            reading = ReaderConfig(data_format=spec.data_format, image_tmpl=spec.image_tmpl,
                                   start_index=spec.start_index, video_backend=args.video_backend,
                                   autorotate=args.autorotate, audio=spec.audio, strict=True)
            self.dataset = dataset_class(
                spec.val_root_path, spec.val_list, new_length=config.get("new_length"), modality=self.modality,
                transform=transform, sampling=sampling, reading=reading, seed=args.seed, num_class=spec.num_class,
                records=records, list_option="--test_list")
        except ValueError as exc:
            raise SystemExit(f"{path} ({self.modality}): {exc}") from None
        self.num_views = self.dataset.num_views
        self.num_clips = self.dataset.num_clips
        self.coeff = args.coeff_list[index]

    @torch.no_grad()
    def run_views(self, clips, max_views, dtype, device, channels_last):
        """clips (B, V, T*F*C, h, w) -> per-view logits (B, V, num_class), in chunks of max_views views."""
        B, V = clips.shape[:2]
        flat = clips.reshape(B * V, *clips.shape[2:])
        if not self.temporal:
            # per-frame evaluation: (B*V, T*F*C, h, w) -> (B*V*T, F*C, h, w)
            T = self.num_segments
            flat = flat.reshape(B * V * T, flat.shape[1] // T, *flat.shape[2:])
        outs = []
        for start in range(0, flat.shape[0], max_views):
            chunk = to_device(flat[start:start + max_views], device, channels_last)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                outs.append(self.forward(chunk).float().cpu())
        logits = torch.cat(outs)
        if not self.temporal:
            logits = logits.reshape(B * V, self.num_segments, -1).mean(1)    # (B*V, C): frame average
        return logits.reshape(B, V, -1)


def test_data_spec(args, index, ckpt, modality, heads=None):
    """The data one checkpoint is evaluated on. Each value comes from its flag if given, else from what
    the checkpoint recorded at training time (when it was trained under this dataset name: format,
    root, templates, validation list, class names; root and list only while they exist), else from the
    registry. '{modality}' in the paths
    becomes the checkpoint's modality (ops.dataset_config.fill_modality). heads: a multi-head
    checkpoint's layout; its lists have one label column per head and its class counts are the heads'."""
    recorded = ckpt.get("data") if isinstance(ckpt.get("data"), dict) else {}
    if recorded and recorded.get("dataset") != args.dataset:
        logger.info("%s was trained on %r, not %r: its recorded data paths are not used",
                    args.weights_list[index], recorded.get("dataset"), args.dataset)
        recorded = {}
    moved = [recorded[k] for k in ("root_path", "val_list") if recorded.get(k) and not os.path.exists(recorded[k])]
    if moved:
        logger.info("%s: recorded data paths no longer exist (%s): using the flags / registry (--data_root)",
                    args.weights_list[index], ", ".join(moved))
        recorded = {k: v for k, v in recorded.items() if k not in ("root_path", "val_list")}
    class_flags = args.category_file is not None or args.num_class is not None
    own_tmpl = recorded.get("image_tmpl") if recorded.get("modality") == modality else None
    categories = None if class_flags else recorded.get("categories")
    num_class = args.num_class
    if not class_flags and categories is None:
        num_class = recorded.get("num_class")
    if heads:
        num_class = categories = None

    def pick(flag, key):
        return flag if flag is not None else recorded.get(key)
    if recorded:
        logger.info("%s: data recorded at training (flags override): %s list %s under %s",
                    args.weights_list[index], pick(args.data_format, "data_format"),
                    pick(args.test_list_list[index], "val_list"), pick(args.root_path, "root_path"))
    return dataset_spec(
        args, modality, root_path=pick(args.root_path, "root_path"),
        val_list=pick(args.test_list_list[index], "val_list"), num_class=num_class, categories=categories,
        data_format=pick(args.data_format, "data_format"),
        image_tmpl=args.image_tmpl if args.image_tmpl is not None or modality in ("Flow", "Layout") else own_tmpl,
        flow_tmpl=args.flow_tmpl if args.flow_tmpl is not None or modality != "Flow" else own_tmpl,
        box_tmpl=args.box_tmpl if args.box_tmpl is not None or modality != "Layout" else own_tmpl,
        splits=("val",), heads=heads, audio=recorded_audio(args, recorded))


def recorded_audio(args, recorded, keep_fps=True):
    """Audio settings of an evaluation: the --audio_* flags given, else what the checkpoint recorded.
    keep_fps False: the recorded frame rate is dropped (inputs of their own rate, predict.py)."""
    settings = dict(recorded.get("audio") or {})
    if not keep_fps:
        settings.pop("fps", None)
    settings.update({k: v for k, v in audio_options(args).items() if v is not None})
    return settings


def refuse_overrides_of_configured(ckpt, overrides, path):
    """--arch/--modality/--shift* describe released files without a config; a checkpoint of ours carries
    its own, and overriding it would build another model than the one trained."""
    config = ckpt.get("config")
    if not isinstance(config, dict) or not overrides:
        return
    keys = {"arch": "base_model"}
    names = {"is_shift": "--shift"}
    given = ", ".join(f"{names.get(k, '--' + k)} {v!r} (the checkpoint has {config.get(keys.get(k, k))!r})"
                      for k, v in overrides.items())
    raise ValueError(f"carries its own model configuration; {given} apply only to released files "
                     "without one: drop them")


def check_modality_matches(modality, spec, records, path):
    """Catch a Flow checkpoint pointed at an RGB list (and vice versa) before decoding anything: the
    listed counts of sampled videos must match this modality's files on disk."""
    if spec.data_format != "frames":
        return
    try:
        check_list_counts(records, root=spec.val_root_path, modality=modality, image_tmpl=spec.image_tmpl,
                          start_index=spec.start_index, list_file=spec.val_list, option="--test_list")
    except ValueError as exc:
        raise SystemExit(f"{path} ({modality} checkpoint): {exc}") from None


def evaluate_model(mt, args, ctx, dtype, unit="video"):
    """-> (video_ids, labels, per-view logits (N, V, C)) over the whole list, on every rank. The progress bar
    counts this rank's records (`unit`: predict.py's windows are records too)."""
    n = len(mt.dataset)
    sampler = ShardSampler(n, num_replicas=ctx.world_size, rank=ctx.rank, batch_size=args.batch_size,
                           shuffle=False, drop_last=False)
    loader = DataLoader(mt.dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                        pin_memory=ctx.device.type == "cuda", worker_init_fn=worker_init_fn)
    bar = progress_bar(len(sampler), os.path.basename(mt.path), ctx.is_main and not args.no_progress, unit=unit)
    idx_parts, logit_parts = [], []
    for clips, labels, index in loader:
        if clips.dim() != 5 or clips.shape[1] != mt.num_views:
            raise RuntimeError(f"expected {mt.num_views} views per video, got clip batch {tuple(clips.shape)}")
        logits = mt.run_views(clips, args.max_views_per_batch, dtype, ctx.device, args.channels_last)
        sink = getattr(mt, "feature_sink", None)
        if sink is not None:   # features go to disk now; only the logits stay in memory
            sink.write(index.numpy(), logits[..., mt.model.num_class:].numpy())
            logits = logits[..., :mt.model.num_class]
        idx_parts.append(index)
        logit_parts.append(logits)
        if bar is not None:
            bar.update(len(index))
    if bar is not None:
        bar.close()
    C = mt.model.num_class
    index = torch.cat(idx_parts) if idx_parts else torch.zeros(0, dtype=torch.int64)
    logits = torch.cat(logit_parts) if logit_parts else torch.zeros(0, mt.num_views, C)
    logits = D.gather_by_index(index, logits, n, world=ctx.world_size, group=None, what=mt.path)
    ids = mt.dataset.video_ids
    labels = np.array([r.label for r in mt.dataset.records], dtype=np.int64)
    return ids, labels, logits.numpy()


def main(args, run_fn=None):
    """Logging and torch.distributed around run_fn(args, ctx) (default: this file's run; predict.py's)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    ctx = D.setup_distributed(rank=args.rank, world_size=args.world_size, init_method=args.init_method,
                              dist_port=args.dist_port, device=args.device, gpus=args.gpus,
                              timeout_s=args.dist_timeout)
    try:
        return (run_fn or run)(args, ctx)
    finally:
        D.cleanup()


def run(args, ctx):
    """Evaluate every --weights model over the same videos, fuse their scores with --coeff, print the
    metrics and write the reports (confusion, reliability, per-class CSV, summary.json), score and feature
    files into the output folder. Returns the metrics dict (every rank; only the main rank writes)."""
    dtype = AMP_DTYPES[args.amp]
    # Build and check every model and list before decoding a single video.
    models = [ModelUnderTest(args, 0, ctx)]
    # With --max_num, the partners evaluate the first model's videos (their lists may be in another order).
    keep = set(models[0].dataset.video_ids) if args.max_num > 0 else None
    models += [ModelUnderTest(args, i, ctx, keep_ids=keep) for i in range(1, len(args.weights_list))]
    ids0 = models[0].dataset.video_ids
    for m in models[1:]:
        ids = m.dataset.video_ids
        if len(ids) != len(ids0) or set(ids) != set(ids0):
            diff = sorted(set(ids0) ^ set(ids))[:5]
            raise SystemExit(f"{m.path}: its test list has other videos than {models[0].path} "
                             f"({len(ids)} vs {len(ids0)}, e.g. {diff}); ensembles need the same videos")
        try:
            check_same_heads(models[0].heads, m.heads, models[0].path, m.path)
        except ValueError as exc:
            raise SystemExit(f"ensemble: {exc}") from None
    dense_notes = [dense_short_note(m.dataset, args) for m in models]   # probes before the loader forks
    # .h5 features in one process are written batch by batch (ops.features.H5FeatureSink), in ids0 order
    sinks = args.save_features and args.save_features.endswith(".h5") and not ctx.distributed
    if args.save_features:
        position = {v: i for i, v in enumerate(ids0)}
        for m, path in zip(models, score_paths(args.save_features, len(models))):
            feature_io.attach(m, args.per_segment)
            if sinks:
                m.feature_sink = feature_io.H5FeatureSink(
                    path, [position[v] for v in m.dataset.video_ids], m.forward.head, per_view=args.per_view,
                    per_segment=args.per_segment)
    start = time.perf_counter()
    try:
        results = [evaluate_model(m, args, ctx, dtype) for m in models]
    except BaseException:
        for m in models:
            if getattr(m, "feature_sink", None) is not None:
                m.feature_sink.abort()
        raise
    elapsed = time.perf_counter() - start
    if args.save_features and not sinks:
        results, features = split_feature_outputs(results, models, args.per_segment)
    labels = results[0][1]
    per_model = []   # per-view logits (N, V_m, C) of each model, in the first model's video order
    for (ids, lab, logits), m in zip(results, models):
        if not np.array_equal(align_to(ids0, ids, lab, m.path), labels):
            raise SystemExit(f"{m.path}: labels differ from {models[0].path} for the same videos")
        per_model.append(align_to(ids0, ids, logits, m.path))
    heads = models[0].heads
    scores = fused_scores(per_model, [m.coeff for m in models], softmax=args.softmax,
                          view_softmax=args.view_softmax, heads=heads)
    num_class = models[0].spec.num_class
    coeffs = [m.coeff for m in models]
    if heads:
        res, cm = head_metrics(scores, labels, heads, metrics)    # cm: head -> confusion matrix
    else:
        res, cm = metrics(scores, labels, num_class)
    cals = add_calibration(res, scores, labels, coeffs, args.softmax or args.view_softmax, heads)
    if not cals:
        logger.info("no ECE: --coeff %s has a coefficient <= 0, so the fused scores are not probabilities",
                    args.coeff)
    if not ctx.is_main:
        return res
    protocols = [protocol_text(m.num_segments, args.test_crops if m.crop_size else 1, m.num_clips, m.crop_size,
                               args.full_res,
                               len(ids0), sampling_mode(args)) + note for m, note in zip(models, dense_notes)]
    for m, p in zip(models, protocols):
        print(f"{os.path.basename(m.path)} [{m.modality}, coeff {m.coeff:g}]: {p}")
    line = metrics_line(res, heads) if heads else format_metrics(res)
    print(f"Overall {line}  ({1000.0 * elapsed / max(len(ids0), 1):.1f} ms per video)")
    out_dir = args.output_dir or (os.path.dirname(os.path.abspath(args.save_scores)) if args.save_scores
                                  else os.path.join(os.path.dirname(os.path.abspath(models[0].path)),
                                                    f"eval_{args.dataset}"))
    os.makedirs(out_dir, exist_ok=True)
    names = models[0].spec.categories
    title = report_title(args.dataset, models, protocols, res, heads)
    if heads:
        written = write_head_reports(out_dir, scores, labels, heads, cm, cals, title, args.csv_file, ids0)
    else:
        written = write_report(out_dir, cm, names, title, cals.get(None))
    if args.save_scores:
        for path, lg, p in zip(score_paths(args.save_scores, len(models)), per_model, protocols):
            save_scores(path, ids0, labels, lg, p, heads=heads)
            written.append(path)
    if args.save_features and sinks:
        for m, p in zip(models, protocols):
            print(feature_io.summary(m.feature_sink.finish(video_ids=ids0, labels=labels, protocol=p,
                                                            checkpoint=m.path, class_names=names)))
    elif args.save_features:
        write_feature_files(args, models, ids0, labels, results, features, protocols, names)
    if args.save_features:
        written += score_paths(args.save_features, len(models))
    if args.csv_file and not heads:
        write_tsm_csv(args.csv_file, ids0, scores, names, models[0].spec.csv_top5)
        written.append(args.csv_file)
    summary = dict(res, protocol=protocols, weights=args.weights_list, coeff=coeffs,
                   softmax=args.softmax, view_softmax=args.view_softmax, seconds=elapsed)
    if cals:
        summary["ece_bins"] = next(iter(cals.values()))["bins"]
    written.append(os.path.join(out_dir, "summary.json"))
    with atomic_open(written[-1]) as f:
        json.dump(summary, f, indent=2)
    print("Wrote:\n" + "\n".join(f"  {os.path.abspath(p)}" for p in written))
    return res


def report_title(dataset, models, protocols, res, heads=None):
    """Title of the report figures: dataset and checkpoint(s), each protocol, the result line."""
    weights = " + ".join(f"{os.path.basename(m.path)}" + (f" x{m.coeff:g}" if len(models) > 1 else "")
                         for m in models)
    line = metrics_line(res, heads) if heads else format_metrics(res)
    return "\n".join([f"{dataset}: {weights}", *dict.fromkeys(protocols), line])


def write_head_reports(out_dir, scores, labels, heads, cms, cals, title, csv_file=None, video_ids=None):
    """The per-head outputs of a multi-head evaluation, one set per head (the single-head names with
    `_<head>`: confusion_<head>.npy / .png, per_class_<head>.csv, reliability_<head>.png) and, with
    --csv_file, one TSM-format csv per head (class indices). scores (N, sum of classes) are the fused video
    scores, labels (N, heads), cals: head -> calibration() result. -> the paths written."""
    written = []
    for (name, _), head_scores in zip(heads, split_heads(torch.from_numpy(np.asarray(scores)), heads)):
        written += write_report(out_dir, cms[name], None, f"{title}\nhead: {name}", cals.get(name), head=name)
        if csv_file:
            write_tsm_csv(head_file(csv_file, name), video_ids, head_scores.numpy(), None, False)
            written.append(head_file(csv_file, name))
    return written


def split_feature_outputs(results, models, per_segment):
    """evaluate_model results of models with features attached -> (results with logits only, features)."""
    logits, features = [], []
    for (ids, labels, out), m in zip(results, models):
        lg, parts = feature_io.split(out, m, per_segment)
        logits.append((ids, labels, lg))
        features.append(parts)
    return logits, features


def write_feature_files(args, models, ids0, labels, results, features, protocols, class_names):
    """One feature file per model (PATH, or PATH.0.npz, PATH.1.npz, ... for an ensemble), in ids0 order."""
    for path, (ids, _, _), parts, m, p in zip(score_paths(args.save_features, len(models)), results, features,
                                                models, protocols):
        aligned = {k: align_to(ids0, ids, v, m.path) for k, v in parts.items()}
        feature_io.write(path, video_ids=ids0, labels=labels, parts=aligned, protocol=p, checkpoint=m.path,
                         head=m.forward.head, class_names=class_names, per_view=args.per_view)
        print(feature_io.summary(path))


def score_paths(save_scores, num_models):
    """One score file per model (view counts may differ): PATH itself, or PATH.0.npz, PATH.1.npz, ..."""
    if num_models == 1:
        return [save_scores]
    stem, ext = os.path.splitext(save_scores)
    if ext not in (".npz", ".h5"):
        stem, ext = save_scores, ".npz"
    return [f"{stem}.{i}{ext}" for i in range(num_models)]


if __name__ == "__main__":
    sys.exit(0 if main(parse_test_args()) is not None else 1)
