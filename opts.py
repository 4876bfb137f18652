"""Command lines of main.py (training) and test_models.py (evaluation).

Option names, aliases and defaults follow TSM / the MML fork wherever they are sensible; the places where
a default differs are listed in README.md ("Deviations"). Arguments are validated once, right after
parsing, and derived values are filled in `_derive_train` (training) and at the end of `parse_test_args`
(evaluation) only.
"""
import argparse
import os

import torch

import archs
from ops.dataset_config import DATA_FORMATS, read_class_names, resolve_dataset
from ops.distill import TEACHER_WEIGHTINGS
from ops.distributed import DEVICES
from ops.heads import heads_text, parse_head_weights, parse_heads
from ops.lr_schedule import DECAY_FROM, LR_TYPES, LR_UPDATES
from ops.audio import AudioSettings
from ops.modality import MODALITIES
from ops.models import CONSENSUS_TYPES, FIRST_CONV_LR
from ops.temporal_modules import (FLAG_INSERTS, TEMPORAL_MODULES, backbone_models_time,
                                  shift_places_of, temporal_module_help, temporal_modules_of)
from ops.temporal_shift import SHIFT_DIRECTIONS, SHIFT_PLACES
from ops.tin import RESNET_SHIFT_DIVS
from ops.transforms import TEST_CROPS
from ops.utils import AMP_DTYPES, HelpFormatter, available_cpus
from ops.video_io import VIDEO_BACKENDS

OPTIMIZERS = ("sgd", "adamw")
AMP_MODES = ("auto", *AMP_DTYPES)
FC_LR5_MODES = ("auto", "on", "off")
ARCHS = tuple(archs.BACKBONES)         # --arch choices, in registry order

AUDIO_OPTIONS = {"tmpl": "audio_tmpl", "fps": "audio_fps", "sample_rate": "audio_sample_rate",
                 "window": "audio_window", "n_fft": "audio_n_fft", "win_length": "audio_win_length",
                 "hop_length": "audio_hop_length", "n_mels": "audio_n_mels", "mel_rate": "audio_mel_rate",
                 "mean": "audio_mean", "std": "audio_std", "allow_missing": "allow_missing_audio"}

# Options whose default depends on the dataset (registry `train_defaults`, e.g. the toy quickstart), with
# the TSM-style fallback used when the registry says nothing.
DATASET_DEFAULTS = {
    "arch": "resnet50", "num_segments": 8, "batch_size": 64, "lr": 0.01, "epochs": 50,
    "lr_steps": [20.0, 40.0], "dropout": 0.5, "optimizer": "sgd", "weight_decay": 5e-4,
    "pretrain": "imagenet", "workers": 8, "eval_freq": 5, "clip_gradient": 20.0, "warmup_epochs": 0.0,
    "lr_type": "step", "no_partialbn": False, "amp": "auto", "channels_last": None, "layout_arch": "stlt",
}
LAYOUT_ARCHS = archs.layout_archs()     # models of the Layout modality (--layout_arch)
# A backbone's recipe (archs.BACKBONES entry, e.g. ILA's) overrides these and yields to the dataset's.


class _Formatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown (HelpFormatter) and the description's line breaks kept."""


def _add_data_options(p):
    """Where the data is: dataset root, lists, roots, format, decoding (training and evaluation)."""
    g = p.add_argument_group("data")
    g.add_argument("--data_root", default=os.environ.get("TSM_DATA_ROOT", "data"),
                   help="folder holding the registered datasets (env TSM_DATA_ROOT)")
    g.add_argument("--root_path", default=None,
                   help="frames/videos root (default: from the registry); '{modality}' in it and in the lists "
                        "becomes RGB (also for RGBDiff), Flow, Audio or Layout (box files), so each modality has "
                        "its own files")
    g.add_argument("--category_file", default=None, help="one class name per line")
    g.add_argument("--num_class", type=int, default=None, help="number of classes (instead of a category file)")
    g.add_argument("--image_tmpl", default=None, help="RGB frame file template, e.g. img_{:05d}.jpg")
    g.add_argument("--flow_tmpl", default=None, help="Flow template: flow_{}_{:05d}.jpg or one RGB image")
    g.add_argument("--box_tmpl", default=None,
                   help="Layout box file of a video, formatted with its list path (default: registry / {}.json)")
    g.add_argument("--data_format", default=None, choices=DATA_FORMATS, help="default: from the registry")
    g.add_argument("--video_backend", default="decord", choices=VIDEO_BACKENDS)
    g.add_argument("--no_autorotate", dest="autorotate", action="store_false",
                   help="video files: keep the stored pixels (default: apply the display matrix, as players do)")
    g.add_argument("--strict_data", action="store_true", help="the first unreadable frame/video is fatal")
    g.add_argument("--dense_sample", action="store_true", help="I3D-style dense sampling")
    g.add_argument("--random_sample", action="store_true",
                   help="MML: train on a fair coin dense/uniform per video; test dense clips + uniform")
    g.add_argument("--twice_sample", action="store_true", help="test: uniform clip + half-tick shifted clip")
    g.add_argument("--dense_length", type=int, default=64, help="dense window (TSM 64; the MML recipe uses 32)")
    g.add_argument("--dense_number", type=int, default=10, help="dense clips at test time")
    g.add_argument("--input_size", type=int, default=None, help="crop size (default: registry / model)")
    g.add_argument("--scale_size", type=int, default=None, help="test shorter side (default 256/224*crop)")
    g.add_argument("--new_length", type=int, default=None,
                   help="frames per segment (default RGB 1, Flow 5, RGBDiff 5 differences = 6 frames)")
    g.add_argument("-j", "--workers", type=int, default=None,
                   help="DataLoader workers [dataset default / 8 (training), 2 (evaluation); at most the CPUs "
                        "this process may use]")
    _add_audio_options(p)
    return g


