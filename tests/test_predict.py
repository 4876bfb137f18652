"""predict.py and --save_features on real mp4s and frame folders written here, with tiny checkpoints.

Runs call the entry points' main() in-process (their own code path, minus the interpreter start).
"""
import csv
import json
import os
import sys

import numpy as np
import torch
import pytest
from PIL import Image

from ops import features as feature_io
from ops.scores import load_scores
from opts import parse_test_args
from conftest import REPO

NUM_CLASS = 8


def _import_predict():
    # predict.py imports the entry point test_models.py; under pytest that name may already be
    # tests/test_models.py. Import with the repository first, then give pytest its module back.
    saved = sys.modules.pop('test_models', None)
    sys.path.insert(0, REPO)
    try:
        import predict as module
        return module, sys.modules['test_models']
    finally:
        sys.path.remove(REPO)
        del sys.modules['test_models']
        if saved is not None:
            sys.modules['test_models'] = saved


predict, test_models = _import_predict()


@pytest.fixture(scope='module')
def ckpts(tmp_path_factory, tiny_checkpoint):
    d = tmp_path_factory.mktemp('predict_ckpts')
    return {'tsm': tiny_checkpoint(d / 'tsm.pth.tar', 'RGB', 0, random_bn_stats=True),
            'tsn': tiny_checkpoint(d / 'tsn.pth.tar', 'RGB', 2, shift=False, random_bn_stats=True),
            'flow': tiny_checkpoint(d / 'flow.pth.tar', 'Flow', 1)}


def noise_mp4(path, num_frames, seed, size=(64, 48), fps=10):
    """An mp4 of random frames (so that classes differ between videos and windows)."""
    import av
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(path, 'w') as container:
        stream = container.add_stream('libx264', rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], 'yuv420p'
        for _ in range(num_frames):
            img = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format='rgb24')):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def noise_frames(folder, num_frames, seed):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for k in range(1, num_frames + 1):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(
            os.path.join(folder, f'img_{k:05d}.jpg'), quality=95)
    return folder


def run_predict(*argv):
    return predict.main(predict.parse_args(['--device', 'cpu', '-j', '0', '--no_progress', *argv]))


def run_test_models(*argv):
    return test_models.main(parse_test_args(['toy', '--device', 'cpu', '-j', '0', '--no_progress', *argv]))


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_one_mp4_without_a_list_matches_test_models(tmp_path, ckpts, capsys):
    video = noise_mp4(str(tmp_path / 'v' / 'clip.mp4'), 24, 0)
    protocol = ['--test_crops', '3', '--twice_sample']
    assert run_predict('--weights', ckpts['tsm'], video, '--output', str(tmp_path / 'p.json'),
                       '--top_k', str(NUM_CLASS), *protocol) == 0
    out = capsys.readouterr()
    assert 'no class names' in out.err and 'class indices' in out.err
    assert out.out.startswith(f'{video}: ')
    report = json.load(open(tmp_path / 'p.json'))
    (entry,) = report['videos']
    assert report['protocol'] == ['tsm.pth.tar [RGB]: 4 frames x 3 crops x 2 clips (twice), 32 px, 1 videos']
    # test_models.py on the same video through a labelled list, same protocol
    (tmp_path / 'list.txt').write_text('clip.mp4 3\n')
    run_test_models('--weights', ckpts['tsm'], '--root_path', str(tmp_path / 'v'), '--test_list',
                    str(tmp_path / 'list.txt'), '--data_format', 'video', '--num_class', str(NUM_CLASS),
                    '--save_scores', str(tmp_path / 's.npz'), *protocol)
    expected = softmax(load_scores(str(tmp_path / 's.npz'))['scores'][0].mean(0).astype(np.float64))
    assert entry['top'][0]['class'] == int(expected.argmax())
    got = np.zeros(NUM_CLASS)
    for t in entry['top']:
        got[t['class']] = t['prob']
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_folder_list_frames_and_unreadable_inputs(tmp_path, ckpts, capsys):
    folder = tmp_path / 'mixed'
    noise_mp4(str(folder / 'a.mp4'), 12, 1)
    noise_mp4(str(folder / 'b.mp4'), 15, 2)
    (folder / 'broken.mp4').write_bytes(b'this is not a video')
    noise_frames(str(folder / 'frames_c'), 9, 3)
    lst = tmp_path / 'unlabelled.txt'
    lst.write_text('# no labels\na.mp4\nframes_c\n')
    categories = tmp_path / 'classes.txt'
    categories.write_text(''.join(f'class {i}\n' for i in range(NUM_CLASS)))
    (tmp_path / 'clip.ts').write_bytes(bytes(range(256)))      # unknown extension, binary: not a list
    rc = run_predict('--weights', ckpts['tsm'], str(folder), str(lst), '--root_path', str(folder),
                     str(tmp_path / 'missing.mp4'), str(tmp_path / 'clip.ts'), '--category_file', str(categories),
                     '--output', str(tmp_path / 'p.csv'), '--top_k', '2')
    assert rc == 1                           # some inputs failed, the others were predicted
    out = capsys.readouterr()
    assert f"cannot read {folder / 'broken.mp4'}" in out.err and 'missing.mp4: input: no such file' in out.err
    assert 'clip.ts: not a list file (binary)' in out.err
    rows = list(csv.DictReader(open(tmp_path / 'p.csv')))
    videos = [r['video'] for r in rows if r['rank'] == '1']     # input order, each input once
    assert videos == [str(folder / 'a.mp4'), str(folder / 'b.mp4'), str(folder / 'frames_c')]
    assert all(r['name'] == f"class {r['class']}" for r in rows)
    assert {r['end_frame'] for r in rows if r['video'].endswith('frames_c')} == {'9'}


