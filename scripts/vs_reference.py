"""`benchmark.py vs_reference`: this project against the reference TSM code, same inputs, fresh processes.

The reference is imported from a checkout the user gives (`--reference PATH`, e.g. a clone of
mit-han-lab/temporal-shift-module); nothing of it is copied here. Every measurement runs in its own
Python process (the two code bases both name their package `ops`, and a fresh process gives clean
allocator and thread-pool state); the two sides alternate, their order swaps on every repeat, and each
side keeps the minimum over repeats. Ratios are reference time / our time (> 1: we are faster). Wall and
CPU-process time are both reported: on a shared machine the CPU-time ratio is the steadier one.

Cases (8 segments, input 224, 340x256 JPEG frames unless changed):
  load-rgb, load-flow, load-rgbdiff   training loading per worker (in-process), TSM's train transforms
  load-test                           3-crop x twice-sampled test loading (TSM test_models.py protocol)
  train-fp32, train-bf16              TSM-R50 training step (SGD, clip 20, partial BN); ours bf16 runs
                                      channels_last (the reference cannot: its shift calls .view())
  infer-fp32                          3 crops x 2 clips evaluation forward

Our loaders hand uint8 clips to the model by default (normalised on its device); `--ours_output float`
times the CPU-normalising path instead, which is what a like-for-like CPU-only comparison wants.
The reference needs one shim on today's torchvision: its `getattr(torchvision.models, arch)(False)` call
still works (deprecated positional argument); nothing else is patched.
"""
import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from ops.transforms import IMAGENET_MEAN, IMAGENET_STD   # bound before a reference worker swaps `ops`
from scripts.bench_common import data_case, emit, environment, make_data_tree

VS_CASES = ('load-rgb', 'load-flow', 'load-rgbdiff', 'load-test', 'train-fp32', 'train-bf16', 'infer-fp32')


def add_arguments(p):
    p.add_argument('--reference', required=True, help='path of a reference TSM checkout (its ops/ package)')
    p.add_argument('--cases', default=','.join(VS_CASES), help='comma list from ' + ', '.join(VS_CASES))
    p.add_argument('--repeats', type=int, default=3, help='alternating rounds; each side keeps its minimum')
    p.add_argument('--samples', type=int, default=24, help='clips per loading measurement')
    p.add_argument('--steps', type=int, default=3, help='timed steps per model measurement (after 1 warm-up)')
    p.add_argument('--threads', type=int, default=1, help='torch threads in every measured process')
    p.add_argument('--arch', default='resnet50')
    p.add_argument('--num_segments', type=int, default=8)
    p.add_argument('--input_size', type=int, default=224)
    p.add_argument('--batch_size', type=int, default=2, help='clips per training step')
    p.add_argument('--num_class', type=int, default=174)
    p.add_argument('--num_videos', type=int, default=4)
    p.add_argument('--num_frames', type=int, default=48)
    p.add_argument('--width', type=int, default=340)
    p.add_argument('--height', type=int, default=256)
    p.add_argument('--ours_output', default='uint8', choices=('uint8', 'float'),
                   help='what our loader returns: uint8 (default pipeline) or normalised float')
    p.add_argument('--json', action='store_true')
    p.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    p.add_argument('--tree', default=None, help=argparse.SUPPRESS)


# --------------------------------------------------------------------------------------- one measurement

def _modality(case):
    return {'load-rgb': 'RGB', 'load-flow': 'Flow', 'load-rgbdiff': 'RGBDiff', 'load-test': 'RGB'}[case]