def _add_audio_options(p):
    """The Audio modality's spectrogram settings (ops/audio.py), every constant an option."""
    # Defaults None: a checkpoint's recorded settings (evaluation) or ops.audio.AudioSettings' apply.
    d = AudioSettings()
    g = p.add_argument_group("audio (the Audio modality: log-mel spectrograms of the soundtrack, ops/audio.py)")
    g.add_argument("--audio_tmpl", default=None,
                   help=f"audio file of a video under --root_path, '{{}}' = its path in a frames list [{d.tmpl}]")
    g.add_argument("--audio_fps", type=float, default=None,
                   help="frame rate of the lists' frame numbers, where the windows are centred [registry / the "
                        "video file's own rate]")
    g.add_argument("--audio_sample_rate", type=int, default=None, help=f"Hz [{d.sample_rate}]")
    g.add_argument("--audio_window", type=float, default=None, help=f"seconds per spectrogram [{d.window}]")
    g.add_argument("--audio_n_fft", type=int, default=None, help=f"[{d.n_fft}]")
    g.add_argument("--audio_win_length", type=int, default=None, help=f"Hann window, samples [{d.win_length}]")
    g.add_argument("--audio_hop_length", type=int, default=None, help=f"samples [{d.hop_length}]")
    g.add_argument("--audio_n_mels", type=int, default=None, help=f"mel filters [{d.n_mels}]")
    g.add_argument("--audio_mel_rate", type=int, default=None,
                   help=f"sample rate the mel filterbank is computed for (the reference's torchaudio default) "
                        f"[{d.mel_rate}]")
    g.add_argument("--audio_mean", type=float, default=None, help=f"dB normalisation mean [{d.mean}]")
    g.add_argument("--audio_std", type=float, default=None, help=f"dB normalisation std [{d.std}]")
    g.add_argument("--allow_missing_audio", action="store_true", default=None,
                   help="skip (count and log) videos without audio instead of stopping at start-up")


def audio_options(args):
    """The --audio_* values given (None: not given), keyed as ops.audio.AudioSettings fields."""
    return {field: getattr(args, option, None) for field, option in AUDIO_OPTIONS.items()}


AMP_HELP = ("autocast dtype: bf16 (CPU and GPU), fp16 (GPU, with GradScaler), off (fp32); 'auto' = bf16 + "
            "channels_last where the hardware has native bf16 (AVX512-BF16/AMX CPUs, bf16 GPUs), else off")


def _add_device_options(p, amp_default="[dataset default / auto]"):
    """Device, GPUs, precision, loader workers and the distributed launch (ops/distributed.py)."""
    g = p.add_argument_group("devices and distribution")
    g.add_argument("--device", default="auto", choices=DEVICES)
    g.add_argument("--gpus", default=None, help="CUDA device ids of this process, e.g. '0' or '0,1'")
    g.add_argument("--amp", default=None, choices=AMP_MODES, help=f"{AMP_HELP} {amp_default}")
    g.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory format (default: on when --amp resolves to bf16)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--rank", type=int, default=None, help="this process's rank (per-rank shell launch)")
    g.add_argument("--world_size", type=int, default=None, help="number of processes (per-rank launch)")
    g.add_argument("--init_method", default=None, help="rendezvous, e.g. tcp://127.0.0.1:52525")
    g.add_argument("--dist_port", type=int, default=None, help="rendezvous port under SLURM (or MASTER_PORT)")
    g.add_argument("--dist_timeout", type=float, default=1800.0,
                   help="seconds before a rank gives up on a lost or hung peer")
    g.add_argument("--local_rank", "--local-rank", type=int, default=None,
                   help="accepted for torch.distributed.launch; LOCAL_RANK from the environment wins")
    return g


