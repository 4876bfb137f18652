"""Layout modality: Something-Else box files written here, their encoding, errors naming the file, frame and
field, the STLT model's shapes and masking, the toy box files, and the CLI end to end (slow)."""
import json
import os
import sys

import numpy as np
import pytest
import torch

from archs.stlt import STLT, causal_mask
from ops.checkpoint import save_checkpoint
from ops.dataset import check_list_counts
from ops.layout import BoxFile, fix_box
from ops.layout_dataset import LayoutDataSet
from ops.models import TSN
from ops.readers import ReaderConfig
from ops.sampling import SamplingConfig, sample_indices
from ops.toy import ensure_toy_layout, toy_boxes
from ops.video_io import FrameReadError
from conftest import REPO, launch_ranks, wait_ranks


def _label(x1, y1, x2, y2, category='a cup', **extra):
    return dict({'box2d': {'x1': x1, 'y1': y1, 'x2': x2, 'y2': y2}, 'category': category,
                 'standard_category': '0001', 'gt_annotation': 'object 0'}, **extra)


def _write(path, content):
    path.write_text(json.dumps(content))
    return str(path)


def _numbered_video(path, num_frames):
    """A box file whose frame k holds one box with x1 = k (pixels of a 1000-wide frame), to read back
    which frames a clip sampled."""
    frames = [{'name': f'vid/{k:04d}.jpg', 'labels': [_label(k, 0, k + 5, 10)]} for k in range(1, num_frames + 1)]
    return _write(path, {'width': 1000, 'height': 100, 'frames': frames})


def test_fix_box_by_hand():
    assert fix_box([10.7, 5.2, 30.9, 45.0], 100, 50) == [10, 5, 30, 45]     # int() truncates
    assert fix_box([30, 45, 10, 5], 100, 50) == [10, 5, 30, 45]             # swapped corners
    assert fix_box([-5, -3, 150, 80], 100, 50) == [0, 0, 99, 49]            # clamped into the frame
    assert fix_box([0, 0, 0, 0], 100, 50) == [0, 0, 1, 1]                   # empty at the origin
    assert fix_box([7, 9, 7, 9], 100, 50) == [6, 8, 7, 9]                   # empty elsewhere
    assert fix_box([120, 60, 130, 70], 100, 50) == [98, 48, 99, 49]         # outside: the last pixel


def test_box_file_encoding_by_hand(tmp_path):
    path = _write(tmp_path / 'v.json', {'width': 100, 'height': 50, 'frames': [
        {'name': 'v/0001.jpg', 'labels': [_label(10.7, 5, 30, 45, category='hand', standard_category='hand',
                                                 score=0.5), _label(0, 0, 50, 25)]},
        {'name': 'v/0003.jpg', 'labels': []}]})
    boxes = BoxFile(path)
    assert (boxes.width, boxes.height, boxes.num_frames) == (100, 50, 3)
    clip = boxes.encode([1, 2], max_boxes=3)                     # (frames, 6, boxes, 1)
    assert clip.shape == (2, 6, 3, 1)
    got = clip[..., 0].permute(0, 2, 1)                          # (frames, boxes, 6)
    pad = [0, 0, 0, 0, 1e-9, 1e-9]
    # hand (category 2) with its score; an object (1) with the default score 1; padding
    assert torch.allclose(got[0], torch.tensor([[2, 0.5, 0.1, 0.1, 0.3, 0.9], [1, 1, 0, 0, 0.5, 0.5], pad]))
    assert torch.allclose(got[1], torch.tensor([pad, pad, pad]))           # frame 2 is not in the file
    assert torch.allclose(boxes.encode([1], max_boxes=1)[0, :, 0, 0], got[0, 0])   # extra boxes dropped
    # Something-Else marks hands in standard_category; without it the category text decides
    hand = _label(1, 1, 5, 5, category='left hand')
    del hand['standard_category']
    path = _write(tmp_path / 'h.json', {'width': 10, 'height': 10, 'frames': [
        {'name': '0001.jpg', 'labels': [hand, _label(1, 1, 5, 5, category='hand', standard_category='0002')]}]})
    assert BoxFile(path).encode([1], 2)[0, 0, :, 0].tolist() == [2, 1]


