"""Real-world video files (issues 14 and 29): edit lists, display matrices, AVI headers that overcount their
packets (not truncation), truncated downloads (MP4, AVI), VFR and 50 fps clips, made in tmp_path with
imageio-ffmpeg's ffmpeg binary. One definition of a video's frames: what ffmpeg decodes in presentation order
after the edit list (PyAV's decode order is the reference), whichever backend or tool reads it.
"""
import importlib.util
import json
import logging
import os
import re
import signal
import struct
import subprocess
import sys
import time

import av
import imageio_ffmpeg
import numpy as np
import pytest

from ops.video_io import (available_video_backends, display_orientation, FrameReadError, iter_video_frames, VideoFile,
                          load_image, probe_video, truncation)
from scripts import check_data, extract_flow, extract_frames, pack_hdf5
from conftest import REPO

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
W, H, RATE, GOP = 64, 48, 25, 25


def _ffmpeg(*args):
    subprocess.run([FFMPEG, '-hide_banner', '-loglevel', 'error', '-y', *args], check=True, timeout=60)


def ffmpeg_count(path, *vf):
    """Frames the ffmpeg binary decodes (passthrough: no frame dropped or duplicated), after optional -vf."""
    out = subprocess.run([FFMPEG, '-hide_banner', '-i', path, '-fps_mode', 'passthrough', *vf, '-f', 'null', '-'],
                         capture_output=True, text=True, timeout=60).stderr
    return int(re.findall(r'frame=\s*(\d+)', out)[-1])


def grey_index(frame):
    """Source frame number k (0-based) of a decoded frame: the grey level is 20 + 3k away from the marker."""
    return int(round((int(frame[-4, -4, 0]) - 20) / 3))


def reference_frames(path):
    """The frames PyAV decodes in order (the reference definition): uint8 (N, H, W, 3), stored pixels."""
    with av.open(path) as container:
        return np.stack([f.to_ndarray(format='rgb24') for f in container.decode(video=0)])


def reference_indices(path):
    """Source frame numbers of the reference frames."""
    return [grey_index(f) for f in reference_frames(path)]


def assert_pixels_match(frames, reference):
    """decord's and PyAV's colour conversions differ by 1-2 grey levels."""
    assert frames.shape == reference.shape
    assert np.abs(frames.astype(int) - reference.astype(int)).max() <= 2


