"""The data of one training rank: list records parsed and paired once, datasets of both splits (with the
teachers' modalities when distilling), shard samplers and loaders.

These functions take the parsed options `args` of main.py: a dataset reads some twenty of them, which
the explicit list would only repeat.
"""
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from ops.dataset import (MultiModalDataSet, VideoDataSet, aligned_frame_counts, check_list_counts, pair_records,
                         parse_list, worker_init_fn)
from ops.dataset_config import ensure_builtin_data
from ops.distill import TeacherScores, load_teachers
from ops.heads import check_same_heads
from ops.layout_dataset import LayoutDataSet
from ops.modality import frames_per_segment
from ops.readers import ReaderConfig
from ops.sampler import ShardSampler
from ops.sampling import SamplingConfig
from ops.transforms import RGB_SCALES, build_transform, parse_flip_pairs
from ops.utils import named_input_errors


@dataclass
class RunData:
    """The data of one rank, resolved once: registry entries per modality, parsed and paired records."""
    spec: object                 # ops.dataset_config.DatasetInfo of this rank's modality
    specs: dict                  # modality -> DatasetInfo, every modality the rank reads (teachers' too)
    train_records: dict          # modality -> records of the training list, paired by video id
    val_records: dict
    pair_modalities: list        # the modalities of the run (mutual learning aligns them)
    teachers: object = None      # ops.distill teachers (--distill_from)
    teacher_scores: object = None

    @property
    def num_class(self):
        return self.spec.num_class


@dataclass
class Loaders:
    """Datasets, shard samplers and loaders of both splits of one rank (build_loaders)."""
    batch: int                   # per-rank batch
    train_set: object
    val_set: object
    train_sampler: object
    val_sampler: object
    train: object
    val: object


def build_data(args, ctx, modality, spec_of):
    """Registry entries (resolved once per modality), teachers, and the parsed, paired list records.
    spec_of: modality -> ops.dataset_config.DatasetInfo of the run's dataset (opts.dataset_spec)."""
    teachers = teacher_scores = None
    if args.distill_from:
        teachers = load_teachers(args.distill_from.split(","), ctx.device)
    if args.teacher_scores:
        teacher_scores = TeacherScores(args.teacher_scores)
        try:
            check_same_heads(args.head_layout, teacher_scores.heads, "the student",
                             f"--teacher_scores {args.teacher_scores}")
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
    pair_mods = list(args.modalities)
    train_mods = pair_mods + [m for m in (teachers.required_modalities if teachers else ()) if m not in pair_mods]
    with named_input_errors(RuntimeError):    # toy: generated on first use (box files when Layout is read)
        ensure_builtin_data(args.dataset, args.data_root, args.root_path, modalities=tuple(train_mods))
    specs = {m: spec_of(m) for m in dict.fromkeys([modality, *train_mods])}
    with named_input_errors():
        train_records = build_records("train", train_mods, specs)
        val_records = build_records("val", pair_mods, specs)
    return RunData(spec=specs[modality], specs=specs, train_records=train_records, val_records=val_records,
                   pair_modalities=pair_mods, teachers=teachers, teacher_scores=teacher_scores)


def build_records(split, modalities, specs):
    """Per-modality records of one split, paired by video id across the modalities of the run.
    specs: modality -> DatasetInfo (resolved once per run)."""
    option = "--train_list" if split == "train" else "--val_list"
    lists = {}
    for m in dict.fromkeys(modalities):
        spec = specs[m]
        path = spec.train_list if split == "train" else spec.val_list
        lists[m] = parse_list(path, spec.data_format, option=option, heads=spec.heads)
        check_counts_on_disk(lists[m], spec, split, path, option)
    if len(lists) == 1:
        return {modalities[0]: next(iter(lists.values()))}
    return pair_records(lists)


def check_counts_on_disk(records, spec, split, path, option):
    """A frames list whose counts do not match its modality's files (e.g. the RGB list given to a Flow
    rank) stops the run at start-up, naming the list."""
    if spec.data_format != "frames":
        return
    try:
        check_list_counts(records, root=spec.root_path if split == "train" else spec.val_root_path,
                          modality=spec.modality, image_tmpl=spec.image_tmpl, start_index=spec.start_index,
                          list_file=path, option=option)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None


def loader_output(args):
    """What the loaders return: uint8 clips (normalised by the model on its device), or normalised float
    clips when the batch is mixed (mixup/cutmix blend normalised clips) or erased (random erasing fills
    normalised zeros, which no uint8 value represents)."""
    return "float" if (args.mixup or args.cutmix or args.random_erasing) else "uint8"


