"""Shared fixtures: tiny real data files (JPEG frames, flow, mp4, lists) written into tmp_path; the repository
root, free ports and a multi-rank launcher for the tests that start real processes."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ops.distributed import free_port  # noqa: F401  (tests import it from here)

FRAME_W, FRAME_H = 32, 24
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(relpath, name):
    """The module of an entry point loaded by its path under the repository (scripts are no package, and
    `import test_models` under pytest finds tests/test_models.py first)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def launch_ranks(argv, world, cwd, mode="env", port=None, env=None):
    """Start `world` processes running argv as the ranks of one job -> their Popen objects (stderr in stdout).

    mode 'env' exports what torchrun exports (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT); 'tcp' passes
    --rank / --world_size / --init_method flags instead."""
    port = port or free_port()
    procs = []
    for rank in range(world):
        rank_env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1", **(env or {}))
        rank_argv = list(argv)
        if mode == "env":
            rank_env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                            MASTER_PORT=str(port))
        else:
            rank_argv += ["--rank", str(rank), "--world_size", str(world), "--init_method",
                          f"tcp://127.0.0.1:{port}"]
        procs.append(subprocess.Popen(rank_argv, cwd=cwd, env=rank_env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    return procs


def wait_ranks(procs, timeout=240):
    """Each rank's output; fails naming the first rank that exited non-zero, with the end of its output."""
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    for r, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"rank {r} exited {p.returncode}:\n{out[-4000:]}"
    return outs


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: takes more than about 5 s (still runs in CI)')
    # pytest.ini starts one pytest-xdist worker per core: each takes its share of the intra-op threads (of
    # OMP_NUM_THREADS, else of the cores), and so do the processes its tests start. Two workers with two
    # threads each took twice as long on 2 cores (OpenMP threads spinning on a busy core).
    workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
    if workers > 1:
        threads = max(1, torch.get_num_threads() // workers)
        torch.set_num_threads(threads)
        os.environ['OMP_NUM_THREADS'] = str(threads)


def frame_value(video_index, frame_number):
    """Flat grey level of frame `frame_number` of video `video_index`: lets a test see which frame was read."""
    return (40 * video_index + 8 * frame_number) % 250


@pytest.fixture(name='frame_value')
def frame_value_fixture():
    return frame_value


def _save_jpeg(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, quality=95)


@pytest.fixture
def write_rgb_jpegs():
    """write(folder, num_frames, video_index=0, tmpl='img_{:05d}.jpg', size=(W, H)) -> folder."""
    def write(folder, num_frames, video_index=0, tmpl='img_{:05d}.jpg', size=(FRAME_W, FRAME_H)):
        w, h = size
        for k in range(1, num_frames + 1):
            _save_jpeg(os.path.join(folder, tmpl.format(k)),
                       np.full((h, w, 3), frame_value(video_index, k), np.uint8))
        return folder
    return write


@pytest.fixture
def write_flow_jpegs():
    """write(folder, num_frames, video_index=0): flow_x/flow_y grayscale pairs; x = value, y = 255 - value."""
    def write(folder, num_frames, video_index=0, size=(FRAME_W, FRAME_H)):
        w, h = size
        for k in range(1, num_frames + 1):
            v = frame_value(video_index, k)
            _save_jpeg(os.path.join(folder, f'flow_x_{k:05d}.jpg'), np.full((h, w), v, np.uint8))
            _save_jpeg(os.path.join(folder, f'flow_y_{k:05d}.jpg'), np.full((h, w), 255 - v, np.uint8))
        return folder
    return write


@pytest.fixture
def write_mp4():
    """write(path, num_frames, video_index=0, size=(64, 48)) -> path; an H.264 mp4 written with PyAV."""
    def write(path, num_frames, video_index=0, size=(64, 48)):
        import av
        w, h = size
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with av.open(path, 'w') as container:
            stream = container.add_stream('libx264', rate=10)
            stream.width, stream.height, stream.pix_fmt = w, h, 'yuv420p'
            stream.options = {'crf': '0'}   # near-lossless, so flat grey levels survive
            for k in range(1, num_frames + 1):
                img = np.full((h, w, 3), frame_value(video_index, k), np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format='rgb24')):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        return path
    return write


@pytest.fixture
def write_list():
    """write(path, lines) -> path."""
    def write(path, lines):
        with open(path, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        return str(path)
    return write


@pytest.fixture
def frames_dataset(tmp_path, write_rgb_jpegs, write_flow_jpegs, write_list):
    """Three videos (10, 12, 9 frames), RGB frames and flow, lists `vid n label`; returns a dict."""
    counts = {'v0': 10, 'v1': 12, 'v2': 9}
    for i, (vid, n) in enumerate(counts.items()):
        write_rgb_jpegs(str(tmp_path / 'frames' / vid), n, video_index=i)
        write_flow_jpegs(str(tmp_path / 'flow' / vid), n, video_index=i)
    lines = [f'{vid} {n} {i}' for i, (vid, n) in enumerate(counts.items())]
    return dict(root=str(tmp_path / 'frames'), flow_root=str(tmp_path / 'flow'), counts=counts,
                rgb_list=write_list(tmp_path / 'rgb.txt', lines),
                flow_list=write_list(tmp_path / 'flow.txt', lines[::-1]), num_class=3)


@pytest.fixture(scope='session')
def tiny_toy(tmp_path_factory):
    """A tiny generated toy dataset (real mp4, JPEG frames, flow, lists), shared by the CLI tests.

    Returns the data root to pass as --data_root. 32 train / 16 val clips of 10 frames at 32x32.
    """
    from ops.toy import ensure_toy_dataset
    if os.environ.get('PYTEST_XDIST_WORKER'):
        # Each pytest-xdist worker's basetemp is a folder in the run's: the first worker generates the set
        # beside them, the others wait on ensure_toy_dataset's lock and share it.
        root = tmp_path_factory.getbasetemp().parent / 'toydata'
    else:
        root = tmp_path_factory.mktemp('toydata')
    ensure_toy_dataset(str(root), num_train=32, num_val=16, num_frames=10, size=32, workers=1)
    return str(root)


@pytest.fixture
def run_cli():
    """run(argv, cwd, env=None, timeout=...) -> CompletedProcess of `python <argv...>` (repo on PYTHONPATH)."""
    def run(argv, cwd, env=None, timeout=300, check=True):
        full_env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
        full_env.update(env or {})
        script = argv[0] if os.path.isabs(argv[0]) else os.path.join(REPO, argv[0])
        proc = subprocess.run([sys.executable, script, *argv[1:]], cwd=cwd, env=full_env,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f'{argv} exited {proc.returncode}\nSTDOUT:\n{proc.stdout[-3000:]}\n'
                                 f'STDERR:\n{proc.stderr[-5000:]}')
        return proc
    return run


@pytest.fixture(scope='session')
def tiny_checkpoint():
    """write(path, modality, seed, shift=True, random_bn_stats=False, shift_direction='bi') -> path of a
    real checkpoint file:
    a random resnet18 TSN/TSM, 8 classes, 4 segments, input 32, with a non-trivial head (the default
    std-0.001 head gives near-equal logits) and optionally non-trivial BN statistics (so eval-mode BN
    matters)."""
    import torch
    from ops.checkpoint import save_checkpoint
    from ops.models import TSN
    from ops.temporal_modules import TemporalConfig

    def write(path, modality, seed, shift=True, random_bn_stats=False, shift_direction='bi'):
        torch.manual_seed(seed)
        temporal = TemporalConfig('tsm' if shift else None, shift_direction=shift_direction)
        model = TSN(8, 4, modality, base_model='resnet18', temporal=temporal, pretrain='none', input_size=32,
                    dropout=0.5)
        with torch.no_grad():
            model.new_fc.weight.normal_(0, 0.5)
            for m in model.modules():
                if random_bn_stats and isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
        save_checkpoint({'epoch': 1, 'arch': 'resnet18', 'state_dict': model.state_dict(), 'optimizer': {},
                         'best_prec1': 0.0, 'config': model.config()}, str(path))
        return str(path)
    return write