def get_train_parser():
    """main.py's parser: every training option, grouped; the backbone families add their own groups."""
    p = argparse.ArgumentParser(
        prog="main.py", formatter_class=_Formatter,
        description="Train TSN/TSM/TIN/MSN/ILA video models. A comma list of modalities (e.g. "
                    "RGBDiff,Flow,RGB) runs mutual modality learning, one process per modality rank.",
        epilog="Defaults shown as [dataset default / X] come from the dataset registry when it has one "
               "(the toy quickstart does), else X.")
    p.add_argument("dataset", help="registered name (ucf101, hmdb51, something, somethingv2, jester, "
                                   "kinetics, toy) or any name with --root_path/--train_list/--val_list")
    p.add_argument("modality", help="RGB, Flow, RGBDiff, Audio, or a comma list for mutual learning")
    g = _add_data_options(p)
    g.add_argument("--train_list", default=None, help="training list file (default: registry)")
    g.add_argument("--val_list", default=None, help="validation list file (default: registry)")
    g.add_argument("--heads", default=None,
                   help="multi-head labels, e.g. verb:97,noun:300: one label column per head in the lists "
                        "(`path num_frames verb noun`), one classifier per head [default: the registry's, "
                        "e.g. epic100; else one label]")
    g.add_argument("--head_weights", default=None,
                   help="comma floats, one per head: the loss is the weighted mean of the heads' CE [all 1]")

    g = p.add_argument_group("model")
    g.add_argument("--arch", default=None, choices=ARCHS, metavar="ARCH",
                   help="backbone: %(choices)s [dataset default / resnet50]")
    g.add_argument("--num_segments", type=int, default=None, help="T [dataset default / 8]")
    g.add_argument("--layout_arch", default=None, choices=LAYOUT_ARCHS,
                   help="model of the Layout modality (its ranks and runs; --arch for the others) "
                        "[--arch if a layout model / dataset default / stlt]")
    g.add_argument("--consensus_type", default="avg", choices=CONSENSUS_TYPES)
    g.add_argument("--dropout", "--do", type=float, default=None, help="dropout before new_fc [/ 0.5]")
    g.add_argument("--pretrain", default=None,
                   help="'imagenet' (torchvision IMAGENET1K_V1), a local weights file, or 'none' [/ imagenet]")
    g.add_argument("--shift", action="store_true", help="temporal shift module (= --temporal_module tsm)")
    g.add_argument("--shift_div", type=int, default=8, help="1/shift_div of the channels shifted each way")
    g.add_argument("--shift_place", default="blockres", choices=SHIFT_PLACES)
    g.add_argument("--temporal_module", default=None, choices=tuple(TEMPORAL_MODULES), help=temporal_module_help())
    g.add_argument("--tin_shift_div", type=int, default=4, choices=RESNET_SHIFT_DIVS,
                   help="TIN: 1/tin_shift_div of the channels interlaced (in 4 groups)")
    g.add_argument("--temporal_pool", action="store_true", help="max-pool over time before layer2")
    g.add_argument("--non_local", action="store_true", help="non-local blocks in layer2/layer3")
    g.add_argument("--no_partialbn", "--npb", action="store_true", default=None,
                   help="train every BatchNorm (partial BN freezes all but the first)")
    g.add_argument("--fc_lr5", default="auto", choices=FC_LR5_MODES,
                   help="lr x5 (weight) / x10 (bias) on the new head (TSM's fc_lr5); auto = TSM's rule: on with "
                        "SGD unless --tune_from is a checkpoint trained on this dataset (as its recorded "
                        "arguments say), off with AdamW")
    g.add_argument("--first_conv_lr", default="tsm", choices=FIRST_CONV_LR,
                   help="first-conv lr multipliers: tsm = x5/x10 for Flow, mml = x1/x2 for every modality")
    g.add_argument("--img_feature_dim", type=int, default=256, help="kept for TSM compatibility (unused)")
    g.add_argument("--suffix", default=None, help="appended to the run name")
    g.add_argument("--run_name", default=None,
                   help="run directory name instead of TSM's convention (mutual learning appends _ML{rank})")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=None, help="[dataset default / 50]")
    g.add_argument("-b", "--batch-size", dest="batch_size", type=int, default=None,
                   help="total batch per step over the data-parallel replicas [/ 64]")
    g.add_argument("--lr", "--learning-rate", dest="lr", type=float, default=None, help="base lr [/ 0.01]")
    g.add_argument("--lr_type", default=None, choices=LR_TYPES, help="[/ step]")
    g.add_argument("--lr_steps", type=float, nargs="+", default=None, help="epochs where lr x0.1 [/ 20 40]")
    g.add_argument("--warmup_epochs", type=float, default=None, help="linear warm-up, per step [/ 0]")
    g.add_argument("--warmup_start_ratio", type=float, default=0.0,
                   help="warm-up starts at this fraction of the scheduled lr (mmcv warmup_ratio, e.g. 0.1)")
    g.add_argument("--lr_update", default="epoch", choices=LR_UPDATES,
                   help="after warm-up, recompute the lr once per epoch (TSM) or at every step (mmcv/timm/HF)")
    g.add_argument("--min_lr_ratio", type=float, default=0.0,
                   help="cos/linear decay ends at lr x this (mmcv min_lr_ratio, timm lr_min / lr)")
    g.add_argument("--decay_from", default="warmup_end", choices=DECAY_FROM,
                   help="cos/linear progress counts from the end of warm-up (TSM forks, TIN) or from step 0 "
                        "(mmcv/timm: the curve spans the whole run and warm-up scales it)")
    g.add_argument("--optimizer", default=None, choices=OPTIMIZERS, help="[/ sgd]")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight-decay", "--wd", dest="weight_decay", type=float, default=None, help="[/ 5e-4]")
    g.add_argument("--clip-gradient", "--gd", dest="clip_gradient", type=float, default=None,
                   help="max global gradient norm [/ 20]; 0 disables")
    g.add_argument("--accumulation_steps", type=int, default=1, help="gradient accumulation")
    g.add_argument("--seed", type=int, default=0, help="seeds model init and every sampling decision")
    g.add_argument("--sync_bn", action="store_true", help="SyncBatchNorm across replicas (CUDA only)")
    g.add_argument("--max_steps_per_epoch", type=int, default=None, help="cap on training steps (debugging)")

    g = p.add_argument_group("run, logging, checkpoints")
    g.add_argument("--tune_from", default=None, help="fine-tune from a checkpoint (any modality)")
    g.add_argument("--resume", default="", help="checkpoint to resume, or 'auto' (the run's latest if any)")
    g.add_argument("--start-epoch", dest="start_epoch", type=int, default=0)
    g.add_argument("-e", "--evaluate", action="store_true", help="validate once and exit")
    g.add_argument("-p", "--print-freq", dest="print_freq", type=int, default=20)
    g.add_argument("-ef", "--eval-freq", dest="eval_freq", type=int, default=None, help="[/ 5]")
    g.add_argument("--root_log", default="log")
    g.add_argument("--root_model", default="checkpoint")
    g.add_argument("--no_progress", action="store_true", help="no tqdm bars (log lines only)")
    g.add_argument("--dump_step_logits", action="store_true",
                   help="debugging: save every step's logits, labels, peer logits and loss terms per rank")

    g = p.add_argument_group("mutual (modality) learning")
    g.add_argument("--mutual_weight", type=float, default=1.0, help="weight of KL(peers || own)")
    g.add_argument("--mutual_temperature", type=float, default=1.0, help="tau; the KL is scaled by tau^2")
    g.add_argument("--check_alignment", action="store_true",
                   help="kept for compatibility: every mutual-learning step now all-gathers its video ids, "
                        "stops on a mismatch and drops samples a read failure replaced on some rank")
    _add_device_options(p)

    g = p.add_argument_group("distillation")
    g.add_argument("--distill_from", default=None, help="comma list of teacher checkpoints")
    g.add_argument("--teacher_scores", default=None, help="npz of teacher logits from test_models --save_scores")
    g.add_argument("--teacher_weights", default=None, help="comma floats, one per teacher")
    g.add_argument("--teacher_weighting", default="uniform", choices=TEACHER_WEIGHTINGS)
    g.add_argument("--teacher_weight_temperature", type=float, default=1.0,
                   help="temperature of the softmin-of-CE teacher weighting")
    g.add_argument("--distill_temperature", type=float, default=1.0)
    g.add_argument("--distill_weight", type=float, default=1.0)
    g.add_argument("--gt_weight", type=float, default=0.0)

    _add_family_options(p, train=True)
    _add_online_options(p, test=False)
    _add_recipe_options(p)
    return p