def make_dataset(args, modality, split, records, spec, model, aligned, num_class, all_modalities,
                 position=0, norm=None, new_length=None, eval_transform=False):
    """One modality's dataset. `aligned`: every modality of the run shares temporal offsets (MML rule)
    and crop geometry (RGB scales for all, as the MML fork). norm/new_length default to `model`'s.
    eval_transform: videos of `split` read with evaluation sampling and transforms (held-out data)."""
    train = split == "train" and not eval_transform
    scales = RGB_SCALES if (aligned and len(set(all_modalities)) > 1) else None
    # Layout clips are boxes of the whole frame: no views to crop (ops/layout.py)
    transform = None if modality == "Layout" else build_transform(
        train, modality, input_size=model.crop_size, scale_size=args.scale_size or model.scale_size,
        flip=args.hflip, scales=scales, flip_pairs=parse_flip_pairs(args.flip_label_pairs),
        color_jitter=args.color_jitter, grayscale=args.grayscale, random_erasing=args.random_erasing,
        **(norm or model.normalization()), output=loader_output(args))
    aligned_frames = aligned_lengths = None
    if aligned and train and args.num_modalities > 1:
        # one column per modality rank (RGB,RGB has two columns over the same records)
        aligned_frames = aligned_frame_counts({i: records[m] for i, m in enumerate(all_modalities)})
        aligned_lengths = [frames_per_segment(m, args.new_length) for m in all_modalities]
    on_train = split == "train"
    dataset_class = LayoutDataSet if modality == "Layout" else VideoDataSet
    sampling = SamplingConfig(num_segments=args.num_segments, mode="train" if train else "val",
                              dense=args.dense_sample, random_sample=args.random_sample and train,
                              dense_length=args.dense_length, dense_number=args.dense_number)
    reading = ReaderConfig(data_format=spec.data_format, image_tmpl=spec.image_tmpl, start_index=spec.start_index,
                           video_backend=args.video_backend, autorotate=args.autorotate, audio=spec.audio,
                           strict=args.strict_data or not train)
    return dataset_class(
        spec.root_path if on_train else spec.val_root_path, spec.train_list if on_train else spec.val_list,
        new_length=new_length or args.new_length or model.new_length, modality=modality, transform=transform,
        sampling=sampling, reading=reading, seed=args.seed, num_class=num_class, records=records[modality],
        aligned_num_frames=aligned_frames, aligned_new_lengths=aligned_lengths, aligned_position=position,
        list_option="--train_list" if on_train else "--val_list")


def make_distill_dataset(args, modality, records, specs, model, teachers, num_class, eval_transform=False):
    """Student modality + every teacher modality of each sample, with identical views (MultiModalDataSet).
    eval_transform: evaluation sampling and transforms (the held-out set of --teacher_weight_list)."""
    norms = {modality: (model.normalization(), None)}
    for teacher, m, cfg in zip(teachers.teachers, teachers.modalities, teachers.configs):
        if cfg["num_segments"] != args.num_segments:
            raise SystemExit(f"a {m} teacher has {cfg['num_segments']} segments but the student has "
                             f"{args.num_segments}: distillation gives both the same frames")
        try:
            check_same_heads(args.head_layout, cfg.get("heads"), "the student", f"the {m} teacher")
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
        if cfg["num_class"] != num_class:
            raise SystemExit(f"a {m} teacher predicts {cfg['num_class']} classes, the dataset has {num_class}")
        if m == modality and teacher.frames_per_segment != model.frames_per_segment:
            raise SystemExit(f"an {m} teacher reads {teacher.frames_per_segment} frames per segment but the "
                             f"student reads {model.frames_per_segment}: they share the {m} input")
        norms.setdefault(m, (teacher.normalization(), cfg.get("new_length")))
    mods = list(norms)
    parts = {m: make_dataset(args, m, "train", records, specs[m], model, True, num_class, mods,
                             norm=norms[m][0], new_length=norms[m][1], eval_transform=eval_transform)
             for m in mods}
    return MultiModalDataSet(parts, seed=args.seed)


def build_loaders(args, ctx, modality, data, model):
    """Datasets, shard samplers and loaders of both splits (the student's and teachers' views together
    when distilling)."""
    batch = per_rank_batch(args.batch_size, ctx.num_replicas)
    aligned = ctx.num_modalities > 1
    with named_input_errors():
        if data.teachers is not None:
            train_set = make_distill_dataset(args, modality, data.train_records, data.specs, model, data.teachers,
                                             data.num_class)
        else:
            train_set = make_dataset(args, modality, "train", data.train_records, data.spec, model, aligned,
                                     data.num_class, data.pair_modalities, ctx.modality_index)
        val_set = make_dataset(args, modality, "val", data.val_records, data.spec, model, aligned, data.num_class,
                               data.pair_modalities, ctx.modality_index)
    train_sampler = ShardSampler(len(train_set), num_replicas=ctx.num_replicas, rank=ctx.replica_index,
                                 batch_size=batch, shuffle=True, drop_last=True, seed=args.seed)
    val_sampler = ShardSampler(len(val_set), num_replicas=ctx.num_replicas, rank=ctx.replica_index,
                               batch_size=batch, shuffle=False, drop_last=False)
    if train_sampler.num_batches() == 0 and not args.evaluate:
        raise SystemExit(f"{len(train_set)} training videos give no full batch of {batch} per replica; "
                         f"lower --batch-size")
    return Loaders(batch=batch, train_set=train_set, val_set=val_set, train_sampler=train_sampler,
                   val_sampler=val_sampler,
                   train=make_loader(train_set, train_sampler, batch, args.workers, ctx.device, args.seed),
                   val=make_loader(val_set, val_sampler, batch, args.workers, ctx.device, args.seed))


def make_loader(dataset, sampler, batch_size, workers, device, seed):
    on_gpu = device.type == "cuda"
    # Its own generator: creating an iterator must not consume the global RNG (exact resume).
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, generator=generator,
                      pin_memory=on_gpu, drop_last=False, worker_init_fn=worker_init_fn,
                      persistent_workers=workers > 0 and on_gpu,
                      prefetch_factor=4 if (workers > 0 and on_gpu) else None)


def per_rank_batch(batch_size, num_replicas):
    """--batch-size is the total over the data-parallel replicas."""
    if batch_size % num_replicas:
        raise SystemExit(f"--batch-size {batch_size} is not divisible by the {num_replicas} "
                         f"data-parallel replicas")
    return batch_size // num_replicas
