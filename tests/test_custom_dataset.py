"""Your own dataset end to end (README "Your own dataset"): lists from class folders of real videos,
training under an unregistered name (frames and video format), evaluation without repeating the data
flags, per-modality roots and lists ('{modality}') for mutual learning and ensembles, and the refusals
(another configuration into a run directory, a second process on it, a list of the wrong modality)."""
import csv
import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

from ops.dataset_config import fill_modality, resolve_dataset
from ops.rundir import RunDirError, check_run_config, first_difference, lock_run_dir, release_run_dirs
from opts import parse_test_args
from tests.test_eval_cli import test_models as evaluation   # the entry point, loaded by path
from conftest import REPO, launch_ranks, wait_ranks

CLASSES = ('jump', 'run', 'wave')
VIDEOS_PER_CLASS = 3
NUM_FRAMES = 10
TINY = ['--arch', 'resnet18', '--pretrain', 'none', '--shift', '--num_segments', '4', '--input_size', '32',
        '--batch-size', '2', '--epochs', '1', '-j', '0', '--no_progress', '--amp', 'off', '--lr', '0.01']


def write_videos(root, classes=CLASSES, per_class=VIDEOS_PER_CLASS, num_frames=NUM_FRAMES):
    """<root>/<class>/<class>_<k>.mp4: a bar moving at a class-specific speed, written with ffmpeg."""
    import imageio_ffmpeg
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    for c, cls in enumerate(classes):
        os.makedirs(os.path.join(root, cls), exist_ok=True)
        for k in range(per_class):
            frames = np.zeros((num_frames, 48, 64, 3), np.uint8)
            for t in range(num_frames):
                x = (t * (c + 1) * 3 + k * 7) % 56
                frames[t, :, x:x + 8] = 80 + 50 * c
            subprocess.run([ffmpeg, '-y', '-loglevel', 'error', '-f', 'rawvideo', '-pix_fmt', 'rgb24',
                            '-s', '64x48', '-r', '10', '-i', '-', '-c:v', 'libx264', '-pix_fmt', 'yuv420p',
                            os.path.join(root, cls, f'{cls}_{k}.mp4')], input=frames.tobytes(), check=True)


def build_lists(argv):
    from scripts.build_file_list import main
    return main(['folders', *argv])


@pytest.fixture(scope='module')
def mydata(tmp_path_factory):
    """The README pipeline on real videos: videos -> frames -> flow -> lists, in data/mydata."""
    from scripts.extract_flow import main as extract_flow
    from scripts.extract_frames import main as extract_frames
    work = tmp_path_factory.mktemp('custom')
    data = work / 'data' / 'mydata'
    write_videos(str(data / 'videos'))
    assert extract_frames(['--video_dir', str(data / 'videos'), '--out_dir', str(data / 'RGB'),
                           '--workers', '1']) == 0
    assert extract_flow(['--video_dir', str(data / 'videos'), '--out_dir', str(data / 'Flow'),
                         '--algorithm', 'farneback', '--workers', '1']) == 0
    assert build_lists(['--root', str(data / 'videos'), '--frames_root', str(data / 'RGB'),
                        '--flow_root', str(data / 'Flow'), '--out_dir', str(data / 'lists'),
                        '--val_ratio', '0.34']) == 0
    return work


def data_flags(fmt='frames'):
    """The data options of the README commands, relative to the work folder."""
    if fmt == 'video':
        return ['--data_format', 'video', '--root_path', 'data/mydata/videos',
                '--train_list', 'data/mydata/lists/train_video.txt',
                '--val_list', 'data/mydata/lists/val_video.txt',
                '--category_file', 'data/mydata/lists/category.txt']
    return ['--root_path', 'data/mydata/{modality}', '--train_list', 'data/mydata/lists/train_{modality}.txt',
            '--val_list', 'data/mydata/lists/val_{modality}.txt',
            '--category_file', 'data/mydata/lists/category.txt']


def read_lines(path):
    with open(path) as f:
        return f.read().splitlines()


@pytest.fixture
def evaluate(monkeypatch):
    """evaluate(cwd, *argv) -> result dict of test_models.py run in-process from folder cwd."""
    def run(cwd, *argv):
        monkeypatch.chdir(cwd)
        return evaluation.main(parse_test_args(['mydata', '--no_progress', *argv]))
    return run