def _add_family_options(p, train):
    """The options a backbone family owns (archs.family_options(): ILA, MSN/TDN), a group per family."""
    for family in archs.family_options():
        g = p.add_argument_group(family.title)
        for option in family.train if train else family.test:
            option.add_to(g)


def parse_args(argv=None):
    """main.py's arguments: parsed, derived values filled in (_derive_train), then validated once."""
    parser = get_train_parser()
    args = parser.parse_args(argv)
    try:
        _derive_train(args)
    except ValueError as exc:
        parser.error(str(exc))
    _validate_train(parser, args)
    _validate_online(parser, args)
    return args


def _split_modalities(text):
    """'RGB,Flow' -> ['RGB', 'Flow'] (argparse type: an unknown modality is a parser error)."""
    mods = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in mods if m not in MODALITIES]
    if not mods or bad:
        raise ValueError(f"modality must be one of {MODALITIES} or a comma list of them, got {text!r}")
    return mods


def _amp_supported(dtype_name, device):
    """Whether the device can run the dtype at all (bf16 autocast runs on every CPU, slowly without
    native support)."""
    if dtype_name == "bf16" and (device == "cuda" or (device == "auto" and torch.cuda.is_available())):
        return torch.cuda.is_bf16_supported()
    return True


def fast_bf16(device):
    """Native bf16 arithmetic: a CUDA GPU with bf16 support, or a CPU with AVX512-BF16 / AMX."""
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def dataset_spec(args, modality, **overrides):
    """The registry entry of args.dataset for one modality, completed by the data options of either
    parser (ops.dataset_config.resolve_dataset); keyword overrides replace an option's value."""
    options = dict(data_root=args.data_root, root_path=args.root_path, train_list=getattr(args, "train_list", None),
                   val_list=getattr(args, "val_list", None), category_file=args.category_file,
                   num_class=args.num_class, image_tmpl=args.image_tmpl, flow_tmpl=args.flow_tmpl,
                   data_format=args.data_format, audio=audio_options(args), box_tmpl=args.box_tmpl,
                   heads=parse_heads(args.heads) if getattr(args, "heads", None) else None)
    return resolve_dataset(args.dataset, modality, **{**options, **overrides})


def _derive_train(args):
    """The one place that fills derived values (nothing reassigns them later)."""
    args.modalities = _split_modalities(args.modality)
    spec = dataset_spec(args, args.modalities[0])
    arch = args.arch or (spec.train_defaults or {}).get("arch") or DATASET_DEFAULTS["arch"]
    traits = archs.backbone_traits(arch)
    # Generic defaults < the backbone's recipe < the dataset's train_defaults (except what the model
    # needs, recipe_over_dataset) < the command line.
    defaults = {**DATASET_DEFAULTS, **dict(traits.recipe)}
    defaults.update({k: v for k, v in (spec.train_defaults or {}).items() if k not in traits.recipe_over_dataset})
    # No more DataLoader workers by default than the CPUs this process may use (PyTorch warns otherwise).
    defaults["workers"] = min(defaults["workers"], available_cpus())
    if traits.modality == "Layout":       # --arch stlt: the Layout model is that one
        defaults["layout_arch"] = arch
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.input_size is None:
        # A backbone with its own resolution (ILA: the CLIP tower's; L/14@336 at 336) takes it over the
        # dataset's generic 224 crop; a dataset with another crop (the toy set's 64) keeps that.
        own = traits.input_size is not None and spec.input_size == 224
        args.input_size = traits.input_size if own else spec.input_size
    if args.scale_size is None and args.input_size == spec.input_size:
        args.scale_size = spec.scale_size
    if args.temporal_module is None and args.shift:
        args.temporal_module = "tsm"
    args.shift = args.temporal_module == "tsm"
    if args.amp == "auto":
        args.amp = "bf16" if fast_bf16(args.device) else "off"
    if args.channels_last is None:
        args.channels_last = args.amp == "bf16"
    if args.clip_gradient == 0:
        args.clip_gradient = None
    # --fc_lr5 auto is filled in when the model is built (ops/run_model.py), where --tune_from is read.
    _derive_recipe(args, spec)
    # multi-head layout of the run (--heads or the registry's) and its loss weights, as lists for args.json
    args.head_layout = [list(h) for h in spec.heads] if spec.heads else None
    args.head_weights = list(parse_head_weights(args.head_weights, spec.heads)) if spec.heads else (
        None if args.head_weights is None else _no_heads(args.head_weights))
    if spec.heads and args.flip_label_pairs:
        raise ValueError(f"--flip_pairs swaps single labels; the lists of {args.dataset} have the heads "
                         f"{heads_text(spec.heads)} (turn them off with --flip_pairs none)")
    args.num_modalities = len(args.modalities)
    args.store_names = [store_name(args, m, r) for r, m in enumerate(args.modalities)]