@pytest.mark.parametrize('content, expected', [
    ('{"width": 10, "height": 10, "frames": [', 'not valid JSON'),
    ('[]', 'expected an object with "width", "height" and "frames"'),
    ('{"height": 10, "frames": []}', 'field "width"'),
    ('{"width": 10, "height": 10}', 'field "frames"'),
    ('{"width": 10, "height": 10, "frames": [{"labels": []}]}', 'frames[0]: field "name"'),
    ('{"width": 10, "height": 10, "frames": [{"name": "a/0001.jpg", "labels": []}, {"name": "a/0002.jpg", '
     '"labels": [{"box2d": {"x1": 1, "y1": 1, "x2": "9", "y2": 9}, "category": "cup"}]}]}',
     'frames[1] (a/0002.jpg): labels[0]: field "box2d.x2" must be a number, got "9"'),
    ('{"width": 10, "height": 10, "frames": [{"name": "a/0001.jpg", "labels": [{"box2d": {"x1": 1, "y1": 1, '
     '"x2": 2, "y2": 2}}]}]}', 'frames[0] (a/0001.jpg): labels[0]: field "category"'),
    ('{"width": 10, "height": 10, "frames": [{"name": "a/0001.jpg", "labels": [{"box2d": {"x1": 1, "y1": 1, '
     '"x2": 2, "y2": 2}, "category": "cup", "score": 3}]}]}', 'field "score" must be a number in [0, 1]'),
    ('{"width": 10, "height": 10, "frames": [{"name": "a/0001.jpg", "labels": []}, '
     '{"name": "b/0001.jpg", "labels": []}]}', 'frames[1]: frame 1 ("name") appears twice'),
])
def test_malformed_box_file_names_file_and_field(tmp_path, content, expected):
    path = tmp_path / 'bad.json'
    path.write_text(content)
    with pytest.raises(ValueError) as err:
        BoxFile(str(path))
    assert str(path) in str(err.value) and expected in str(err.value)


def test_missing_box_file_is_a_read_failure_and_a_startup_error(tmp_path, write_list):
    with pytest.raises(FrameReadError, match='box file not found: .*nope.json'):
        BoxFile(str(tmp_path / 'nope.json'))
    _numbered_video(tmp_path / 'a.json', 8)
    records = [r for r in _records(write_list(tmp_path / 'l.txt', ['a 8 0', 'b 8 1']))]
    with pytest.raises(ValueError, match=r'l.txt \(--train_list\): video b: box file not found: .*b.json'):
        check_list_counts(records, root=str(tmp_path), modality='Layout', image_tmpl='{}.json', start_index=1,
                          list_file=str(tmp_path / 'l.txt'), option='--train_list')


def test_check_data_reports_box_files(tmp_path, write_list, capsys):
    from scripts import check_data
    _numbered_video(tmp_path / 'a.json', 8)
    _numbered_video(tmp_path / 'long.json', 12)
    (tmp_path / 'bad.json').write_text('{"width": 10, "height": 10, "frames": [{"name": "0001.jpg"}]}')
    lst = write_list(tmp_path / 'l.txt', ['a 8 0', 'gone 8 1', 'bad 8 1', 'long 8 0'])
    status = check_data.main(['mine', '--modality', 'Layout', '--root_path', str(tmp_path), '--train_list', lst,
                              '--val_list', lst, '--num_class', '2', '--split', 'train'])
    out = capsys.readouterr().out
    assert status == 1 and '3 problems: count_mismatch 1, missing_box_file 1, malformed_box_file 1' in out
    assert f'missing_box_file: {tmp_path / "gone.json"}' in out
    assert 'frames[0] (0001.jpg): field "labels" must be a list of boxes, got nothing (missing or null)' in out
    assert 'long.json: annotates frame 12, the list says 8 frames' in out


def _records(list_file):
    from ops.dataset import parse_list
    return parse_list(list_file, 'frames')


def test_layout_dataset_samples_the_rgb_frames(tmp_path, write_list):
    _numbered_video(tmp_path / 'a.json', 20)
    _numbered_video(tmp_path / 'b.json', 7)
    lst = write_list(tmp_path / 'l.txt', ['a 20 3', 'b.mp4 7 1'])      # a video path reads b.json
    val = LayoutDataSet(str(tmp_path), lst, modality='Layout', sampling=SamplingConfig(4, 'val'),
                        reading=ReaderConfig(image_tmpl='{}.json'))
    clip, label, index = val[0]
    assert clip.shape == (4 * 6, 14, 1) and clip.dtype == torch.float32 and (label, index) == (3, 0)
    x1 = clip.reshape(4, 6, 14)[:, 2, 0] * 1000                          # the numbered box of each frame
    assert x1.round().tolist() == sample_indices(20, 4, 1, 'val')[0]
    short = val[1][0].reshape(4, 6, 14)
    assert (short[:, 2, 0] * 1000).round().tolist() == sample_indices(7, 4, 1, 'val')[0]
    assert short[:, 0, 1:].eq(0).all()                                   # one box per frame, the rest padding
    test = LayoutDataSet(str(tmp_path), lst, modality='Layout', sampling=SamplingConfig(4, 'test', twice=True),
                         reading=ReaderConfig(image_tmpl='{}.json'))
    views = test[0][0]
    assert views.shape == (2, 4 * 6, 14, 1) and test.num_views == 2
    clips = sample_indices(20, 4, 1, 'test', twice=True)
    assert (views.reshape(2, 4, 6, 14)[:, :, 2, 0] * 1000).round().tolist() == clips
    with pytest.raises(ValueError, match='Layout reads box files'):
        LayoutDataSet(str(tmp_path), lst, modality='Layout', reading=ReaderConfig('hdf5'))