def only_run(root_model, pattern='*'):
    (run,) = [p for p in root_model.glob(pattern) if p.is_dir()]
    return run


# ------------------------------------------------------------------------------------------- lists

def test_lists_from_class_folders(mydata, tmp_path):
    lists = mydata / 'data' / 'mydata' / 'lists'
    assert read_lines(lists / 'category.txt') == list(CLASSES)
    for split, per_class in (('train', 2), ('val', 1)):           # round(3 * 0.34) = 1 val video per class
        rgb = [l.split() for l in read_lines(lists / f'{split}_RGB.txt')]
        flow = [l.split() for l in read_lines(lists / f'{split}_Flow.txt')]
        video = [l.split() for l in read_lines(lists / f'{split}_video.txt')]
        assert [int(r[2]) for r in rgb] == [c for c in range(len(CLASSES)) for _ in range(per_class)]
        assert [r[0] for r in flow] == [r[0] for r in rgb] and [r[2] for r in flow] == [r[2] for r in rgb]
        assert [v[0] for v in video] == [r[0] + '.mp4' for r in rgb]
        assert all(r[0].startswith(CLASSES[int(r[2])] + '/') for r in rgb)
        assert {int(r[1]) for r in rgb} == {NUM_FRAMES}                # counted on disk
        assert {int(r[1]) for r in flow} == {NUM_FRAMES - 1}           # flow has one step fewer on disk
    # the same seed gives byte-identical lists; another seed draws another validation set
    data = mydata / 'data' / 'mydata'
    common = ['--root', str(data / 'videos'), '--frames_root', str(data / 'RGB'), '--flow_root',
              str(data / 'Flow'), '--val_ratio', '0.34']
    assert build_lists([*common, '--out_dir', str(tmp_path / 'again')]) == 0
    for name in os.listdir(lists):
        assert (tmp_path / 'again' / name).read_bytes() == (lists / name).read_bytes(), name
    assert build_lists([*common, '--out_dir', str(tmp_path / 'seed5'), '--seed', '5']) == 0
    assert (tmp_path / 'seed5' / 'val_RGB.txt').read_bytes() != (lists / 'val_RGB.txt').read_bytes()


def test_lists_from_frame_folders_and_val_dir(tmp_path, write_rgb_jpegs, write_mp4):
    for cls, n in (('a', 4), ('b', 5)):
        for k in range(2):
            write_rgb_jpegs(str(tmp_path / 'frames' / cls / f'{cls}{k}'), n + k)
    os.makedirs(tmp_path / 'frames' / '.ipynb_checkpoints')
    os.makedirs(tmp_path / 'frames' / 'a' / '.cache')
    assert build_lists(['--root', str(tmp_path / 'frames'), '--out_dir', str(tmp_path / 'l')]) == 0
    assert read_lines(tmp_path / 'l' / 'category.txt') == ['a', 'b']
    assert sorted(read_lines(tmp_path / 'l' / 'train_RGB.txt') + read_lines(tmp_path / 'l' / 'val_RGB.txt')) \
        == ['a/a0 4 0', 'a/a1 5 0', 'b/b0 5 1', 'b/b1 6 1']
    assert not (tmp_path / 'l' / 'train_video.txt').exists()
    # --val_dir: validation videos from a second tree; video paths stay relative to --root
    write_mp4(str(tmp_path / 'train' / 'a' / 'x.mp4'), 3)
    write_mp4(str(tmp_path / 'val' / 'a' / 'y.mp4'), 3)
    assert build_lists(['--root', str(tmp_path / 'train'), '--val_dir', str(tmp_path / 'val'),
                        '--out_dir', str(tmp_path / 'v')]) == 0
    assert read_lines(tmp_path / 'v' / 'train_video.txt') == ['a/x.mp4 0']
    assert read_lines(tmp_path / 'v' / 'val_video.txt') == ['../val/a/y.mp4 0']


