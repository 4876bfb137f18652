"""Data tools under scripts/: show_sampling, check_data, extract_frames, extract_flow, build_file_list,
pack_hdf5. Real files in tmp_path, tiny sizes."""
import json
import os
import shutil
import subprocess
import sys

import cv2
import h5py
import numpy as np
import pytest

from ops.hdf5_store import HDF5FrameStore, write_video_frames
from ops.toy import ensure_toy_dataset, write_video
from ops.video_io import load_image
from scripts import build_file_list, check_data, extract_flow, extract_frames, pack_hdf5, show_sampling
from conftest import REPO

SCRIPTS = ('show_sampling', 'check_data', 'extract_frames', 'extract_flow', 'build_file_list', 'pack_hdf5')
TOY_SMALL = dict(num_train=16, num_val=8, num_frames=12, size=32, workers=1)


@pytest.fixture(scope='module')
def toy_master(tmp_path_factory):
    return ensure_toy_dataset(str(tmp_path_factory.mktemp('toy_master')), **TOY_SMALL)


@pytest.fixture
def toy_copy(toy_master, tmp_path):
    """A private copy of the small toy set (tests damage it): returns data_root."""
    shutil.copytree(toy_master, tmp_path / 'toy')
    return str(tmp_path)


def _run_script(name, *args):
    return subprocess.run([sys.executable, os.path.join('scripts', name + '.py'), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def _first_record(data_root, list_name='train_rgb.txt'):
    with open(os.path.join(data_root, 'toy', list_name)) as f:
        vid, n, label = f.readline().split()
    return vid, int(n), int(label)


# --------------------------------------------------------------------------------------------- help

@pytest.mark.parametrize('name', SCRIPTS)
def test_help(name, capsys):
    module = globals()[name]
    with pytest.raises(SystemExit) as exc:
        module.main(['--help'])
    assert exc.value.code == 0
    assert 'usage:' in capsys.readouterr().out


def test_help_as_command_line():
    # The scripts run as `python scripts/X.py` from the repo root (they put the root on sys.path).
    result = _run_script('pack_hdf5', '--help')
    assert result.returncode == 0 and '--output' in result.stdout


# ------------------------------------------------------------------------------------ show_sampling

def test_show_sampling_checked_value_cli():
    result = _run_script('show_sampling', '--num_frames', '50', '--num_segments', '8', '--mode', 'val')
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {'clips': [[4, 10, 16, 22, 29, 35, 41, 47]]}


def test_show_sampling_modes(capsys):
    show_sampling.main(['--num_frames', '50', '--num_segments', '8', '--mode', 'test', '--twice_sample'])
    assert json.loads(capsys.readouterr().out)['clips'] == [[4, 10, 16, 22, 29, 35, 41, 47],
                                                            [1, 7, 13, 19, 26, 32, 38, 44]]
    show_sampling.main(['--num_frames', '100', '--num_segments', '8', '--new_length', '5'])
    assert json.loads(capsys.readouterr().out)['clips'] == [[7, 19, 31, 43, 55, 67, 79, 91]]
    show_sampling.main(['--num_frames', '100', '--num_segments', '8', '--modality', 'Flow'])
    assert json.loads(capsys.readouterr().out)['clips'] == [[7, 19, 31, 43, 55, 67, 79, 91]]
    args = ['--num_frames', '40', '--num_segments', '8', '--mode', 'train', '--random_sample', '--seed', '3']
    show_sampling.main(args)
    first = capsys.readouterr().out
    show_sampling.main(args)
    assert capsys.readouterr().out == first  # seeded
    with pytest.raises(SystemExit):
        show_sampling.main(['--num_frames', '0', '--num_segments', '8'])


# ----------------------------------------------------------------------------------------- check_data

def _check(data_root, *extra):
    return check_data.main(['toy', '--data_root', data_root, *extra])


def test_check_data_passes_on_toy(toy_copy, capsys):
    for modality in ('RGB', 'Flow', 'RGBDiff'):
        assert _check(toy_copy, '--modality', modality) == 0
    assert _check(toy_copy, '--data_format', 'video', '--sample_frames') == 0
    assert 'OK' in capsys.readouterr().out


def test_check_data_cli_exit_status(toy_copy):
    vid, _, _ = _first_record(toy_copy)
    os.remove(os.path.join(toy_copy, 'toy', 'frames', vid, 'img_00002.jpg'))
    result = _run_script('check_data', 'toy', '--data_root', toy_copy, '--split', 'train')
    assert result.returncode == 1
    assert os.path.join('frames', vid) in result.stdout and 'missing_frame 1' in result.stdout


def test_check_data_missing_frame_and_folder(toy_copy, capsys):
    vid, n, _ = _first_record(toy_copy)
    os.remove(os.path.join(toy_copy, 'toy', 'frames', vid, f'img_{n:05d}.jpg'))
    other, _, _ = _first_record(toy_copy, 'val_rgb.txt')
    shutil.rmtree(os.path.join(toy_copy, 'toy', 'frames', other))
    assert _check(toy_copy) == 1
    out = capsys.readouterr().out
    assert f'count_mismatch: {os.path.join(toy_copy, "toy", "frames", vid)}: list says {n} frames, found {n - 1}' in out
    assert f'missing_folder: {os.path.join(toy_copy, "toy", "frames", other)}' in out
    assert 'FAILED: 3 problems: missing_folder 1, count_mismatch 1, missing_frame 1' in out


def test_check_data_pair_with_reports_unpaired_lists(toy_copy, capsys):
    assert _check(toy_copy, '--pair_with', 'Flow', '--pair_with', 'RGBDiff', '--sample_frames') == 0
    for modality, name in (('Flow', 'train_flow.txt'), ('RGB', 'train_rgb.txt')):   # RGB: check_split's records
        path = os.path.join(toy_copy, 'toy', name)
        with open(path) as f:
            lines = f.readlines()
        with open(path, 'w') as f:
            f.writelines(lines[1:])
        capsys.readouterr()
        assert _check(toy_copy, '--pair_with', 'Flow', '--split', 'train', '--sample_frames') == 1
        vid = lines[0].split()[0]
        assert (f'unpaired_video: train: 1 of {len(lines)} videos are missing from the {modality} list {path}: {vid}'
                in capsys.readouterr().out)
        with open(path, 'w') as f:
            f.writelines(lines)


def test_check_data_corrupt_jpeg(toy_copy, capsys):
    vid, _, _ = _first_record(toy_copy, 'train_flow.txt')
    path = os.path.join(toy_copy, 'toy', 'flow', vid, 'flow_y_00003.jpg')
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 3])  # truncated JPEG
    assert _check(toy_copy, '--modality', 'Flow') == 1
    out = capsys.readouterr().out
    assert f'unreadable_image: cannot read image {path}' in out
    # --sample_frames only decodes the first and the last frame, so it misses the middle one.
    assert _check(toy_copy, '--modality', 'Flow', '--sample_frames') == 0