def _no_heads(text):
    """--head_weights parser of a dataset without heads: always refused."""
    raise ValueError(f"--head_weights {text} needs multi-head labels (--heads or a registry entry with heads)")


def _validate_train(parser, args):
    """Impossible combinations of training options -> parser.error naming the options and the reason."""
    err = parser.error
    if args.num_segments < 1:
        err("--num_segments must be >= 1")
    if args.temporal_pool and args.num_segments < 2:
        err("--temporal_pool halves the segments and needs --num_segments >= 2")
    if args.temporal_pool and args.temporal_module != "tsm":
        err("--temporal_pool is implemented for TSM (--shift) models only")
    traits = archs.backbone_traits(args.arch)
    if traits.modality == "Layout" and set(args.modalities) != {"Layout"}:
        err(f"--arch {args.arch} reads the Layout modality only; give the image modalities an image --arch "
            "and the Layout ones --layout_arch")
    own = "; it models time itself" if backbone_models_time(args.arch) else ""
    places, modules = shift_places_of(args.arch), temporal_modules_of(args.arch)
    if args.temporal_module == "tsm" and args.shift_place not in places:
        err(f"--shift has no insertion rule for --arch {args.arch} at --shift_place {args.shift_place} "
            f"(its places: {', '.join(places) or 'none'}{own})")
    if args.temporal_module not in (None, "tsm") and args.temporal_module not in modules:
        err(f"--temporal_module {args.temporal_module} is not defined for --arch {args.arch} "
            f"(its temporal modules: {', '.join(modules) or 'none'}{own})")
    for flag, insert in FLAG_INSERTS.items():
        if getattr(args, flag) and not insert.defined_for(args.arch):
            err(f"--{flag} is defined for ResNets, not --arch {args.arch}")
    if args.amp == "fp16" and (args.device == "cpu" or not torch.cuda.is_available()):
        err("--amp fp16 needs a CUDA GPU (use --amp bf16 on CPU)")
    if args.amp == "bf16" and not _amp_supported("bf16", args.device):
        err("--amp bf16 is not supported by this GPU")
    if args.sync_bn and (args.device == "cpu" or not torch.cuda.is_available()):
        err("--sync_bn needs CUDA (SyncBatchNorm is not implemented for CPU/gloo)")
    if args.device == "cuda" and not torch.cuda.is_available():
        err("--device cuda: CUDA is not available")
    if args.dense_sample and args.random_sample:
        err("--dense_sample and --random_sample are exclusive (random already mixes dense clips)")
    if args.dense_length < 1 or args.dense_number < 1:
        err("--dense_length and --dense_number must be >= 1")
    if args.resume not in ("", "auto") and args.tune_from:
        err("--resume PATH and --tune_from are exclusive (--resume auto with --tune_from resumes the run "
            "if it has a checkpoint, else fine-tunes)")
    if args.batch_size < 1 or args.epochs < 1 or args.lr <= 0:
        err("--batch-size, --epochs must be >= 1 and --lr > 0")
    if args.lr_type == "step" and list(args.lr_steps) != sorted(args.lr_steps):
        err(f"--lr_steps must be increasing, got {args.lr_steps}")
    if args.warmup_epochs < 0 or args.warmup_epochs >= args.epochs:
        err("--warmup_epochs must be in [0, --epochs)")
    if not 0 <= args.warmup_start_ratio <= 1 or not 0 <= args.min_lr_ratio < 1:
        err("--warmup_start_ratio must be in [0, 1] and --min_lr_ratio in [0, 1)")
    if args.accumulation_steps < 1:
        err("--accumulation_steps must be >= 1")
    if args.world_size is not None and args.world_size > 1 and args.rank is None:
        err("--world_size > 1 needs --rank (one command per rank)")
    if args.world_size is not None and args.world_size % args.num_modalities:
        err(f"--world_size {args.world_size} must be a multiple of the {args.num_modalities} modalities")
    if args.num_modalities > 1 and args.world_size is None and "WORLD_SIZE" not in os.environ \
            and "SLURM_NTASKS" not in os.environ:
        err(f"{args.modality} trains one process per modality: launch with torchrun, srun, or "
            f"--rank/--world_size per process")
    if args.allow_missing_audio and (args.num_modalities > 1 or args.distill_from or args.teacher_scores):
        err("--allow_missing_audio drops videos from the Audio data only; mutual learning and distillation "
            "need every modality of every video: remove the videos without audio from the lists")
    if args.distill_from and args.teacher_scores:
        err("--distill_from and --teacher_scores are exclusive")
    if (args.distill_from or args.teacher_scores) and args.num_modalities > 1:
        err("distillation trains one student; combine it with mutual learning is not supported")
    if args.teacher_weights and not args.distill_from:
        err("--teacher_weights needs --distill_from")
    if args.teacher_weights and args.distill_from and \
            len(args.teacher_weights.split(",")) != len(args.distill_from.split(",")):
        err("--teacher_weights needs one weight per --distill_from checkpoint")
    if args.mutual_temperature <= 0 or args.distill_temperature <= 0 or args.teacher_weight_temperature <= 0:
        err("temperatures must be > 0 (--mutual_temperature, --distill_temperature, --teacher_weight_temperature)")
    if args.run_name is not None and (not args.run_name or os.sep in args.run_name
                                      or args.run_name in (".", "..")):
        err(f"--run_name {args.run_name!r} must be a plain folder name")
    _validate_recipe(parser, args)
    _validate_run_options(parser, args)