def test_class_names_from_the_checkpoint(tmp_path, ckpts, capsys):
    from ops.checkpoint import load_checkpoint, save_checkpoint
    named = dict(load_checkpoint(ckpts['tsm']), class_names=[f'action_{i}' for i in range(NUM_CLASS)])
    path = save_checkpoint(named, str(tmp_path / 'named.pth.tar'))
    video = noise_mp4(str(tmp_path / 'n.mp4'), 10, 7)
    assert run_predict('--weights', path, video, '--top_k', '3', '--output', str(tmp_path / 'n.json')) == 0
    out = capsys.readouterr()
    assert 'no class names' not in out.err and out.out.count('action_') == 3
    report = json.load(open(tmp_path / 'n.json'))
    assert report['class_names_from'] == path
    assert all(t['name'] == f"action_{t['class']}" for t in report['videos'][0]['top'])
    # a checkpoint main.py wrote: the class names of its training set, recorded under `data`
    trained = dict(load_checkpoint(ckpts['tsm']), data={'dataset': 'mine', 'categories': [f'c{i}' for i in
                                                                                         range(NUM_CLASS)]})
    path = save_checkpoint(trained, str(tmp_path / 'trained.pth.tar'))
    assert run_predict('--weights', path, video, '--top_k', '2') == 0
    out = capsys.readouterr()
    assert 'no class names' not in out.err and out.out.count(' c') >= 2


def test_flow_checkpoint_on_a_video_is_reported(tmp_path, ckpts, capsys):
    video = noise_mp4(str(tmp_path / 'x.mp4'), 10, 4)
    assert run_predict('--weights', ckpts['flow'], video) == 2
    assert 'a Flow checkpoint needs frame folders of flow images' in capsys.readouterr().err