def test_check_data_bad_label_and_malformed_list(toy_copy, capsys):
    path = os.path.join(toy_copy, 'toy', 'val_rgb.txt')
    with open(path) as f:
        lines = f.read().splitlines()
    vid, n, _ = lines[0].split()
    lines[0] = f'{vid} {n} 8'
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    assert _check(toy_copy, '--split', 'val') == 1
    assert f'bad_label: {path}: {vid}: label 8 outside [0, 8)' in capsys.readouterr().out
    with open(path, 'a') as f:
        f.write('broken_line 3\n')
    assert _check(toy_copy, '--split', 'val') == 1
    assert f'malformed_list: {path}:{len(lines) + 1}' in capsys.readouterr().out


def test_check_data_videos(toy_copy, capsys):
    vid, _, _ = _first_record(toy_copy)
    with open(os.path.join(toy_copy, 'toy', 'videos', vid + '.mp4'), 'wb') as f:
        f.write(b'not a video at all')
    other, _, _ = _first_record(toy_copy, 'val_rgb.txt')
    os.remove(os.path.join(toy_copy, 'toy', 'videos', other + '.mp4'))
    assert _check(toy_copy, '--data_format', 'video', '--video_backend', 'pyav') == 1
    out = capsys.readouterr().out
    assert 'undecodable_video 1' in out and 'missing_video 1' in out and vid + '.mp4' in out