def _validate_run_options(parser, args):
    """Options that used to fail late (after an epoch) or be dropped silently."""
    if args.eval_freq < 1:
        parser.error(f"-ef/--eval-freq must be >= 1 (validate every N epochs), got {args.eval_freq}")
    if args.print_freq < 0:
        parser.error(f"-p/--print-freq must be >= 0, got {args.print_freq}")
    if args.dist_timeout <= 0:
        parser.error(f"--dist_timeout must be > 0 seconds, got {args.dist_timeout}")
    _refuse_twice_with_dense(parser, args)


def _refuse_twice_with_dense(parser, args):
    # Dense test sampling has its own clips; the shifted uniform clip of --twice_sample was dropped silently.
    if args.twice_sample and args.dense_sample:
        parser.error("--twice_sample adds a shifted uniform clip and has no meaning with --dense_sample "
                     "(dense clips only); drop one of them (--random_sample --twice_sample is defined)")


def store_name(args, modality, rank=0):
    """TSM's run-name convention (+ the MML fork's _dense/_random/_ML{rank} suffixes)."""
    if args.run_name:
        return args.run_name + (f"_ML{rank}" if len(args.modalities) > 1 else "")
    arch = args.arch
    if modality == "Layout":
        arch = args.layout_arch           # the image backbone's temporal options do not apply
    elif args.temporal_module == "tsm":
        arch += f"_shift{args.shift_div}_{args.shift_place}"
    elif args.temporal_module is not None:
        arch += f"_{args.temporal_module}"
    if args.temporal_pool:
        arch += "_tpool"
    parts = ["TSM", args.dataset, modality, arch, args.consensus_type, f"segment{args.num_segments}",
             f"e{args.epochs}"]
    if args.pretrain != "imagenet":
        parts.append(os.path.splitext(os.path.basename(str(args.pretrain)))[0])
    if args.lr_type != "step":
        parts.append(args.lr_type)
    if args.dense_sample:
        parts.append(f"dense{args.dense_length}" if args.dense_length != 64 else "dense")
    if args.random_sample:
        parts.append(f"random{args.dense_length}")
    if args.non_local:
        parts.append("nl")
    if args.shift_direction == "uni":
        parts.append("uni")
    if args.distill_from or args.teacher_scores:
        parts.append("distill")
    if args.suffix:
        parts.append(args.suffix)
    if len(args.modalities) > 1:
        parts.append(f"ML{rank}")
    return "_".join(parts)


# ----------------------------------------------------------------------------------------------------
# test_models.py
# ----------------------------------------------------------------------------------------------------

def get_test_parser(prog="test_models.py", description=None):
    """test_models.py's parser; predict.py builds on it (prog="predict.py": no dataset positional, so
    every view-protocol option of test_models.py is also one of predict.py)."""
    p = argparse.ArgumentParser(
        prog=prog, formatter_class=_Formatter,
        description=description or "Multi-crop x multi-clip evaluation of one model or an ensemble of checkpoints.")
    if prog == "test_models.py":
        p.add_argument("dataset")
    p.add_argument("--weights", required=True, help="comma list of checkpoints")
    _add_data_options(p)
    p.add_argument("--test_list", default=None,
                   help="one list for every weight (may contain {modality}) or a comma list, one per weight "
                        "(default: the validation list the checkpoint recorded, else the registry's)")
    p.add_argument("--test_segments", default=None, help="comma list, one per weight (default: checkpoint)")
    p.add_argument("--test_crops", type=int, default=1, choices=TEST_CROPS,
                   help="1 centre, 3 along the long side, 5 corners + centre, 10 (the 5 and their flips)")
    p.add_argument("--full_res", action="store_true", help="crop scale_size (256) instead of 224")
    p.add_argument("--random_clips", type=int, default=None,
                   help="K random uniform clips per video (seeded, ILA protocol)")
    p.add_argument("--coeff", default=None, help="comma floats, one per weight (default 1)")
    p.add_argument("--softmax", action="store_true", help="softmax AFTER averaging logits over views")
    p.add_argument("--view_softmax", action="store_true",
                   help="softmax of every view, then the average (TDN/MSN pkl_to_results.py, ILA); "
                        "exclusive with --softmax")
    p.add_argument("--batch_size", type=int, default=1, help="videos per loader batch")
    p.add_argument("--max_views_per_batch", type=int, default=64,
                   help="views sent to the model at once (memory bound; results do not depend on it)")
    p.add_argument("--csv_file", default=None, help="TSM-style predictions file")
    p.add_argument("--max_num", type=int, default=-1, help="evaluate only the first N videos")
    p.add_argument("--save_scores", default=None,
                   help="npz with per-video per-view logits; an ensemble writes PATH.0.npz, PATH.1.npz, ...")
    p.add_argument("--output_dir", default=None, help="confusion matrix / per-class CSV (default: next to scores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no_progress", action="store_true")
    p.add_argument("--crop_fusion_type", default="avg", choices=("avg",),
                   help="TSM compatibility: segment and view logits are always averaged")
    p.add_argument("--arch", default=None, choices=ARCHS, metavar="ARCH",
                   help="released TSM files only (no config): override the arch (%(choices)s)")
    p.add_argument("--modality", default=None, choices=MODALITIES,
                   help="released TSM files only: override the modality")
    p.add_argument("--shift", action="store_true", help="released TSM files only: model has TSM shift")
    p.add_argument("--shift_div", type=int, default=None)
    p.add_argument("--shift_place", default=None, choices=SHIFT_PLACES)
    _add_family_options(p, train=False)
    g = p.add_argument_group("features (ops/features.py)")
    g.add_argument("--save_features", default=None,
                   help="pooled pre-classifier features per video, .npz or .h5 (an ensemble: PATH.0.npz, ...)")
    g.add_argument("--per_view", action="store_true", help="also per view: view_features (N, V, D)")
    g.add_argument("--per_segment", action="store_true",
                   help="also per view and segment: segment_features (N, V, T, D)")
    # Evaluation defaults to fp32, the dtype the published numbers were measured in, whatever the model
    # trained with; --amp auto/bf16 is faster and differs in the last digits (README, Evaluation).
    _add_device_options(p, amp_default="[off: fp32]")
    _add_online_options(p, test=True)
    return p