def test_stlt_shapes_masking_and_causal_mask():
    assert causal_mask(3).tolist() == [[False, True, True], [False, False, True], [False, False, False]]
    torch.manual_seed(0)
    model = STLT(3, hidden_size=16, num_heads=2, spatial_layers=1, temporal_layers=1).eval()
    clip = torch.zeros(2, 3, 6, 4, 1)
    clip[:, :, 4:6] = 1e-9                                               # padding boxes
    clip[:, :, 0, :2, 0] = torch.tensor([1.0, 2.0])                       # two real boxes per frame
    clip[:, :, 1:6, :2] = torch.rand(2, 3, 5, 2, 1)
    out = model(clip)
    assert out.shape == (2, 16)
    changed = clip.clone()
    changed[:, :, 1:6, 2:] = torch.rand(2, 3, 5, 2, 1)                   # padding slots: other values
    assert torch.allclose(model(changed), out, atol=1e-6)
    changed[:, 1, 2, 0] += 0.3                                           # a real box moves
    assert not torch.allclose(model(changed)[:, :], out, atol=1e-4)
    # temporal transformer: a frame sees only itself and earlier frames; the CLS token (last) sees all
    tokens = torch.randn(2, 4, 16)
    ref = model.temporal(tokens, mask=model._causal)
    later = tokens.clone()
    later[:, 2] += 1.0
    new = model.temporal(later, mask=model._causal)
    assert torch.allclose(new[:, :2], ref[:, :2], atol=1e-6) and not torch.allclose(new[:, 3], ref[:, 3])


def test_tsn_with_stlt(tmp_path):
    model = TSN(5, 4, 'Layout', base_model='stlt_tiny', pretrain='none', dropout=0.0)
    assert model.input_channels == 4 * 6 and model.is_temporal
    box = model.base_model.box_embedding.weight.abs().max()      # default init U(-0.5, 0.5) (fan-in 4), x 5
    assert 0.5 < box <= 2.5
    logits = model(torch.rand(3, 24, 14, 1))
    assert logits.shape == (3, 5)
    logits.sum().backward()
    with pytest.raises(ValueError, match='modality Layout is read by the layout models'):
        TSN(5, 4, 'RGB', base_model='stlt_tiny', pretrain='none')
    with pytest.raises(ValueError, match='modality Layout is read by the layout models'):
        TSN(5, 4, 'Layout', base_model='resnet18', pretrain='none')
    with pytest.raises(ValueError, match='trained from scratch'):
        TSN(5, 4, 'Layout', base_model='stlt', pretrain='imagenet')


def test_layout_arch_options(capsys):
    from opts import parse_args
    ranks = ['--rank', '1', '--world_size', '2', '--init_method', 'tcp://127.0.0.1:1']
    args = parse_args(['toy', 'RGB,Layout', *ranks])
    assert args.layout_arch == 'stlt_tiny' and args.arch == 'resnet18'     # the toy defaults
    assert args.store_names[1].startswith('TSM_toy_Layout_stlt_tiny_avg_segment8')
    args = parse_args(['toy', 'Layout', '--arch', 'stlt'])
    assert args.layout_arch == 'stlt' and args.dropout == 0.0 and args.pretrain == 'none'   # its recipe
    with pytest.raises(SystemExit):
        parse_args(['toy', 'RGB,Layout', '--arch', 'stlt', *ranks])
    assert '--arch stlt reads the Layout modality only' in capsys.readouterr().err


def test_toy_boxes_follow_the_object():
    right = toy_boxes(0, 12, 64, np.random.default_rng([0, 0, 5, 0]))
    left = toy_boxes(1, 12, 64, np.random.default_rng([0, 0, 5, 0]))
    centre = [(f['labels'][0]['box2d']['x1'] + f['labels'][0]['box2d']['x2']) / 2 for f in right['frames']]
    assert centre == sorted(centre) and centre[-1] - centre[0] > 15                # moving right
    assert [f['labels'] for f in left['frames']] == [f['labels'] for f in right['frames']][::-1]
    assert right['frames'][0]['labels'][0]['category'] == 'disc'
    appearing = toy_boxes(6, 12, 64, np.random.default_rng([0, 0, 9, 0]))['frames']
    assert appearing[0]['labels'] == [] and appearing[-1]['labels'][0]['score'] == 1.0