def _time_loading(get, n, samples, next_pass):
    for i in range(2):
        get(i % n)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(samples):
        if i % n == 0:
            next_pass(i // n)
        get(i % n)
    return {'wall_s': (time.perf_counter() - wall) / samples, 'cpu_s': (time.process_time() - cpu) / samples}


def _ours_loading(args, case, tree):
    from ops.dataset import VideoDataSet
    from ops.transforms import build_transform
    modality = _modality(case)
    kw = data_case(f'{modality.lower()}-frames', tree, args.num_segments, args.input_size)
    train = case != 'load-test'
    transform = build_transform(train, modality, input_size=args.input_size,
                                scale_size=args.input_size * 256 // 224, test_crops=1 if train else 3,
                                output=args.ours_output)
    if not train:
        kw['sampling'] = dataclasses.replace(kw['sampling'], mode='test', twice=True)
    ds = VideoDataSet(transform=transform, **kw)
    return _time_loading(lambda i: ds[i], len(ds), args.samples, ds.set_epoch)


def _reference_loading(args, case, tree):
    import numpy as np
    import torchvision
    from ops import transforms as RT          # the reference's package (sys.path[0] = its checkout)
    from ops.dataset import TSNDataSet
    modality = _modality(case)
    train = case != 'load-test'
    size = args.input_size
    scale = size * 256 // 224
    if train:
        scales = [1, .875, .75, .66] if modality == 'RGB' else [1, .875, .75]
        geometry = [RT.GroupMultiScaleCrop(size, scales), RT.GroupRandomHorizontalFlip(is_flow=modality == 'Flow')]
    else:
        geometry = [RT.GroupScale(scale), RT.GroupFullResSample(size, scale, flip=False)]
    if modality == 'RGBDiff':
        normalize = RT.IdentityTransform()
    elif modality == 'Flow':
        normalize = RT.GroupNormalize([0.5], [float(np.mean(IMAGENET_STD))])
    else:
        normalize = RT.GroupNormalize(list(IMAGENET_MEAN), list(IMAGENET_STD))
    transform = torchvision.transforms.Compose(
        geometry + [RT.Stack(roll=False), RT.ToTorchFormatTensor(div=True), normalize])
    flow = modality == 'Flow'
    ds = TSNDataSet(tree['flow'] if flow else tree['frames'], tree['lists']['flow' if flow else 'rgb'],
                    num_segments=args.num_segments, new_length=1 if modality == 'RGB' else 5, modality=modality,
                    image_tmpl='flow_{}_{:05d}.jpg' if flow else 'img_{:05d}.jpg', transform=transform,
                    random_shift=train, test_mode=not train, twice_sample=not train)
    return _time_loading(lambda i: ds[i], len(ds), args.samples, lambda epoch: None)


def _reference_model_step(args, case):
    import torch
    import torch.nn.functional as F
    from ops.models import TSN                # the reference's
    torch.manual_seed(0)
    model = TSN(args.num_class, args.num_segments, 'RGB', base_model=args.arch, consensus_type='avg',
                dropout=0.5, partial_bn=True, pretrain='none', is_shift=True, shift_div=8,
                shift_place='blockres', print_spec=False)
    bf16 = case == 'train-bf16'
    if case == 'infer-fp32':
        model.eval()
        x = torch.randn(6, 3 * args.num_segments, args.input_size, args.input_size)   # 3 crops x 2 clips

        def step():
            with torch.no_grad():
                model(x)
    else:
        model.train()
        optimizer = torch.optim.SGD(model.get_optim_policies(), lr=0.001, momentum=0.9, weight_decay=5e-4)
        x = torch.randn(args.batch_size, 3 * args.num_segments, args.input_size, args.input_size)
        labels = torch.randint(0, args.num_class, (args.batch_size,))

        def step():
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
            F.cross_entropy(logits.float(), labels).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 20)
            optimizer.step()
    step()
    walls, cpus = [], []
    for _ in range(args.steps):
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {'wall_s': statistics.median(walls), 'cpu_s': statistics.median(cpus)}


def run_worker(args):
    """Runs inside a fresh process: one side, one case; prints one JSON line."""
    import torch
    torch.set_num_threads(args.threads)
    side, case = args.worker.split(':')
    tree = json.loads(open(args.tree).read()) if args.tree else None
    if side == 'ref':
        sys.path.insert(0, os.path.abspath(args.reference))
        for name in [m for m in sys.modules if m == 'ops' or m.startswith('ops.')]:
            del sys.modules[name]
        result = (_reference_loading(args, case, tree) if case.startswith('load') else
                  _reference_model_step(args, case))
    else:
        result = _ours_loading(args, case, tree)
    print(json.dumps(result))


# --------------------------------------------------------------------------------------- orchestration