# -------------------------------------------------------------------------------------- pack_hdf5

def _pack_toy(data_root, split, modality, *extra):
    toy = os.path.join(data_root, 'toy')
    sub, suffix = ('flow', 'flow') if modality == 'Flow' else ('frames', 'rgb')
    out = os.path.join(toy, 'hdf5', f'{split}_{suffix}.h5')
    rc = pack_hdf5.main(['--root', os.path.join(toy, sub), '--list', os.path.join(toy, f'{split}_{suffix}.txt'),
                         '--output', out, '--modality', modality, *extra])
    return rc, out


def test_pack_hdf5_round_trip(toy_copy, capsys):
    toy = os.path.join(toy_copy, 'toy')
    for split in ('train', 'val'):
        for modality in ('RGB', 'Flow'):
            assert _pack_toy(toy_copy, split, modality)[0] == 0
    vid, n, _ = _first_record(toy_copy)
    rgb = HDF5FrameStore(os.path.join(toy, 'hdf5', 'train_rgb.h5'))
    assert rgb.num_frames(vid) == n
    # Element k - 1 is the byte-identical JPEG of frame k.
    with open(os.path.join(toy, 'frames', vid, 'img_00003.jpg'), 'rb') as f:
        assert rgb.read_elements(vid, [2]) == [f.read()]
    frames = rgb.read_rgb(vid, [1, n])
    np.testing.assert_array_equal(frames[1], load_image(os.path.join(toy, 'frames', vid, f'img_{n:05d}.jpg')))
    flow = HDF5FrameStore(os.path.join(toy, 'hdf5', 'train_flow.h5'))
    assert flow.num_frames(vid) == n - 1
    xy = flow.read_flow(vid, [2])
    np.testing.assert_array_equal(xy[0, :, :, 1], load_image(os.path.join(toy, 'flow', vid, 'flow_y_00002.jpg'), 'L'))
    rgb.close()
    flow.close()
    for modality in ('RGB', 'Flow', 'RGBDiff'):
        assert _check(toy_copy, '--data_format', 'hdf5', '--modality', modality) == 0
    capsys.readouterr()
    # Resumable: a second run writes nothing.
    assert _pack_toy(toy_copy, 'train', 'RGB')[0] == 0
    assert '16 of 16 videos already in' in capsys.readouterr().out


def test_pack_hdf5_from_video_and_problems(toy_copy, capsys):
    toy = os.path.join(toy_copy, 'toy')
    out = os.path.join(toy, 'hdf5', 'val_rgb.h5')
    assert pack_hdf5.main(['--source', 'video', '--root', os.path.join(toy, 'videos'),
                           '--list', os.path.join(toy, 'val_video.txt'), '--output', out]) == 0
    vid, n, _ = _first_record(toy_copy, 'val_rgb.txt')
    store = HDF5FrameStore(out)
    assert store.num_frames(vid) == n
    decoded = store.read_rgb(vid, [1])[0].astype(int)
    # Re-encoded through H.264 and JPEG: close to the original frame, not identical.
    assert np.abs(decoded - load_image(os.path.join(toy, 'frames', vid, 'img_00001.jpg'))).mean() < 6
    store.close()
    assert _check(toy_copy, '--data_format', 'hdf5', '--split', 'val') == 0
    with h5py.File(out, 'a') as h5:
        other = sorted(h5.keys())[1]
        del h5[vid]
        write_video_frames(h5, other, [b'garbage'] * n)  # wrong count, undecodable elements
    assert _check(toy_copy, '--data_format', 'hdf5', '--split', 'val', '--sample_frames') == 1
    text = capsys.readouterr().out
    assert f"missing_dataset: {out}: no dataset '{vid}'" in text
    assert 'count_mismatch 1' in text and 'undecodable_element 2' in text
    assert _check(toy_copy, '--data_format', 'hdf5', '--split', 'train') == 1
    assert 'missing_store' in capsys.readouterr().out