def test_long_video_windows_in_seconds_and_frames(tmp_path, ckpts, capsys):
    video = noise_mp4(str(tmp_path / 'long.mp4'), 50, 5, fps=10)
    assert run_predict('--weights', ckpts['tsm'], video, '--window', '2s', '--stride', '1s', '--top_k', '1',
                       '--output', str(tmp_path / 't.json'), '--plot', str(tmp_path / 't.png')) == 0
    (entry,) = json.load(open(tmp_path / 't.json'))['videos']
    spans = [(w['start_frame'], w['end_frame'], w['start_s'], w['end_s']) for w in entry['windows']]
    assert spans == [(1, 20, 0.0, 2.0), (11, 30, 1.0, 3.0), (21, 40, 2.0, 4.0), (31, 50, 3.0, 5.0)]
    assert Image.open(tmp_path / 't.png').size == (800, 300)      # one panel (ops.scores.timeline_figure)
    assert '1.00-3.00 s:' in capsys.readouterr().out
    # frames: windows of 16 every 16 frames, the last one ending at frame 50
    assert run_predict('--weights', ckpts['tsm'], video, '--window', '16', '--output', str(tmp_path / 'f.json')) == 0
    (entry,) = json.load(open(tmp_path / 'f.json'))['videos']
    assert [(w['start_frame'], w['end_frame']) for w in entry['windows']] == [(1, 16), (17, 32), (33, 48), (35, 50)]


def test_a_window_reads_the_frames_of_its_span():
    assert predict.window_starts(50, 20, 10) == [0, 10, 20, 30]
    assert predict.window_starts(12, 20, 10) == [0]
    assert predict.window_starts(45, 20, 20) == [0, 20, 25]
    record = predict.WindowRecord('v.mp4', 100, 0, 40, 20)
    from ops.readers import ReaderConfig
    from ops.sampling import SamplingConfig, sample_indices
    ds = predict.WindowDataSet('', None, sampling=SamplingConfig(4, 'test', twice=True), records=[record],
                               reading=ReaderConfig('video'))
    # the sampler sees a 20-frame video; its 1-based starts are moved by the window's offset
    expected = sample_indices(20, 4, 1, 'test', rng=None, twice=True)
    assert ds.sample(100, 0, None) == [[s + 40 for s in clip] for clip in expected]
    assert record.video_id == 'v.mp4@40'