@pytest.mark.parametrize('case, message', [
    ('empty', 'no class sub-folders'),
    ('one_video', "class 'b' has 1 video: it cannot be split"),
    ('empty_class', "class folder 'c' holds no video files"),
    ('same_id', 'have the same video id'),
    ('spaces', 'names with white space'),
    ('no_frames', 'have no files matching'),
    ('leak', 'videos in both --root and --val_dir'),
])
def test_list_building_errors(case, message, tmp_path, write_mp4, capsys):
    root = tmp_path / 'videos'
    root.mkdir()
    extra = []
    if case != 'empty':
        for k in range(2):
            write_mp4(str(root / 'a' / f'a{k}.mp4'), 2)
        write_mp4(str(root / 'b' / 'b0.mp4'), 2)
    if case != 'one_video' and case != 'empty':
        write_mp4(str(root / 'b' / 'b1.mp4'), 2)
    if case == 'empty_class':
        (root / 'c').mkdir()
    if case == 'same_id':
        write_mp4(str(root / 'a' / 'a0.avi'), 2)
    if case == 'spaces':
        write_mp4(str(root / 'a' / 'a 2.mp4'), 2)
    if case == 'no_frames':
        extra = ['--frames_root', str(tmp_path / 'RGB')]
    if case == 'leak':
        write_mp4(str(tmp_path / 'val' / 'a' / 'a0.mp4'), 2)
        extra = ['--val_dir', str(tmp_path / 'val')]
    assert build_lists(['--root', str(root), '--out_dir', str(tmp_path / 'l'), *extra]) == 1
    assert message in capsys.readouterr().err


def test_same_video_in_two_classes_is_named(tmp_path, write_mp4, capsys):
    for cls in ('a', 'b'):
        write_mp4(str(tmp_path / 'v' / cls / 'same.mp4'), 3)
        write_mp4(str(tmp_path / 'v' / cls / f'{cls}.mp4'), 2 + len(cls))
    assert build_lists(['--root', str(tmp_path / 'v'), '--out_dir', str(tmp_path / 'l')]) == 0
    assert 'a/same.mp4 and b/same.mp4' in capsys.readouterr().err


# -------------------------------------------------------------------------------- {modality} paths

def test_modality_placeholder_resolution(tmp_path):
    cats = tmp_path / 'cats.txt'
    cats.write_text('x\ny\n')
    for modality, folder in (('RGB', 'RGB'), ('RGBDiff', 'RGB'), ('Flow', 'Flow')):
        info = resolve_dataset('mydata', modality, root_path='d/{modality}', train_list='l/train_{modality}.txt',
                               val_list='l/val_{modality}.txt', category_file=str(cats))
        assert (info.root_path, info.train_list, info.val_list) == \
            (f'd/{folder}', f'l/train_{folder}.txt', f'l/val_{folder}.txt')
        assert info.categories == ['x', 'y'] and info.flip
    assert fill_modality(None, 'Flow') is None
    # evaluation needs no train list; class names can come from a checkpoint
    info = resolve_dataset('mydata', 'RGB', root_path='d', val_list='v.txt', categories=['p', 'q', 'r'],
                           splits=('val',))
    assert info.train_list is None and info.num_class == 3 and info.categories == ['p', 'q', 'r']
    with pytest.raises(ValueError, match='give --train_list'):
        resolve_dataset('mydata', 'RGB', root_path='d', val_list='v.txt', num_class=3)


def test_check_data_resolves_modality(mydata, capsys, monkeypatch):
    from scripts.check_data import main as check_data
    monkeypatch.chdir(mydata)
    assert check_data(['mydata', '--modality', 'Flow', *data_flags()]) == 0
    assert 'checked mydata Flow (frames): train 6 videos, val 3 videos' in capsys.readouterr().out
    bad = [f.replace('train_{modality}', 'train_RGB') for f in data_flags()]
    assert check_data(['mydata', '--modality', 'Flow', *bad]) == 1
    assert 'count_mismatch' in capsys.readouterr().out


def _readme_section(title):
    with open(os.path.join(REPO, 'README.md')) as f:
        text = f.read()
    start = text.index(f'\n## {title}\n')
    return text[start:text.index('\n## ', start + 1)]