def test_toy_layout_for_every_listed_clip(tiny_toy):
    out = ensure_toy_layout(tiny_toy)
    for split in ('train', 'val'):
        with open(os.path.join(tiny_toy, 'toy', f'{split}_rgb.txt')) as f:
            for line in f:
                vid, n, _ = line.split()
                assert BoxFile(os.path.join(out, vid + '.json')).num_frames == int(n)


def _stlt_checkpoint(path, seed):
    torch.manual_seed(seed)
    model = TSN(8, 4, 'Layout', base_model='stlt_tiny', pretrain='none', dropout=0.0)
    save_checkpoint({'epoch': 1, 'arch': 'stlt_tiny', 'state_dict': model.state_dict(), 'optimizer': {},
                     'best_prec1': 0.0, 'config': model.config()}, str(path))
    return str(path)


TINY = ["--num_segments", "4", "--input_size", "32", "--batch-size", "8", "-j", "0", "--no_progress",
        "--epochs", "1", "--max_steps_per_epoch", "2"]


def _main(data_root, tmp, modality, *extra):
    return ["main.py", "toy", modality, "--data_root", data_root, "--root_model", str(tmp / "ckpt"),
            "--root_log", str(tmp / "log"), *TINY, *extra]


@pytest.mark.slow
def test_layout_trains_evaluates_in_an_ensemble_and_predicts(tiny_toy, tiny_checkpoint, run_cli, tmp_path):
    run_cli(_main(tiny_toy, tmp_path, "Layout"), cwd=tmp_path)
    (run,) = (tmp_path / "ckpt").iterdir()
    assert run.name.startswith("TSM_toy_Layout_stlt_tiny_")
    layout = str(run / "ckpt.pth.tar")
    rgb = tiny_checkpoint(tmp_path / "rgb.pth.tar", "RGB", 0)
    out = run_cli(["test_models.py", "toy", "--weights", f"{layout},{rgb}", "--data_root", tiny_toy,
                   "--no_progress", "-j", "0", "--test_crops", "3"], cwd=tmp_path).stdout
    assert "[Layout, coeff 1]: 4 frames x 1 crop x 1 clip (uniform), whole-frame boxes, 16 videos" in out
    assert "[RGB, coeff 1]: 4 frames x 3 crops" in out and "Overall Prec@1" in out
    # predict: a frame folder with its box file beside it
    vid = "000040"
    os.symlink(os.path.join(tiny_toy, "toy", "frames", vid), tmp_path / vid)
    os.symlink(os.path.join(tiny_toy, "toy", "boxes", vid + ".json"), tmp_path / f"{vid}.json")
    preds = tmp_path / "p.json"
    run_cli(["predict.py", "--weights", f"{layout},{rgb}", str(tmp_path / vid), "--output", str(preds)],
            cwd=tmp_path)
    report = json.loads(preds.read_text())
    assert len(report["videos"]) == 1 and "whole-frame boxes" in report["protocol"][0]


@pytest.mark.slow
def test_layout_teacher_cached_scores_and_mutual_learning(tiny_toy, tiny_checkpoint, run_cli, tmp_path):
    layout = _stlt_checkpoint(tmp_path / "layout.pth.tar", 0)
    flow = tiny_checkpoint(tmp_path / "flow.pth.tar", "Flow", 1)
    run_cli(_main(tiny_toy, tmp_path / "a", "RGB", "--arch", "resnet18", "--shift", "--distill_from",
                  f"{layout},{flow}", "--dump_step_logits"), cwd=tmp_path)
    (run,) = (tmp_path / "a" / "ckpt").iterdir()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["distill"] >= 0
    scores = tmp_path / "teacher.npz"
    run_cli(["test_models.py", "toy", "--weights", layout, "--data_root", tiny_toy, "--test_list",
             os.path.join(tiny_toy, "toy", "train_rgb.txt"), "--save_scores", str(scores), "--no_progress",
             "-j", "0"], cwd=tmp_path)
    run_cli(_main(tiny_toy, tmp_path / "b", "RGB", "--arch", "resnet18", "--teacher_scores", str(scores)),
            cwd=tmp_path)
    argv = [sys.executable, os.path.join(REPO, "main.py"), *_main(tiny_toy, tmp_path / "m", "RGB,Layout",
                                                                   "--arch", "resnet18", "--dist_timeout", "20")[1:]]
    outs = wait_ranks(launch_ranks(argv, 2, tmp_path, env={"PYTHONUNBUFFERED": "1"}), 300)
    assert "ensemble" in outs[0]
    names = sorted(p.name for p in (tmp_path / "m" / "ckpt").iterdir())
    assert names[0].startswith("TSM_toy_Layout_stlt_tiny") and names[1].startswith("TSM_toy_RGB_resnet18")