def test_pack_hdf5_refuses_gaps(toy_copy, capsys):
    vid, _, _ = _first_record(toy_copy)
    os.remove(os.path.join(toy_copy, 'toy', 'frames', vid, 'img_00004.jpg'))
    rc, out = _pack_toy(toy_copy, 'train', 'RGB')
    assert rc == 1 and 'missing e.g. [4]' in capsys.readouterr().err
    with h5py.File(out, 'r') as h5:
        assert vid not in h5 and len(h5) == 15


# ----------------------------------------------------------------------------------- extract_frames

def _gradient_clip(n, height=48, width=64):
    """Frames whose mean grey level encodes the frame number (robust to H.264)."""
    clip = np.zeros((n, height, width, 3), np.uint8)
    for k in range(n):
        clip[k] = 20 + 20 * k
    return clip


def test_extract_frames(tmp_path, capsys):
    videos = tmp_path / 'videos'
    (videos / 'classA').mkdir(parents=True)
    write_video(str(videos / 'classA' / 'clip1.mp4'), _gradient_clip(6))
    write_video(str(videos / 'clip2.mp4'), _gradient_clip(4))
    (videos / 'broken.mp4').write_bytes(b'no video here')
    out = tmp_path / 'frames'
    args = ['--video_dir', str(videos), '--out_dir', str(out), '--short_side', '24', '--quality', '90',
            '--workers', '1']
    assert extract_frames.main(args) == 1  # the broken video fails, the others are extracted
    assert 'broken.mp4' in capsys.readouterr().err
    names = sorted(os.listdir(out / 'classA' / 'clip1'))
    assert names == ['.done'] + [f'img_{k:05d}.jpg' for k in range(1, 7)]
    first = cv2.imread(str(out / 'classA' / 'clip1' / 'img_00001.jpg'))
    assert first.shape == (24, 32, 3)  # short side 48 -> 24, aspect kept
    means = [cv2.imread(str(out / 'classA' / 'clip1' / f'img_{k:05d}.jpg')).mean() for k in range(1, 7)]
    assert np.allclose(means, [20 + 20 * k for k in range(6)], atol=4)
    assert (out / 'frames_list.txt').read_text() == 'classA/clip1 6\nclip2 4\n'
    # Resumable: finished folders are not rewritten.
    stamp = os.path.getmtime(out / 'clip2' / 'img_00001.jpg')
    os.remove(videos / 'broken.mp4')
    assert extract_frames.main(args) == 0
    assert os.path.getmtime(out / 'clip2' / 'img_00001.jpg') == stamp


def test_one_video_extension_list_for_every_tool(tmp_path):
    from ops.video_io import VIDEO_EXTENSIONS
    assert extract_frames.VIDEO_EXTENSIONS is build_file_list.VIDEO_EXTENSIONS is VIDEO_EXTENSIONS
    for name in ('a.wmv', 'b.3gp', 'c.MKV', 'notes.txt', 'd/e.mp4'):
        os.makedirs(os.path.dirname(tmp_path / name), exist_ok=True)
        (tmp_path / name).write_bytes(b'')
    assert extract_frames.find_videos(str(tmp_path)) == ['a.wmv', 'b.3gp', 'c.MKV', os.path.join('d', 'e.mp4')]


def test_extract_frames_from_list_with_labels(tmp_path):
    videos = tmp_path / 'videos'
    videos.mkdir()
    write_video(str(videos / 'a.mp4'), _gradient_clip(5))
    (tmp_path / 'videos.txt').write_text('a.mp4 3\n')
    out = tmp_path / 'frames'
    list_out = tmp_path / 'list.txt'
    assert extract_frames.main(['--video_list', str(tmp_path / 'videos.txt'), '--video_dir', str(videos),
                                '--out_dir', str(out), '--tmpl', '{:06d}.jpg', '--list_out', str(list_out),
                                '--workers', '1']) == 0
    assert list_out.read_text() == 'a 5 3\n'
    assert sorted(os.listdir(out / 'a'))[1:] == [f'{k:06d}.jpg' for k in range(1, 6)]