@pytest.fixture(scope='module')
def clips(tmp_path_factory):
    """Real-style clips: {name: path}. src: 60 frames 64x48 at 25 fps, frame k grey 20 + 3k with a red
    16x12 marker in the top-left corner (shows orientation)."""
    d = tmp_path_factory.mktemp('real')
    src = str(d / 'src.mp4')
    with av.open(src, 'w') as container:
        stream = container.add_stream('libx264', rate=RATE)
        stream.width, stream.height, stream.pix_fmt = W, H, 'yuv420p'
        stream.options = {'crf': '0', 'g': str(GOP), 'sc_threshold': '0'}   # keyframes every GOP only
        for k in range(60):
            img = np.full((H, W, 3), 20 + 3 * k, np.uint8)
            img[:12, :16] = (255, 0, 0)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format='rgb24')):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    p = {name: str(d / name) for name in ('edit.mp4', 'rot90.mp4', 'vfr.mp4', 'gap.avi', 'f50.mp4', 'trunc.mp4')}
    # A stream-copy cut: starts at the keyframe before 1.5 s, the edit list hides the frames before 1.5 s.
    _ffmpeg('-ss', '1.5', '-i', src, '-t', '0.8', '-c', 'copy', p['edit.mp4'])
    _ffmpeg('-display_rotation', '90', '-i', src, '-frames:v', '20', '-c', 'copy', p['rot90.mp4'])
    _ffmpeg('-i', src, '-frames:v', '40', '-vf', "setpts='if(lt(N,20),N*2,40+(N-20))/TB/25'", '-fps_mode', 'vfr',
            '-c:v', 'libx264', '-crf', '0', p['vfr.mp4'])
    # AVI is constant-rate: the VFR gaps become header frames that never decode.
    _ffmpeg('-i', p['vfr.mp4'], '-c:v', 'mpeg4', '-q:v', '2', '-fps_mode', 'passthrough', p['gap.avi'])
    _ffmpeg('-i', src, '-r', '50', '-c:v', 'libx264', '-crf', '0', p['f50.mp4'])
    faststart = str(d / 'faststart.mp4')
    _ffmpeg('-i', src, '-frames:v', '30', '-c', 'copy', '-movflags', '+faststart', faststart)
    data = open(faststart, 'rb').read()
    with open(p['trunc.mp4'], 'wb') as f:
        f.write(data[:len(data) * 6 // 10])   # a download cut mid-file
    # An MPEG-4 AVI of 50 frames whose headers say 51 (issue 29's real clip), and the same file cut mid-way.
    _ffmpeg('-i', src, '-frames:v', '50', '-c:v', 'mpeg4', '-q:v', '2', str(d / 'a50.avi'))
    p['over.avi'] = overcount_avi_header(str(d / 'a50.avi'), str(d / 'over.avi'))
    data = open(p['over.avi'], 'rb').read()
    p['trunc.avi'] = str(d / 'trunc.avi')
    with open(p['trunc.avi'], 'wb') as f:
        f.write(data[:len(data) * 6 // 10])
    p['src.mp4'] = src
    return p


def overcount_avi_header(src, dst, extra=1):
    """Copy an AVI with its frame counts raised by `extra` (avih dwTotalFrames, the video strh dwLength, OpenDML
    dmlh dwTotalFrames), as writers do that count frames they never store. -> dst"""
    data = bytearray(open(src, 'rb').read())
    for tag, offset in ((b'avih', 16), (b'strh', 32), (b'dmlh', 0)):
        at = data.find(tag)   # the first one: the main header, the (only) video stream's header
        if at >= 0:
            field = at + 8 + offset
            struct.pack_into('<I', data, field, struct.unpack_from('<I', data, field)[0] + extra)
    with open(dst, 'wb') as f:
        f.write(data)
    return dst


def _run(script, *args, cwd=REPO, timeout=120):
    return subprocess.run([sys.executable, os.path.join(REPO, 'scripts', script + '.py'), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))


def _video_dir(tmp_path, clips, *names, rename=None):
    """A video folder <tmp>/videos/cls/ holding copies (hard links) of the named clips."""
    folder = tmp_path / 'videos' / 'cls'
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        os.link(clips[name], folder / ((rename or {}).get(name, name)))
    return str(tmp_path / 'videos')


def _check_args(tmp_path, videos, *lines):
    """check_data arguments for a one-split video list of `lines` under `videos`."""
    (tmp_path / 'v.txt').write_text(''.join(f'{line} 0\n' for line in lines))
    return ['x', '--root_path', videos, '--train_list', str(tmp_path / 'v.txt'), '--val_list',
            str(tmp_path / 'v.txt'), '--num_class', '1', '--data_format', 'video', '--split', 'train']


def _list(path):
    with open(path) as f:
        return [line.split() for line in f]


# ------------------------------------------------------------------------- 1. edit lists

@pytest.mark.parametrize('backend', available_video_backends())
def test_edit_list_frames_are_what_ffmpeg_decodes(clips, backend):
    path = clips['edit.mp4']
    probe = probe_video(path)
    assert probe.discarded > 5 and probe.header_frames == probe.packets + probe.discarded   # really an edit list
    reference = reference_frames(path)
    assert len(reference) == ffmpeg_count(path) == probe.packets
    with VideoFile(path, backend) as video:
        assert video.num_frames == len(reference)
        numbers = [3, 8, 13, 18, len(reference)]   # a 4-segment validation clip (20 frames) and the last
        frames = video.read(numbers)
    assert_pixels_match(frames, reference[[k - 1 for k in numbers]])


def test_unreliable_index_logged_once_per_file_as_information(clips, tmp_path, caplog):
    # An edit list is what every stream-copy cut has: one INFO line per file and process, no WARNING (issue 29).
    path = str(tmp_path / 'fresh.mp4')   # a path this process has not probed yet
    os.link(clips['edit.mp4'], path)
    with caplog.at_level(logging.INFO, logger='ops.video_io'):
        for _ in range(3):
            for backend in available_video_backends():
                VideoFile(path, backend).close()
    records = [r for r in caplog.records if 'fresh.mp4' in r.getMessage()]
    assert len(records) == 1 and 'hidden by the edit list' in records[0].getMessage()
    assert records[0].levelno == logging.INFO


def test_edit_list_extracted_frames_equal_video_frames(clips, tmp_path):
    videos = _video_dir(tmp_path, clips, 'edit.mp4')
    out = tmp_path / 'frames'
    proc = _run('extract_frames', '--video_dir', videos, '--out_dir', str(out), '--workers', '1')
    assert proc.returncode == 0, proc.stderr
    reference = reference_indices(clips['edit.mp4'])
    assert _list(out / 'frames_list.txt') == [['cls/edit', str(len(reference))]]
    jpegs = [load_image(str(out / 'cls' / 'edit' / f'img_{k:05d}.jpg')) for k in range(1, len(reference) + 1)]
    assert [grey_index(f) for f in jpegs] == reference
    with VideoFile(clips['edit.mp4'], 'decord') as video:
        decoded = video.read(range(1, len(reference) + 1))
    assert np.abs(np.stack(jpegs).astype(int) - decoded.astype(int))[:, 20:, 20:].max() <= 3


# ------------------------------------------------------------------------- 2. rotation

def _red_corner(frame):
    """Which corner holds the red marker: 'tl', 'tr', 'bl' or 'br'."""
    h, w = frame.shape[:2]
    corners = {'tl': frame[2, 2], 'tr': frame[2, w - 3], 'bl': frame[h - 3, 2], 'br': frame[h - 3, w - 3]}
    return max(corners, key=lambda c: int(corners[c][0]) - int(corners[c][1]))


def _ffmpeg_first_frame(path):
    """The first frame as the ffmpeg binary shows it (autorotate on): uint8 (H, W, 3); portrait for rot90."""
    raw = subprocess.run([FFMPEG, '-loglevel', 'error', '-i', path, '-frames:v', '1', '-f', 'rawvideo',
                          '-pix_fmt', 'rgb24', '-'], capture_output=True, check=True, timeout=60).stdout
    return np.frombuffer(raw, np.uint8).reshape(W, H, 3)


@pytest.mark.parametrize('backend', available_video_backends())
def test_rotation_applied_like_ffmpeg_by_both_backends(clips, backend):
    shown = _ffmpeg_first_frame(clips['rot90.mp4'])
    assert probe_video(clips['rot90.mp4']).rotation == 90
    with VideoFile(clips['rot90.mp4'], backend) as video:
        frame = video.read([1])[0]
    assert frame.shape == (W, H, 3) and _red_corner(frame) == _red_corner(shown) == 'bl'
    assert np.abs(frame.astype(int) - shown.astype(int)).max() <= 3
    with VideoFile(clips['rot90.mp4'], backend, autorotate=False) as video:
        raw = video.read([1])[0]
    assert raw.shape == (H, W, 3) and _red_corner(raw) == 'tl'


# Display matrices (16.16 fixed point, as MP4 stores them) of every rotation / flip, the ffmpeg option that
# writes each, and what ffmpeg's autorotate makes of it as (rotation ccw, then horizontal flip): by hand from
# fftools' filter choice (theta = clockwise angle; 90: transpose=cclock_flip if m[3] > 0 else clock; 180:
# hflip if m[0] < 0, vflip if m[4] < 0; 270: transpose=clock_flip if m[3] < 0 else cclock; 0: vflip if m[4]
# < 0). transpose = rot 270 + flip, anti-transpose (clock_flip) = rot 90 + flip, vflip = rot 180 + flip.
ONE = 65536
ORIENTATIONS = [
    (['-display_rotation', '90'], [0, -ONE, 0, ONE, 0], (90, False)),
    (['-display_rotation', '180'], [-ONE, 0, 0, 0, -ONE], (180, False)),
    (['-display_rotation', '270'], [0, ONE, 0, -ONE, 0], (270, False)),
    (['-display_hflip'], [-ONE, 0, 0, 0, ONE], (0, True)),
    (['-display_vflip'], [ONE, 0, 0, 0, -ONE], (180, True)),
    (['-display_rotation', '90', '-display_hflip'], [0, -ONE, 0, -ONE, 0], (90, True)),
    (['-display_rotation', '90', '-display_vflip'], [0, ONE, 0, ONE, 0], (270, True)),
    ([], [ONE, 0, 0, 0, ONE], (0, False)),
]
ORIENTATION_IDS = ['rot90', 'rot180', 'rot270', 'hflip', 'vflip', 'rot90_hflip', 'rot90_vflip', 'none']


@pytest.mark.parametrize('flags,matrix,expected', ORIENTATIONS, ids=ORIENTATION_IDS)
def test_display_orientation_of_every_matrix_by_hand(flags, matrix, expected):
    assert display_orientation(matrix + [0, 0, 1 << 30]) == expected
    assert display_orientation(None) == (0, False)


@pytest.mark.parametrize('flags,matrix,expected', ORIENTATIONS[:-1], ids=ORIENTATION_IDS[:-1])
def test_flips_and_rotations_read_as_ffmpeg_shows_them(clips, tmp_path, flags, matrix, expected):
    # Before: a mirrored matrix was read as its rotation angle alone (hflip as 180 degrees, vflip as none).
    path = str(tmp_path / 'oriented.mp4')
    _ffmpeg(*flags, '-i', clips['src.mp4'], '-frames:v', '3', '-c', 'copy', path)
    probe = probe_video(path)
    assert (probe.rotation, probe.mirror) == expected
    raw = subprocess.run([FFMPEG, '-loglevel', 'error', '-i', path, '-frames:v', '1', '-f', 'rawvideo',
                          '-pix_fmt', 'rgb24', '-'], capture_output=True, check=True, timeout=60).stdout
    shape = (W, H, 3) if expected[0] in (90, 270) else (H, W, 3)
    shown = np.frombuffer(raw, np.uint8).reshape(shape)
    frames = {'iter_video_frames': next(iter_video_frames(path))}
    for backend in available_video_backends():
        with VideoFile(path, backend) as video:
            frames[backend] = video.read([1])[0]
    for name, frame in frames.items():
        assert frame.shape == shape and _red_corner(frame) == _red_corner(shown), name
        assert np.abs(frame.astype(int) - shown.astype(int)).max() <= 3, name


@pytest.mark.parametrize('autorotate,size', [(True, (W, H)), (False, (H, W))])
def test_rotation_policy_in_the_dataset(clips, tmp_path, autorotate, size):
    from ops.dataset import VideoDataSet
    from ops.readers import ReaderConfig
    from ops.sampling import SamplingConfig
    videos = _video_dir(tmp_path, clips, 'rot90.mp4')
    (tmp_path / 'v.txt').write_text('cls/rot90.mp4 0\n')
    dataset = VideoDataSet(videos, str(tmp_path / 'v.txt'), sampling=SamplingConfig(2, 'val'),
                           reading=ReaderConfig(data_format='video', autorotate=autorotate))
    clip, _, _ = dataset[0]   # no transform: (T*C, H, W) floats
    assert tuple(clip.shape) == (6,) + size


def test_rotation_policy_in_extract_frames_flow_and_check_data(clips, tmp_path):
    videos = _video_dir(tmp_path, clips, 'rot90.mp4')
    for flag, shape in (([], (W, H)), (['--no_autorotate'], (H, W))):
        out = tmp_path / ('raw' if flag else 'shown')
        assert extract_frames.main(['--video_dir', videos, '--out_dir', str(out), '--workers', '1', *flag]) == 0
        assert load_image(str(out / 'cls' / 'rot90' / 'img_00001.jpg')).shape == shape + (3,)
        flow_out = tmp_path / ('flow_raw' if flag else 'flow_shown')
        assert extract_flow.main(['--video_dir', videos, '--out_dir', str(flow_out), '--algorithm', 'farneback',
                                  '--workers', '1', *flag]) == 0
        assert load_image(str(flow_out / 'cls' / 'rot90' / 'flow_x_00001.jpg'), 'L').shape == shape
    args = _check_args(tmp_path, videos, 'cls/rot90.mp4')
    assert check_data.main(args) == 0
    assert check_data.main(args + ['--no_autorotate', '--video_backend', 'pyav']) == 0


def test_rotation_policy_in_pack_hdf5(clips, tmp_path):
    from ops.hdf5_store import HDF5FrameStore
    videos = _video_dir(tmp_path, clips, 'rot90.mp4')
    for flag, shape, corner in (([], (W, H), 'bl'), (['--no_autorotate'], (H, W), 'tl')):
        out = str(tmp_path / f'rot{len(flag)}.h5')
        assert pack_hdf5.main(['--source', 'video', '--root', videos, '--output', out, *flag]) == 0
        store = HDF5FrameStore(out)
        frame = store.read_rgb('cls/rot90', [1])[0]
        store.close()
        assert frame.shape == shape + (3,) and _red_corner(frame) == corner


# ------------------------------------------------------------------------- 3. AVI header counts

@pytest.mark.parametrize('backend', available_video_backends())
def test_avi_header_count_is_not_trusted(clips, backend):
    path = clips['gap.avi']
    probe = probe_video(path)
    reference = reference_frames(path)
    assert probe.header_frames > len(reference) == ffmpeg_count(path)   # the header promises more
    with VideoFile(path, backend) as video:
        assert video.num_frames == len(reference)
        last_two = video.read([len(reference) - 1, len(reference)])
    assert_pixels_match(last_two, reference[-2:])
    assert grey_index(last_two[0]) != grey_index(last_two[1])   # no repeated last frame


def _tools(tmp_path, videos, name, *extra):
    """Run extract_frames and extract_flow (farneback) in-process on a video folder; -> ({tool: exit status},
    frames folder, flow folder)."""
    frames, flow = tmp_path / f'frames{name}', tmp_path / f'flow{name}'
    status = {'frames': extract_frames.main(['--video_dir', videos, '--out_dir', str(frames), '--workers', '1',
                                             *extra]),
              'flow': extract_flow.main(['--video_dir', videos, '--out_dir', str(flow), '--workers', '1',
                                         '--algorithm', 'farneback', *extra])}
    return status, frames, flow


def test_avi_header_overcount_is_not_truncation_in_any_tool(clips, tmp_path, capsys):
    # Issue 29: the header says 51, the file holds 50 packets, ffmpeg decodes 50; and gap.avi, whose header
    # also counts the empty chunks of its variable-rate gaps (60 for 40 packets). Neither is truncated.
    for name, frames in (('over.avi', 50), ('gap.avi', 40)):
        probe = probe_video(clips[name])
        assert probe.header_frames > probe.packets == frames == ffmpeg_count(clips[name]) == len(reference_frames(
            clips[name]))
        assert not probe.truncated and truncation(probe) is None and truncation(probe, frames) is None
    assert probe_video(clips['over.avi']).header_frames == 51
    videos = _video_dir(tmp_path, clips, 'over.avi', 'gap.avi')
    status, frames, flow = _tools(tmp_path, videos, '')
    err = capsys.readouterr().err
    assert status == {'frames': 0, 'flow': 0} and 'WARNING' not in err and 'FAILED' not in err, err
    assert _list(frames / 'frames_list.txt') == [['cls/gap', '40'], ['cls/over', '50']]
    assert _list(flow / 'flow_list.txt') == [['cls/gap', '39'], ['cls/over', '49']]
    args = _check_args(tmp_path, videos, 'cls/over.avi', 'cls/gap.avi')
    for extra in ([], ['--sample_frames']):
        assert check_data.main(args + extra) == 0, capsys.readouterr().out
    assert pack_hdf5.main(['--source', 'video', '--root', videos, '--output', str(tmp_path / 'v.h5')]) == 0


def test_truncated_avi_fails_in_every_tool_unless_allow_partial(clips, tmp_path, capsys):
    # The same AVI cut mid-file: its header still says 51, the demuxer's last packet is cut short.
    path = clips['trunc.avi']
    probe = probe_video(path)
    assert probe.truncated and 'truncated' in truncation(probe) and probe.packets < 50
    for backend in available_video_backends():
        with pytest.raises(FrameReadError, match=r'trunc\.avi is truncated'):
            VideoFile(path, backend)
    videos = _video_dir(tmp_path, clips, 'trunc.avi')
    status, frames, flow = _tools(tmp_path, videos, '')
    err = capsys.readouterr().err
    assert status == {'frames': 1, 'flow': 1}
    assert len(re.findall(r'FAILED .*trunc\.avi: truncated: .*\(--allow_partial keeps the decoded frames\)', err)) == 2
    assert _list(frames / 'frames_list.txt') == [] and not (frames / 'cls' / 'trunc').exists()
    status, frames, flow = _tools(tmp_path, videos, '_partial', '--allow_partial')
    err = capsys.readouterr().err
    assert status == {'frames': 0, 'flow': 0}
    assert len(re.findall(rf'WARNING .*trunc\.avi: kept the {probe.packets} frames decoded: truncated', err)) == 2
    assert _list(frames / 'frames_list.txt') == [['cls/trunc', str(probe.packets)]]
    assert _list(flow / 'flow_list.txt') == [['cls/trunc', str(probe.packets - 1)]]
    args = _check_args(tmp_path, videos, 'cls/trunc.avi')
    for extra in ([], ['--sample_frames']):
        assert check_data.main(args + extra) == 1
        assert re.search(r'undecodable_video: .*trunc\.avi is truncated', capsys.readouterr().out)
    assert pack_hdf5.main(['--source', 'video', '--root', videos, '--output', str(tmp_path / 't.h5')]) == 1


def test_avi_cut_at_a_chunk_boundary_is_truncated(clips, tmp_path):
    # No packet is cut short there: the RIFF size the header declares says the file is incomplete.
    with av.open(clips['over.avi']) as container:
        cut = container.streams.video[0].index_entries[30].pos
    path = str(tmp_path / 'cut.avi')
    with open(path, 'wb') as f:
        f.write(open(clips['over.avi'], 'rb').read()[:cut])
    probe = probe_video(path)
    assert probe.packets == 30 and probe.truncated
    unfinished = bytearray(open(clips['over.avi'], 'rb').read()[:cut])
    unfinished[4:8] = bytes(4)   # a writer that never finished the file: RIFF size 0, nothing announced
    with open(path, 'wb') as f:
        f.write(unfinished)
    assert not probe_video(path).truncated


# ------------------------------------------------------------------------- 4. truncated downloads

def test_truncated_file_fails_everywhere(clips, tmp_path, capsys):
    videos = _video_dir(tmp_path, clips, 'trunc.mp4', 'src.mp4')
    for backend in available_video_backends():
        with pytest.raises(FrameReadError, match='trunc.mp4'):
            VideoFile(clips['trunc.mp4'], backend)
    out = tmp_path / 'frames'
    assert extract_frames.main(['--video_dir', videos, '--out_dir', str(out), '--workers', '1']) == 1
    assert re.search(r'FAILED .*trunc\.mp4: .*failed after \d+ frames', capsys.readouterr().err)
    assert _list(out / 'frames_list.txt') == [['cls/src', '60']] and not (out / 'cls' / 'trunc').exists()
    assert extract_frames.main(['--video_dir', videos, '--out_dir', str(out), '--workers', '1',
                                '--allow_partial']) == 0
    assert 'trunc.mp4: kept the' in capsys.readouterr().err
    assert check_data.main(_check_args(tmp_path, videos, 'cls/trunc.mp4')) == 1
    assert 'undecodable_video' in capsys.readouterr().out


# ------------------------------------------------------------------------- VFR and 50 fps

@pytest.mark.parametrize('name', ['vfr.mp4', 'f50.mp4'])
@pytest.mark.parametrize('backend', available_video_backends())
def test_vfr_and_50fps_frames_are_decoded_frames(clips, name, backend):
    reference = reference_frames(clips[name])
    assert len(reference) == ffmpeg_count(clips[name])
    with VideoFile(clips[name], backend) as video:
        assert video.num_frames == len(reference)
        numbers = [1, 7, 19, 23, len(reference)]
        assert_pixels_match(video.read(numbers), reference[[k - 1 for k in numbers]])


def test_fps_option_resamples_like_ffmpeg(clips, tmp_path):
    videos = _video_dir(tmp_path, clips, 'vfr.mp4', 'f50.mp4')
    out = tmp_path / 'frames'
    assert extract_frames.main(['--video_dir', videos, '--out_dir', str(out), '--workers', '1', '--fps', '10']) == 0
    expected = {f'cls/{n[:-4]}': ffmpeg_count(clips[n], '-vf', 'fps=10') for n in ('vfr.mp4', 'f50.mp4')}
    assert {vid: int(n) for vid, n in _list(out / 'frames_list.txt')} == expected
    assert json.load(open(out / 'cls' / 'vfr' / '.done'))['fps'] == 10


# ------------------------------------------------------------------------- 5. same stem, 7. spaces

def test_same_stem_two_extensions_refused_before_any_work(clips, tmp_path, capsys):
    videos = _video_dir(tmp_path, clips, 'src.mp4', 'gap.avi', rename={'gap.avi': 'src.avi'})
    out = tmp_path / 'frames'
    with pytest.raises(SystemExit) as exc:
        extract_frames.main(['--video_dir', videos, '--out_dir', str(out), '--workers', '2'])
    assert exc.value.code == 2
    assert re.search(r'src\.avi and .*src\.mp4 would both be written to', capsys.readouterr().err)
    assert not out.exists()


def test_names_with_whitespace_refused_up_front(clips, tmp_path, capsys):
    videos = _video_dir(tmp_path, clips, 'src.mp4', 'vfr.mp4', rename={'vfr.mp4': 'two words.mp4'})
    for script in (extract_frames, extract_flow):
        out = tmp_path / script.__name__
        with pytest.raises(SystemExit) as exc:
            script.main(['--video_dir', videos, '--out_dir', str(out), '--workers', '1'])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and 'two words.mp4' in err and 'whitespace' in err
        assert not (out / 'cls').exists()


# ------------------------------------------------------------------------- 6. resume with changed settings

@pytest.mark.slow
def test_rerun_with_other_settings_refuses_unless_overwrite(clips, tmp_path):
    videos = _video_dir(tmp_path, clips, 'vfr.mp4')
    out, flow = tmp_path / 'frames', tmp_path / 'flow'
    base = ['--video_dir', videos, '--out_dir', str(out), '--workers', '1']
    assert _run('extract_frames', *base, '--short_side', '32').returncode == 0
    proc = _run('extract_frames', *base, '--short_side', '24')
    assert proc.returncode == 2 and 'made with --short_side 32, this run asks for 24' in proc.stderr
    assert load_image(str(out / 'cls' / 'vfr' / 'img_00001.jpg')).shape[0] == 32   # untouched
    assert _run('extract_frames', *base, '--short_side', '24', '--overwrite').returncode == 0
    assert load_image(str(out / 'cls' / 'vfr' / 'img_00001.jpg')).shape[0] == 24

    fbase = ['--frames_root', str(out), '--out_dir', str(flow), '--workers', '1']
    assert _run('extract_flow', *fbase, '--algorithm', 'farneback').returncode == 0
    proc = _run('extract_flow', *fbase, '--algorithm', 'dis')
    assert proc.returncode == 2 and 'made with --algorithm farneback, this run asks for dis' in proc.stderr
    assert json.load(open(flow / 'extraction.json'))['algorithm'] == 'farneback'
    proc = _run('extract_flow', *fbase, '--algorithm', 'farneback', '--bound', '10')
    assert proc.returncode == 2 and '--bound' in proc.stderr
    assert _run('extract_flow', *fbase, '--algorithm', 'dis', '--overwrite').returncode == 0
    assert json.load(open(flow / 'cls' / 'vfr' / '.flow_done'))['algorithm'] == 'dis'
    assert json.load(open(flow / 'extraction.json'))['algorithm'] == 'dis'


# ------------------------------------------------------------------------- 8. DIS, 9. frames_root layout

def test_dis_flow_from_resized_videos(clips, tmp_path):
    videos = _video_dir(tmp_path, clips, 'vfr.mp4', 'edit.mp4', 'f50.mp4')
    out = tmp_path / 'flow'
    assert extract_flow.main(['--video_dir', videos, '--out_dir', str(out), '--algorithm', 'dis',
                              '--short_side', '30', '--workers', '1']) == 0
    n = {name: ffmpeg_count(clips[name + '.mp4']) for name in ('vfr', 'edit', 'f50')}
    assert sorted(_list(out / 'flow_list.txt')) == sorted([f'cls/{k}', str(v - 1)] for k, v in n.items())
    assert load_image(str(out / 'cls' / 'vfr' / 'flow_y_00001.jpg'), 'L').shape == (30, 40)


def test_readme_flow_command_on_extract_frames_layout(clips, tmp_path):
    videos = _video_dir(tmp_path, clips, 'src.mp4', 'vfr.mp4')
    frames = tmp_path / 'frames'
    assert extract_frames.main(['--video_dir', videos, '--out_dir', str(frames), '--workers', '1']) == 0
    # the README command, literally: flow next to the frames of the <class>/<video> folders
    assert extract_flow.main(['--frames_root', str(frames), '--out_dir', str(frames), '--algorithm', 'farneback',
                              '--workers', '1']) == 0
    assert _list(frames / 'flow_list.txt') == [['cls/src', '59'], ['cls/vfr', '39']]


# ------------------------------------------------------------------------- Ctrl-C

def test_ctrl_c_exits_cleanly_with_a_summary(clips, tmp_path):
    folder = tmp_path / 'videos' / 'cls'
    folder.mkdir(parents=True)
    for k in range(40):
        os.link(clips['f50.mp4'], folder / f'v{k:02d}.mp4')
    out = tmp_path / 'frames'
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, 'scripts', 'extract_frames.py'), '--video_dir',
                             str(tmp_path / 'videos'), '--out_dir', str(out), '--workers', '2'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS='1'),
                            # as from a terminal: an xdist worker runs with SIGINT ignored, and an ignored
                            # signal stays ignored in its children (the tool then rightly runs to the end)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while not list(out.glob('cls/*/.done')) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert 'Traceback' not in err
    done = len(list(out.glob('cls/*/.done')))
    assert re.search(r'interrupted: \d+ of 40 videos finished and kept; rerun the same command to resume', err)
    assert 1 <= done < 40
    assert not (out / 'frames_list.txt').exists()


# ------------------------------------------------------------------------- 10. dense window

def test_check_data_counts_videos_shorter_than_the_dense_window(clips, tmp_path, capsys):
    videos = _video_dir(tmp_path, clips, 'src.mp4', 'edit.mp4', 'f50.mp4')
    args = _check_args(tmp_path, videos, 'cls/src.mp4', 'cls/edit.mp4', 'cls/f50.mp4') + ['--sample_frames',
                                                                                         '--dense_sample']
    assert check_data.main(args) == 0   # src 60, edit 20, f50 120 frames
    assert 'train: 2 of 3 videos shorter than the 64-frame dense window' in capsys.readouterr().out
    assert check_data.main(args + ['--dense_length', '16']) == 0
    assert 'train: 0 of 3 videos shorter than the 16-frame dense window' in capsys.readouterr().out
    for bad in ('0', '-4'):
        with pytest.raises(SystemExit):
            check_data.main(args + ['--dense_length', bad])
        assert '--dense_length must be at least 1 frame' in capsys.readouterr().err


def test_check_data_dense_count_of_a_list_with_duplicates(clips, tmp_path, capsys):
    videos = _video_dir(tmp_path, clips, 'src.mp4', 'edit.mp4')
    args = _check_args(tmp_path, videos, 'cls/src.mp4', 'cls/edit.mp4', 'cls/src.mp4') + [
        '--sample_frames', '--dense_sample', '--dense_length', '30']
    assert check_data.main(args) == 1   # the duplicate is a problem, the dense count still covers the list
    out = capsys.readouterr().out
    assert 'train: 1 of 3 videos shorter than the 30-frame dense window' in out
    assert re.search(r'duplicate_video: .*cls/src\.mp4 listed 2 times', out)


# Expected full-check result of every clip: (problem kinds, frame count); gap.avi's header says 60 for its 40
# packets, over.avi's 51 for 50: not truncation.
FULL_CHECK = {'src.mp4': ([], 60), 'edit.mp4': ([], 20), 'rot90.mp4': ([], 20), 'vfr.mp4': ([], 40),
              'f50.mp4': ([], 120), 'gap.avi': ([], 40), 'over.avi': ([], 50),
              'trunc.mp4': (['undecodable_video'], None), 'trunc.avi': (['undecodable_video'], None)}


@pytest.mark.parametrize('backend', available_video_backends())
def test_check_data_full_video_check_per_backend(clips, tmp_path, backend):
    """PyAV-read videos are checked in one forward pass, indexed ones by chunked reads: same problems."""
    videos = _video_dir(tmp_path, clips, *FULL_CHECK)
    for name, (kinds, frames) in FULL_CHECK.items():
        for autorotate in (True, False):
            cfg = {'root': videos, 'video_backend': backend, 'sample_frames': False, 'autorotate': autorotate}
            problems, n = check_data._check_video(cfg, f'cls/{name}')
            assert ([k for k, _ in problems], n) == (kinds, frames), (name, problems)


def test_test_models_protocol_line_counts_short_videos(tiny_toy, tiny_checkpoint, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location('eval_entry_point_dense', os.path.join(REPO, 'test_models.py'))
    test_models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(test_models)
    from opts import parse_test_args
    weights = tiny_checkpoint(tmp_path / 'rgb.pth.tar', 'RGB', 0)
    for length, short in (('64', 3), ('8', 0)):   # the toy clips have 10 frames
        test_models.main(parse_test_args(['toy', '--weights', weights, '--data_root', tiny_toy, '--device', 'cpu',
                                          '-j', '0', '--no_progress', '--max_num', '3', '--dense_sample',
                                          '--dense_number', '2', '--dense_length', length]))
        assert f'{short} of 3 videos shorter than the {length}-frame dense window' in capsys.readouterr().out