def _ours_model_argv(args, case):
    common = ['--json', '--arch', args.arch, '--num_segments', str(args.num_segments), '--input_size',
              str(args.input_size), '--num_class', str(args.num_class), '--shift', '--device', 'cpu',
              '--threads', str(args.threads), '--warmup', '1', '--repeats', str(args.steps)]
    if case == 'infer-fp32':
        return ['infer', *common, '--test_crops', '3', '--num_clips', '2', '--batch_size', '1', '--amp', 'off']
    amp = ['--amp', 'bf16', '--channels_last'] if case == 'train-bf16' else ['--amp', 'off']
    return ['train', *common, '--batch_size', str(args.batch_size), '--no_peak', '--gd', '20', *amp]


def _run(argv):
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'benchmark.py')
    proc = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f'benchmark {" ".join(argv)} failed:\n{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _measure(args, side, case, tree_file):
    if side == 'ours' and not case.startswith('load'):
        r = _run(_ours_model_argv(args, case))
        if case == 'infer-fp32':
            return {'wall_s': r['ms_per_batch'] / 1e3, 'cpu_s': None}
        return {'wall_s': r['ms_per_step'] / 1e3, 'cpu_s': r['cpu_ms_per_step'] / 1e3}
    argv = ['vs_reference', '--worker', f'{side}:{case}', '--reference', args.reference]
    if case.startswith('load'):
        argv += ['--tree', tree_file]
    for name in ('samples', 'steps', 'threads', 'arch', 'num_segments', 'input_size', 'batch_size', 'num_class',
                 'ours_output'):
        argv += [f'--{name}', str(getattr(args, name))]
    return _run(argv)


def compare(args):
    import torch
    if not os.path.isfile(os.path.join(args.reference, 'ops', 'models.py')):
        raise SystemExit(f'--reference {args.reference}: no ops/models.py there (give a TSM checkout)')
    cases = args.cases.split(',')
    unknown = [c for c in cases if c not in VS_CASES]
    if unknown:
        raise SystemExit(f'unknown --cases {unknown}; choose from {list(VS_CASES)}')
    best = {(side, case): None for side in ('ours', 'ref') for case in cases}
    with tempfile.TemporaryDirectory(prefix='tsm_vs_ref_') as tmp:
        tree_file = os.path.join(tmp, 'tree.json')
        if any(c.startswith('load') for c in cases):
            tree = make_data_tree(tmp, args.num_videos, args.num_frames, args.width, args.height)
            with open(tree_file, 'w') as f:
                json.dump(tree, f)
        for rep in range(args.repeats):
            for case in cases:
                for side in (('ours', 'ref') if rep % 2 == 0 else ('ref', 'ours')):
                    r = _measure(args, side, case, tree_file)
                    old = best[side, case]
                    best[side, case] = r if old is None else {
                        k: (min(old[k], r[k]) if r[k] is not None else None) for k in r}
    rows = []
    for case in cases:
        ours, ref = best['ours', case], best['ref', case]
        row = {'case': case, 'ours_ms': 1e3 * ours['wall_s'], 'ref_ms': 1e3 * ref['wall_s'],
               'speedup': ref['wall_s'] / ours['wall_s']}
        if ours['cpu_s'] and ref['cpu_s']:
            row['cpu_speedup'] = ref['cpu_s'] / ours['cpu_s']
        rows.append(row)
    env = environment(torch.device('cpu'))
    result = {'subcommand': 'vs_reference', 'env': env, 'reference': os.path.abspath(args.reference),
              'repeats': args.repeats, 'threads': args.threads, 'ours_output': args.ours_output, 'cases': rows}
    columns = [('case', 'case', '{}'), ('ours_ms', 'ours ms', '{:.1f}'), ('ref_ms', 'reference ms', '{:.1f}'),
               ('speedup', 'x reference (wall)', '{:.2f}'), ('cpu_speedup', 'x reference (CPU time)', '{:.2f}')]
    title = (f'ours vs reference TSM, {args.num_segments} x {args.input_size}, {args.threads} thread(s), '
             f'min of {args.repeats} alternating fresh-process runs (loading: per clip, one worker; '
             f'model: per step / per 6-view batch)')
    return emit(args, result, rows, columns, title)


def cmd_vs_reference(args):
    if args.worker:
        return run_worker(args)
    return compare(args)