def test_readme_checks_the_data_before_the_first_training(mydata, capsys, monkeypatch):
    # Issue 29: the own-dataset walk-through trained before checking anything. Its check_data commands run
    # here as written (from the work folder, as README runs them), each before the training it prepares.
    from scripts.check_data import main as check_data
    lines = [line for line in _readme_section('Your own dataset').splitlines() if line.startswith('python ')]
    checks = [i for i, line in enumerate(lines) if line.startswith('python scripts/check_data.py')]
    trainings = [i for i, line in enumerate(lines) if line.startswith('python main.py')]
    assert len(checks) >= 2 and checks[0] < trainings[0] and checks[1] < trainings[1] and checks[1] > trainings[0]
    assert '--data_format video' in lines[checks[1]] and '--data_format video' in lines[trainings[1]]
    monkeypatch.chdir(mydata)
    for i in checks[:2]:
        assert check_data(shlex.split(lines[i])[2:]) == 0, lines[i]
        assert 'OK: no problems found' in capsys.readouterr().out


def test_predict_on_the_class_folder_trees(mydata, tiny_checkpoint, capsys, monkeypatch, tmp_path):
    # Issue 29: `predict.py FOLDER` on the tree this section builds said "folder holds no videos, frame folders
    # or frames" twice and exited 2. Now it searches the tree, says what it found, and the progress bar counts
    # the videos.
    from test_predict import predict   # the module pytest collects (imported once)
    weights = tiny_checkpoint(tmp_path / 'w.pth.tar', 'RGB', 0)
    monkeypatch.chdir(mydata)
    n = len(CLASSES) * VIDEOS_PER_CLASS
    assert predict.main(predict.parse_args(['--weights', weights, '--device', 'cpu', '-j', '0', 'data/mydata/videos',
                                            'data/mydata/RGB', '--batch_size', '4',
                                            '--output', str(tmp_path / 'p.json')])) == 0
    err = capsys.readouterr().err
    assert f'data/mydata/videos: {n} videos and 0 frame folders (searched recursively)' in err
    assert f'data/mydata/RGB: 0 videos and {n} frame folders (searched recursively)' in err
    # two bars (the videos, then the frame folders) of n videos, in steps of the batch: 0/9, 4/9, 8/9 (9/9 is
    # cleared at once); before, they counted batches: 0/3, 1/3, ...
    shown = re.findall(r'\b(\d+)/(\d+) \[[^\]\r\n]*video', err)
    assert {total for _, total in shown} == {str(n)} and [done for done, _ in shown].count('0') == 2, err
    assert {int(done) % 4 for done, _ in shown if int(done) < n} == {0}
    videos = [entry['video'] for entry in json.load(open(tmp_path / 'p.json'))['videos']]
    assert videos == [f'data/mydata/videos/{c}/{c}_{k}.mp4' for c in CLASSES for k in range(VIDEOS_PER_CLASS)] + \
        [f'data/mydata/RGB/{c}/{c}_{k}' for c in CLASSES for k in range(VIDEOS_PER_CLASS)]


# ----------------------------------------------------------------------------------- run directories

def test_first_difference_ignores_runtime_options():
    old = {'lr': 0.01, 'workers': 8, 'resume': '', 'optimizer': 'sgd', 'gone': 1}
    assert first_difference(old, {'lr': 0.01, 'workers': 2, 'resume': 'auto', 'optimizer': 'sgd', 'new': 3}) \
        is None
    assert first_difference(old, {'lr': 0.01, 'optimizer': 'adamw', 'workers': 8}) == ('optimizer', 'sgd', 'adamw')


def test_config_check_and_lock(tmp_path):
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'args.json').write_text(json.dumps({'batch_size': 8, 'lr': 0.1}))
    check_run_config(str(run), {'batch_size': 8, 'lr': 0.1, 'workers': 3})
    with pytest.raises(RunDirError, match=r"--batch-size is 8 there and 16 now"):
        check_run_config(str(run), {'batch_size': 16, 'lr': 0.1}, {'batch_size': '--batch-size'})
    # a lock held by another process refuses; once that process is killed (no cleanup), it is free
    holder = subprocess.Popen([sys.executable, '-c', 'import sys, time; from ops.rundir import lock_run_dir; '
                               'lock_run_dir(sys.argv[1]); print("locked", flush=True); time.sleep(120)',
                               str(run)], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=REPO))
    try:
        assert holder.stdout.readline().strip() == 'locked'
        with pytest.raises(RunDirError, match=rf'in use by pid {holder.pid} on'):
            lock_run_dir(str(run))
    finally:
        holder.kill()
        holder.wait()
    lock_run_dir(str(run))
    lock_run_dir(str(run))            # idempotent in the holding process
    release_run_dirs()