# ------------------------------------------------------------------------------------- extract_flow

def _square_frames(folder, shift):
    """Two 48x48 frames: a textured bright square moving `shift` pixels to the right over a static
    textured background (so that the background's zero flow is well defined)."""
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    texture = rng.integers(150, 255, (12, 12), dtype=np.uint8)
    background = cv2.GaussianBlur(rng.integers(0, 100, (48, 48), dtype=np.uint8), (3, 3), 0)
    for k, x in enumerate((16, 16 + shift), 1):
        img = background.copy()
        img[18:30, x:x + 12] = texture
        cv2.imwrite(os.path.join(folder, f'img_{k:05d}.jpg'), cv2.merge([img, img, img]), [cv2.IMWRITE_JPEG_QUALITY, 100])


@pytest.mark.parametrize('algorithm', ('tvl1', 'farneback', 'dis'))
def test_extract_flow_sign(tmp_path, algorithm):
    frames = tmp_path / 'frames'
    _square_frames(str(frames / 'right'), 2)
    _square_frames(str(frames / 'left'), -2)
    (tmp_path / 'list.txt').write_text('right 2 0\nleft 2 1\n')
    out = tmp_path / 'flow'
    assert extract_flow.main(['--frames_root', str(frames), '--list', str(tmp_path / 'list.txt'),
                              '--out_dir', str(out), '--algorithm', algorithm, '--workers', '1']) == 0
    assert (out / 'flow_list.txt').read_text() == 'right 1 0\nleft 1 1\n'
    assert sorted(os.listdir(out / 'right')) == ['.flow_done', 'flow_x_00001.jpg', 'flow_y_00001.jpg']
    meta = json.loads((out / 'extraction.json').read_text())
    assert meta['algorithm'] == algorithm and meta['bound'] == 20
    for name, sign in (('right', 1), ('left', -1)):
        fx = cv2.imread(str(out / name / 'flow_x_00001.jpg'), cv2.IMREAD_UNCHANGED).astype(float)
        fy = cv2.imread(str(out / name / 'flow_y_00001.jpg'), cv2.IMREAD_UNCHANGED).astype(float)
        assert fx.ndim == 2  # grayscale
        region = (slice(20, 28), slice(19, 27))  # inside the square in both frames
        # 2 px of motion = 2 * 255 / 40 = 12.75 grey levels from 128.
        assert sign * (fx[region].mean() - 128) > 5
        assert abs(fy[region].mean() - 128) < 5
        assert abs(np.median(fx[:, :8]) - 128) <= 2  # static background: zero flow


def test_extract_flow_from_video_and_resume(tmp_path):
    videos = tmp_path / 'videos'
    videos.mkdir()
    write_video(str(videos / 'v.mp4'), _gradient_clip(4))
    out = tmp_path / 'flow'
    args = ['--video_dir', str(videos), '--out_dir', str(out), '--algorithm', 'farneback', '--workers', '1']
    assert extract_flow.main(args) == 0
    assert (out / 'flow_list.txt').read_text() == 'v 3\n'
    stamp = os.path.getmtime(out / 'v' / 'flow_x_00001.jpg')
    assert extract_flow.main(args) == 0
    assert os.path.getmtime(out / 'v' / 'flow_x_00001.jpg') == stamp


# --------------------------------------------------------------------------------- build_file_list