def parse_test_args(argv=None, parser=None):
    """parser: get_test_parser() or an extension of it (scripts/online_eval.py adds --compare)."""
    parser = parser or get_test_parser()
    args = parser.parse_args(argv)
    args.weights_list = [w for w in args.weights.split(",") if w]
    n = len(args.weights_list)
    if n == 0:
        parser.error("--weights: give at least one checkpoint")

    def split(value, name, cast):
        """A per-checkpoint comma list (e.g. --coeff) -> one value per --weights entry."""
        if value is None:
            return [None] * n
        items = value.split(",")
        if len(items) != n:
            parser.error(f"{name} has {len(items)} entries but --weights has {n}")
        try:
            return [cast(v) for v in items]
        except ValueError:
            parser.error(f"{name}: cannot parse {value!r}")
    args.test_segments_list = split(args.test_segments, "--test_segments", int)
    one_list = args.test_list is not None and "," not in args.test_list
    args.test_list_list = [args.test_list] * n if one_list else split(args.test_list, "--test_list", str)
    args.coeff_list = [1.0 if c is None else c for c in split(args.coeff, "--coeff", float)]
    if any(t is not None and t < 1 for t in args.test_segments_list):
        parser.error(f"--test_segments must be >= 1, got {args.test_segments}")
    if args.dense_length < 1 or args.dense_number < 1:
        parser.error("--dense_length and --dense_number must be >= 1")
    if args.dense_sample and args.random_sample:
        parser.error("--dense_sample and --random_sample are exclusive")
    _refuse_twice_with_dense(parser, args)
    if args.softmax and args.view_softmax:
        parser.error("--softmax (after averaging logits) and --view_softmax (before averaging) are exclusive")
    if args.random_clips is not None and (args.dense_sample or args.random_sample or args.twice_sample):
        parser.error("--random_clips is its own clip protocol; drop --dense/--random/--twice_sample")
    if args.random_clips is not None and args.random_clips < 1:
        parser.error("--random_clips must be >= 1")
    if args.amp == "fp16" and (args.device == "cpu" or not torch.cuda.is_available()):
        parser.error("--amp fp16 needs a CUDA GPU (use --amp bf16 on CPU)")
    if args.amp in (None, "auto"):
        args.amp = "off" if args.amp is None else ("bf16" if fast_bf16(args.device) else "off")
    if args.channels_last is None:
        args.channels_last = args.amp == "bf16"
    if args.batch_size < 1 or args.max_views_per_batch < 1:
        parser.error("--batch_size and --max_views_per_batch must be >= 1")
    for w in args.weights_list:
        if not os.path.isfile(w):
            parser.error(f"--weights: no such file {w!r}")
    if args.workers is None:
        args.workers = min(2, available_cpus())
    if (args.per_view or args.per_segment) and not args.save_features:
        parser.error("--per_view / --per_segment need --save_features PATH")
    if args.save_features and not args.save_features.endswith((".npz", ".h5")):
        parser.error(f"--save_features {args.save_features!r}: give a .npz or .h5 path")
    return args


# ----------------------------------------------------------------------------------------------------
# Online TSM (uni-directional shift), main.py and test_models.py
# ----------------------------------------------------------------------------------------------------

def _add_online_options(p, test):
    """Online TSM: --shift_direction (uni: the causal shift streaming needs)."""
    g = p.add_argument_group("online TSM")
    if test:
        g.add_argument("--shift_direction", default=None, choices=SHIFT_DIRECTIONS,
                       help="released TSM files only (ours record it): bi or uni shift; a value that "
                            "contradicts the checkpoint is an error")
    else:
        g.add_argument("--shift_direction", default="bi", choices=SHIFT_DIRECTIONS,
                       help="bi: TSM's offline shift (1/shift_div of the channels from t-1, 1/shift_div from "
                            "t+1); uni: online TSM, 1/shift_div from t-1 only (causal, streamable with "
                            "ops/online.py and scripts/online_demo.py)")


def _validate_online(parser, args):
    """The uni-directional shift needs TSM, and neither temporal pooling nor non-local blocks."""
    if args.shift_direction != "uni":
        return
    if args.temporal_module != "tsm":
        parser.error("--shift_direction uni is the online temporal shift: it needs --shift")
    if args.temporal_pool or args.non_local:
        parser.error("--shift_direction uni is causal (online); --temporal_pool and --non_local mix future "
                     "frames into the present and cannot be combined with it")


# ----------------------------------------------------------------------------------------------------
# Reference recipes (issue 15): parameter groups, MSN/TDN initialisation, flips with label swaps,
# label smoothing, mixup/cutmix, colour augmentations, AdamW betas, held-out teacher weighting.
# ----------------------------------------------------------------------------------------------------

PARAM_GROUPS = ("tsm", "uniform")
FLIP_MODES = ("auto", "on", "off")