# ------------------------------------------------------------------------------- train and evaluate

@pytest.mark.slow
@pytest.mark.parametrize('fmt', ['frames', 'video'])
def test_train_and_evaluate_unregistered_dataset(fmt, mydata, run_cli, evaluate, capsys, tmp_path):
    root_model = tmp_path / 'ckpt'
    common = ['main.py', 'mydata', 'RGB', *data_flags(fmt), *TINY, '--root_model', str(root_model),
              '--root_log', str(tmp_path / 'log')]
    log = run_cli(common, cwd=mydata).stderr
    # 3 classes: the training log leaves top-5 out too (it is 100 % by construction)
    assert 'epoch 1: train loss' in log and 'val top-1' in log and 'top-5' not in log
    run = only_run(root_model)
    assert run.name == 'TSM_mydata_RGB_resnet18_shift8_blockres_avg_segment4_e1_none'
    weights = str(run / 'ckpt.best.pth.tar')
    # evaluation from another folder, without any data flag: the checkpoint's recorded data is used
    plain = evaluate(tmp_path, '--weights', weights, '--csv_file', str(tmp_path / 'pred.csv'), '--output_dir',
                     str(tmp_path / 'eval'))
    out = capsys.readouterr().out
    assert f'{len(CLASSES)} videos' in out
    # 3 classes: top-5 would be 100 % by construction, so it is left out; every output file is named
    assert 'Prec@5' not in out and 'top5' not in plain
    assert 'top5' not in json.loads((tmp_path / 'eval' / 'summary.json').read_text())
    assert f"\n  {tmp_path / 'eval' / 'confusion.png'}\n" in out and f"  {tmp_path / 'pred.csv'}\n" in out
    flags = data_flags(fmt)
    flags[flags.index('--val_list')] = '--test_list'
    flags.remove('--train_list')
    flags.remove(f'data/mydata/lists/train_{"video" if fmt == "video" else "{modality}"}.txt')
    assert evaluate(mydata, '--weights', weights, *flags)['top1'] == plain['top1']
    with open(tmp_path / 'eval' / 'per_class.csv') as f:
        assert [row['name'] for row in csv.DictReader(f)] == list(CLASSES)
    predicted = [line.split(';')[1] for line in read_lines(tmp_path / 'pred.csv')]
    assert len(predicted) == len(CLASSES) and set(predicted) <= set(CLASSES)
    if fmt == 'frames':
        # the same directory with another learning rate is refused, naming the option; the same
        # configuration continues it with --resume auto
        lr = common.index('--lr') + 1
        other = run_cli([*common[:lr], '0.05', *common[lr + 1:]], cwd=mydata, check=False)
        assert other.returncode == 1
        assert '--lr is 0.01 there and 0.05 now' in other.stderr
        again = run_cli([*common, '--resume', 'auto'], cwd=mydata)
        assert 'resumed from' in again.stderr
        # a Flow run given the RGB list stops at start-up, naming the list
        bad = [f.replace('train_{modality}', 'train_RGB') for f in common]
        bad[bad.index('RGB')] = 'Flow'
        flow = run_cli([*bad, '--suffix', 'wrong'], cwd=mydata, check=False)
        assert flow.returncode == 1
        assert 'data/mydata/lists/train_RGB.txt (--train_list) does not match the Flow files' in flow.stderr
        assert not list(root_model.glob('*Flow*/ckpt.pth.tar'))