def test_ensemble_probabilities_and_features_are_the_fused_logits(tmp_path, ckpts):
    video = noise_mp4(str(tmp_path / 'e.mp4'), 16, 6)
    feats = str(tmp_path / 'f.npz')
    assert run_predict('--weights', f"{ckpts['tsm']},{ckpts['tsn']}", '--coeff', '1,1.5', video,
                       '--top_k', str(NUM_CLASS), '--output', str(tmp_path / 'e.json'),
                       '--save_features', feats) == 0
    (entry,) = json.load(open(tmp_path / 'e.json'))['videos']
    logits = []
    for i in (0, 1):
        f = feature_io.load(str(tmp_path / f'f.{i}.npz'))
        assert f['features'].shape == (1, 512) and list(f['labels']) == [-1] and f['video_ids'] == [video]
        logits.append(f['features'] @ f['fc_weight'].T + f['fc_bias'])
    expected = softmax((1.0 * logits[0] + 1.5 * logits[1])[0].astype(np.float64))
    got = np.zeros(NUM_CLASS)
    for t in entry['top']:
        got[t['class']] = t['prob']
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('suffix', ['.h5', '.npz'])
def test_test_models_features_per_view_and_segment(tmp_path, ckpts, suffix):
    root = tmp_path / 'v'
    for i in range(3):
        noise_mp4(str(root / f'{i}.mp4'), 10 + i, 10 + i)
    (tmp_path / 'list.txt').write_text(''.join(f'{i}.mp4 {i}\n' for i in range(3)))
    out = str(tmp_path / f'feat{suffix}')
    lst = str(tmp_path / 'list.txt')
    run_test_models('--weights', f"{ckpts['tsn']},{ckpts['tsm']}", '--root_path', str(root), '--test_list',
                    f'{lst},{lst}', '--data_format', 'video', '--num_class', str(NUM_CLASS),
                    '--test_crops', '3', '--twice_sample', '--save_scores', str(tmp_path / 's.npz'),
                    '--save_features', out, '--per_view', '--per_segment')
    for i in (0, 1):       # 0: per-frame TSN (built for whole clips with --per_segment), 1: TSM
        f = feature_io.load(str(tmp_path / f'feat.{i}{suffix}'))
        s = load_scores(str(tmp_path / f's.{i}.npz'))
        assert f['video_ids'] == s['video_ids'] and list(f['labels']) == [0, 1, 2]
        assert f['features'].shape == (3, 512) and f['view_features'].shape == (3, 6, 512)
        assert f['segment_features'].shape == (3, 6, 4, 512)
        w, b = f['fc_weight'], f['fc_bias']
        np.testing.assert_allclose(f['view_features'] @ w.T + b, s['scores'], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(f['features'] @ w.T + b, s['scores'].mean(1), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(f['segment_features'].mean(2), f['view_features'], rtol=1e-5, atol=1e-6)
        assert '3 crops x 2 clips' in f['protocol'] and f['checkpoint'].endswith(('tsn.pth.tar', 'tsm.pth.tar'))


def test_bad_options_are_refused(tmp_path, ckpts, capsys):
    for argv, message in [(['--output', 'p.txt'], '.json or .csv'), (['--plot', 'p.png'], 'give --window'),
                          (['--window', 'abc'], "--window 'abc'"), (['--stride', '4'], '--stride needs --window'),
                          (['--per_view'], 'need --save_features'), (['--save_features', 'f.csv'], '.npz or .h5'),
                          (['--save_scores', 's.npz'], '--save_scores is a test_models.py option')]:
        with pytest.raises(SystemExit):
            predict.parse_args(['--weights', ckpts['tsm'], 'x.mp4', *argv])
        assert message in capsys.readouterr().err


def test_help_lists_the_evaluation_protocol_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        predict.parse_args(['--help'])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ('INPUT', '--window', '--test_crops', '--twice_sample', '--softmax', '--save_features'):
        assert option in out


def test_h5_feature_sink_writes_rows_in_place_and_is_atomic(tmp_path):
    head = torch.nn.Linear(4, 3)
    rows = [2, 0, 1]            # dataset index -> row of the common video order
    path = str(tmp_path / 'f.h5')
    sink = feature_io.H5FeatureSink(path, rows, head, per_view=True, per_segment=True)
    # dataset indices 2 and 0 first (out of order), then 1; 2 views, 2 segments x 4 channels
    feats = {i: np.arange(16, dtype=np.float32).reshape(2, 8) + 100 * i for i in range(3)}
    sink.write(np.array([2, 0]), np.stack([feats[2], feats[0]]))
    assert not os.path.exists(path)                       # appears at finish() only
    with pytest.raises(RuntimeError, match='features of 2 videos written for 3'):
        sink.finish(video_ids=['a', 'b', 'c'], labels=[0, 1, 2], protocol='p', checkpoint='c')
    sink.write(np.array([1]), feats[1][None])
    sink.finish(video_ids=['a', 'b', 'c'], labels=[0, 1, 2], protocol='p', checkpoint='ckpt')
    f = feature_io.load(path)
    for i, row in enumerate(rows):
        seg = feats[i].reshape(2, 2, 4)
        np.testing.assert_array_equal(f['segment_features'][row], seg)
        np.testing.assert_array_equal(f['view_features'][row], seg.mean(1))
        np.testing.assert_allclose(f['features'][row], seg.mean(1).mean(0))
    assert f['video_ids'] == ['a', 'b', 'c'] and f['checkpoint'] == 'ckpt'
    aborted = feature_io.H5FeatureSink(str(tmp_path / 'g.h5'), rows, head)
    aborted.abort()
    assert os.listdir(tmp_path) == ['f.h5']


def test_folder_without_inputs_is_named_once_with_what_to_pass(tmp_path, ckpts, capsys):
    # Before: "folder holds no videos, frame folders or frames", printed twice (when found and in the summary).
    (tmp_path / 'tree' / 'cls').mkdir(parents=True)
    (tmp_path / 'tree' / 'cls' / 'notes.txt').write_text('not a video\n')
    assert run_predict('--weights', ckpts['tsm'], str(tmp_path / 'tree')) == 2
    err = capsys.readouterr().err
    assert err.count(str(tmp_path / 'tree')) == 1, err
    assert 'no videos (.mp4' in err and 'in it or its sub-folders; give video files, frame folders' in err
    assert 'nothing to predict: 1 input could not be read (named above)' in err