def _add_recipe_options(p):
    """The reference recipes' augmentation, loss and optimiser options (TSM defaults)."""
    g = p.add_argument_group("reference recipes (augmentation, loss, optimiser)")
    g.add_argument("--param_groups", default="tsm", choices=PARAM_GROUPS,
                   help="tsm: TSM's groups (BN and bias without decay, bias lr x2, x5/x10 head); uniform: "
                        "every parameter at lr x1 with weight decay (what TDN/MSN's main.py trains with)")
    g.add_argument("--flip", default="auto", choices=FLIP_MODES,
                   help="random horizontal flip in training: auto = the dataset's registry trait (off for "
                        "Something-Something and Jester; on for unregistered datasets)")
    g.add_argument("--flip_pairs", default=None,
                   help="classes swapped when a clip is flipped, 'a:b,c:d' ('none' for no swap); default: the "
                        "registry's (Something v1/v2: 86:87,93:94,166:167 as TDN/MSN)")
    g.add_argument("--label_smoothing", type=float, default=0.0, help="soft-target CE with eps/K off-targets")
    g.add_argument("--mixup", type=float, default=0.0, help="mixup Beta alpha (0 = off; ILA 0.8)")
    g.add_argument("--cutmix", type=float, default=0.0, help="cutmix Beta alpha (0 = off; ILA 1.0)")
    g.add_argument("--mix_switch_prob", type=float, default=0.5,
                   help="with both mixup and cutmix: probability of cutmix for a batch")
    g.add_argument("--color_jitter", type=float, default=0.0,
                   help="probability of colour jitter (brightness/contrast .4, saturation .2, hue .1; ILA 0.8)")
    g.add_argument("--grayscale", type=float, default=0.0, help="probability of grayscale (ILA 0.2)")
    g.add_argument("--random_erasing", type=float, default=0.0, help="probability of random erasing (ILA 0.25)")
    g.add_argument("--adam_betas", type=float, nargs=2, default=(0.9, 0.999), metavar=("B1", "B2"),
                   help="AdamW betas (ILA 0.9 0.98)")
    g.add_argument("--teacher_weight_list", default=None,
                   help="softmin_dataset: list of held-out training videos (training-list format) on which "
                        "the teachers' CE is measured with evaluation transforms (default: the training set "
                        "with training augmentation)")
    return g


def _derive_recipe(args, spec):
    """Derived values of the recipe options (called from _derive_train)."""
    from ops.transforms import parse_flip_pairs
    args.hflip = {"on": True, "off": False, "auto": spec.flip}[args.flip]
    if args.flip_pairs is None:
        pairs = {}
        for a, b in spec.flip_pairs:
            pairs.update({a: b, b: a})
    else:
        pairs = parse_flip_pairs(args.flip_pairs)
    if any(c >= spec.num_class for c in pairs):
        raise ValueError(f"--flip_pairs names classes beyond the dataset's {spec.num_class} classes: "
                         f"{sorted(pairs)}")
    # canonical text 'a:b,c:d' (saved in args.json); ops.transforms.parse_flip_pairs reads it back
    args.flip_label_pairs = ",".join(f"{a}:{b}" for a, b in sorted(pairs.items()) if a < b)
    for family in archs.family_options():       # e.g. --ila_head auto: the dataset's trait
        for dest, trait in family.from_dataset:
            if getattr(args, dest) == "auto":
                setattr(args, dest, getattr(spec, trait))
    args.ila_class_names = None
    if args.ila_head == "text" and archs.backbone_traits(args.arch).family == "ila":
        args.ila_class_names = _text_class_names(args, spec)
    args.adam_betas = list(args.adam_betas)


def _text_class_names(args, spec):
    """The class names ILA's text head encodes: the category file's (read strictly, errors name the line)
    or the registry's; refused when the dataset has only a class count."""
    from archs.ila_text import TEXT_CONFIGS, tokenize
    if spec.categories is None:
        raise ValueError(f"--ila_head text encodes the class names, and dataset {args.dataset!r} has only a class "
                         f"count ({spec.num_class}): give --category_file (one class name per line, line i = "
                         f"label i-1)")
    names = read_class_names(spec.category_file) if spec.category_file else list(spec.categories)
    try:
        tokenize(names, TEXT_CONFIGS[args.arch[len("ila_"):]]["context_length"])
    except ValueError as exc:
        raise ValueError(f"{spec.category_file or args.dataset}: {exc}") from None
    return names


def _validate_recipe(parser, args):
    """The recipe options' ranges and the combinations that cannot work (flip pairs without flips,
    mixing with per-sample teacher weights or cached teacher scores, ...)."""
    err = parser.error
    for name in ("color_jitter", "grayscale", "random_erasing", "mix_switch_prob"):
        if not 0 <= getattr(args, name) <= 1:
            err(f"--{name} is a probability in [0, 1], got {getattr(args, name)}")
    if not 0 <= args.label_smoothing < 1:
        err(f"--label_smoothing must be in [0, 1), got {args.label_smoothing}")
    if args.mixup < 0 or args.cutmix < 0:
        err("--mixup and --cutmix are Beta alphas >= 0 (0 = off)")
    if not all(0 <= b < 1 for b in args.adam_betas):
        err(f"--adam_betas must be in [0, 1), got {args.adam_betas}")
    if args.adam_betas != [0.9, 0.999] and args.optimizer != "adamw":
        err("--adam_betas applies to --optimizer adamw")
    if args.flip_pairs not in (None, "none", "") and not args.hflip:
        err("--flip_pairs swaps labels of flipped clips, but flipping is off (add --flip on)")
    if (args.mixup > 0 or args.cutmix > 0) and args.teacher_weighting == "softmin_sample":
        err("--teacher_weighting softmin_sample needs each sample's own label; it cannot be combined with "
            "--mixup/--cutmix")
    if (args.mixup > 0 or args.cutmix > 0) and args.teacher_scores:
        err("--teacher_scores are logits of unmixed videos; they cannot teach --mixup/--cutmix batches")
    if args.teacher_weight_list and args.teacher_weighting != "softmin_dataset":
        err("--teacher_weight_list is used by --teacher_weighting softmin_dataset only")
    if args.teacher_weight_list and not os.path.isfile(args.teacher_weight_list):
        err(f"--teacher_weight_list: no such file {args.teacher_weight_list!r}")