@pytest.mark.slow
def test_mutual_learning_and_ensemble_with_separate_roots(mydata, run_cli, evaluate, capsys, tmp_path):
    wait_ranks(launch_ranks([sys.executable, os.path.join(REPO, 'main.py'), 'mydata', 'RGB,Flow', *data_flags(),
                             *TINY, '--root_model', str(tmp_path / 'ckpt'), '--root_log', str(tmp_path / 'log'),
                             '--check_alignment', '--dist_timeout', '30'], 2, mydata, 'tcp'), 300)
    rgb = only_run(tmp_path / 'ckpt', '*_RGB_*_ML0') / 'ckpt.best.pth.tar'
    flow = only_run(tmp_path / 'ckpt', '*_Flow_*_ML1') / 'ckpt.best.pth.tar'
    import torch
    assert torch.load(flow, weights_only=True)['data']['root_path'] == str(mydata / 'data' / 'mydata' / 'Flow')
    weights = f'{rgb},{flow}'
    plain = evaluate(tmp_path, '--weights', weights)
    assert '[Flow, coeff 1]' in capsys.readouterr().out
    flags = ['--root_path', 'data/mydata/{modality}', '--test_list', 'data/mydata/lists/val_{modality}.txt',
             '--category_file', 'data/mydata/lists/category.txt']
    assert evaluate(mydata, '--weights', weights, *flags)['top1'] == plain['top1']
    # distillation: an RGB student reads its frames, the Flow teacher its own flow, from one set of flags
    run_cli(['main.py', 'mydata', 'RGB', *data_flags(), *TINY, '--distill_from', str(flow), '--max_steps_per_epoch',
             '1', '--root_model', str(tmp_path / 'ckpt'), '--root_log', str(tmp_path / 'log')], cwd=mydata)
    assert (only_run(tmp_path / 'ckpt', '*_distill') / 'ckpt.pth.tar').is_file()
    # one RGB list for both: the Flow checkpoint refuses it before decoding anything
    with pytest.raises(SystemExit, match='val_RGB.txt \\(--test_list\\) does not match the Flow files'):
        evaluate(mydata, '--weights', weights, '--root_path', 'data/mydata/{modality}', '--test_list',
                 'data/mydata/lists/val_RGB.txt')


def test_evaluation_data_comes_from_flags_then_checkpoint_then_registry(tiny_checkpoint, tmp_path):
    from opts import parse_test_args
    test_data_spec = evaluation.test_data_spec
    weights = tiny_checkpoint(tmp_path / 'w.pth.tar', 'Flow', 0)
    (tmp_path / 'Flow').mkdir()
    (tmp_path / 'val_Flow.txt').write_text('')
    root, val = str(tmp_path / 'Flow'), str(tmp_path / 'val_Flow.txt')
    recorded = {'data': dict(dataset='mydata', modality='Flow', data_format='frames', root_path=root,
                             val_list=val, image_tmpl='f_{}_{:03d}.jpg', num_class=2, categories=['a', 'b'])}
    spec = test_data_spec(parse_test_args(['mydata', '--weights', weights]), 0, recorded, 'Flow')
    assert (spec.root_path, spec.val_list, spec.image_tmpl, spec.categories) == \
        (root, val, 'f_{}_{:03d}.jpg', ['a', 'b'])
    args = parse_test_args(['mydata', '--weights', weights, '--root_path', 'r/{modality}', '--test_list',
                            't_{modality}.txt', '--num_class', '2', '--flow_tmpl', 'x{}{:d}.jpg'])
    spec = test_data_spec(args, 0, recorded, 'Flow')
    assert (spec.root_path, spec.val_list, spec.image_tmpl, spec.categories) == \
        ('r/Flow', 't_Flow.txt', 'x{}{:d}.jpg', None)
    # data moved since training: the recorded paths are not used (the registry / flags are)
    moved = {'data': dict(recorded['data'], root_path=str(tmp_path / 'gone'))}
    with pytest.raises(ValueError, match="dataset 'mydata' is not registered.*give --root_path, --val_list"):
        test_data_spec(parse_test_args(['mydata', '--weights', weights]), 0, moved, 'Flow')
    # a checkpoint trained under another name: its data is not reused
    with pytest.raises(ValueError, match="dataset 'other' is not registered.*give --root_path"):
        test_data_spec(parse_test_args(['other', '--weights', weights]), 0, recorded, 'Flow')


def test_run_name_replaces_the_tsm_name():
    from opts import parse_args
    common = ['mydata', 'RGB', '--root_path', 'd', '--train_list', 't.txt', '--val_list', 'v.txt',
              '--num_class', '3']
    assert parse_args([*common, '--run_name', 'exp1']).store_names == ['exp1']
    assert parse_args([*common, '--suffix', 'lr05']).store_names[0].endswith('_e50_lr05')
    with pytest.raises(SystemExit):
        parse_args([*common, '--run_name', 'a/b'])