@pytest.fixture
def frames_root(tmp_path):
    """Frame folders: counts per video id; `missing` has no folder."""
    counts = {'11': 3, '12': 5, '13': 2, 'v_Run_g01_c01': 4, 'v_Jump_g02_c01': 6, 'v_Jump_g08_c02': 2,
              'jump_a': 3, 'run_b': 4, 'run_c': 2, 'yt1_000010_000020': 7, 'yt2_000000_000010': 3}
    root = tmp_path / 'frames'
    for vid, n in counts.items():
        (root / vid).mkdir(parents=True)
        for k in range(1, n + 1):
            (root / vid / f'img_{k:05d}.jpg').write_bytes(b'')
            (root / vid / f'{k:06d}.jpg').write_bytes(b'')
            (root / vid / f'{k:05d}.jpg').write_bytes(b'')
        for k in range(1, n):
            for axis in 'xy':
                (root / vid / f'flow_{axis}_{k:05d}.jpg').write_bytes(b'')
    return str(root)


def _lines(path):
    with open(path) as f:
        return f.read().splitlines()


def test_build_somethingv2(tmp_path, frames_root):
    ann = tmp_path / 'ann'
    ann.mkdir()
    (ann / 'labels.json').write_text(json.dumps({'Pushing something from left to right': '1',
                                                 'Holding something': '0'}))
    (ann / 'train.json').write_text(json.dumps([
        {'id': '11', 'label': 'pushing a pen from left to right',
         'template': 'Pushing [something] from left to right', 'placeholders': ['a pen']},
        {'id': '12', 'label': 'holding a cup', 'template': 'Holding [something]', 'placeholders': ['a cup']},
        {'id': '99', 'label': 'holding x', 'template': 'Holding [something]', 'placeholders': ['x']}]))
    (ann / 'val.json').write_text(json.dumps([
        {'id': '13', 'label': 'holding a pen', 'template': 'Holding [something]', 'placeholders': ['a pen']}]))
    out = tmp_path / 'out'
    common = ['--labels', str(ann / 'labels.json'), '--train', str(ann / 'train.json'),
              '--val', str(ann / 'val.json'), '--out_dir', str(out)]
    assert build_file_list.main(['somethingv2', *common, '--frames_root', frames_root]) == 0
    assert _lines(out / 'category.txt') == ['Holding something', 'Pushing something from left to right']
    assert _lines(out / 'train_videofolder.txt') == ['11 3 1', '12 5 0']  # 99 has no frames
    assert _lines(out / 'val_videofolder.txt') == ['13 2 0']
    assert build_file_list.main(['somethingv2', *common, '--frames_root', frames_root, '--modality', 'Flow']) == 0
    assert _lines(out / 'train_videofolder_flow.txt') == ['11 2 1', '12 4 0']
    assert build_file_list.main(['somethingv2', *common, '--data_format', 'video']) == 0
    assert _lines(out / 'train_video.txt') == ['11.webm 1', '12.webm 0', '99.webm 0']


def test_build_something_v1(tmp_path, frames_root):
    (tmp_path / 'labels.csv').write_text('Tearing something\nHolding something\n')
    (tmp_path / 'train.csv').write_text('11;Tearing something\n12;Holding something\n')
    (tmp_path / 'val.csv').write_text('13;Tearing something\n')
    out = tmp_path / 'out'
    assert build_file_list.main(['something', '--labels', str(tmp_path / 'labels.csv'),
                                 '--train', str(tmp_path / 'train.csv'), '--val', str(tmp_path / 'val.csv'),
                                 '--frames_root', frames_root, '--out_dir', str(out)]) == 0
    assert _lines(out / 'category.txt') == ['Holding something', 'Tearing something']  # sorted
    assert _lines(out / 'train_videofolder.txt') == ['11 3 1', '12 5 0']
    assert _lines(out / 'val_videofolder.txt') == ['13 2 1']
    (tmp_path / 'val.csv').write_text('13;Unknown label\n')
    assert build_file_list.main(['something', '--labels', str(tmp_path / 'labels.csv'),
                                 '--train', str(tmp_path / 'train.csv'), '--val', str(tmp_path / 'val.csv'),
                                 '--frames_root', frames_root, '--out_dir', str(out)]) == 1


def test_build_kinetics(tmp_path, frames_root, capsys):
    header = 'label,youtube_id,time_start,time_end,split\n'
    (tmp_path / 'train.csv').write_text(header + 'riding bike,yt1,10,20,train\nabseiling,yt2,0,10,train\n'
                                        'abseiling,gone,5,15,train\n')
    (tmp_path / 'val.csv').write_text(header + 'riding bike,yt2,0,10,val\n')
    out = tmp_path / 'out'
    base = ['kinetics', '--train', str(tmp_path / 'train.csv'), '--val', str(tmp_path / 'val.csv'),
            '--out_dir', str(out)]
    assert build_file_list.main([*base, '--frames_root', frames_root]) == 0
    assert _lines(out / 'category.txt') == ['abseiling', 'riding bike']
    assert _lines(out / 'train_videofolder.txt') == ['yt1_000010_000020 7 1', 'yt2_000000_000010 3 0']
    assert _lines(out / 'val_videofolder.txt') == ['yt2_000000_000010 3 1']
    assert 'left out 1 videos' in capsys.readouterr().err
    assert build_file_list.main([*base, '--data_format', 'video',
                                 '--id_format', '{label_}/{youtube_id}_{time_start:06d}_{time_end:06d}']) == 0
    assert _lines(out / 'val_video.txt') == ['riding_bike/yt2_000000_000010.mp4 1']


def test_build_ucf101(tmp_path, frames_root):
    split_dir = tmp_path / 'ucfTrainTestlist'
    split_dir.mkdir()
    (split_dir / 'classInd.txt').write_text('1 Jump\n2 Run\n')
    (split_dir / 'trainlist01.txt').write_text('Run/v_Run_g01_c01.avi 2\nJump/v_Jump_g08_c02.avi 1\n')
    (split_dir / 'testlist01.txt').write_text('Jump/v_Jump_g02_c01.avi\n')
    out = tmp_path / 'out'
    base = ['ucf101', '--split_dir', str(split_dir), '--out_dir', str(out)]
    assert build_file_list.main([*base, '--frames_root', frames_root]) == 0
    assert _lines(out / 'category.txt') == ['Jump', 'Run']
    assert _lines(out / 'ucf101_rgb_train_split_1.txt') == ['v_Run_g01_c01 4 1', 'v_Jump_g08_c02 2 0']
    assert _lines(out / 'ucf101_rgb_val_split_1.txt') == ['v_Jump_g02_c01 6 0']
    assert build_file_list.main([*base, '--data_format', 'video']) == 0
    assert _lines(out / 'ucf101_video_val_split_1.txt') == ['Jump/v_Jump_g02_c01.avi 0']


def test_build_hmdb51(tmp_path, frames_root):
    split_dir = tmp_path / 'splits'
    split_dir.mkdir()
    (split_dir / 'run_test_split1.txt').write_text('run_b.avi 1 \nrun_c.avi 2 \nrun_d.avi 0 \n')
    (split_dir / 'jump_test_split1.txt').write_text('jump_a.avi 2 \n')
    (split_dir / 'jump_test_split2.txt').write_text('jump_a.avi 1 \n')
    out = tmp_path / 'out'
    counts = tmp_path / 'counts.txt'
    counts.write_text('run_b 4\nrun_c 2\njump_a 3\n')
    assert build_file_list.main(['hmdb51', '--split_dir', str(split_dir), '--out_dir', str(out),
                                 '--counts', str(counts)]) == 0
    assert _lines(out / 'category.txt') == ['jump', 'run']
    assert _lines(out / 'hmdb51_rgb_train_split_1.txt') == ['run_b 4 1']
    assert _lines(out / 'hmdb51_rgb_val_split_1.txt') == ['jump_a 3 0', 'run_c 2 1']
    assert build_file_list.main(['hmdb51', '--split_dir', str(split_dir), '--out_dir', str(out),
                                 '--frames_root', frames_root, '--split', '2', '--modality', 'Flow']) == 0
    assert _lines(out / 'hmdb51_flow_train_split_2.txt') == ['jump_a 2 0']
