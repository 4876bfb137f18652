"""Online TSM: the uni-directional shift, the streaming model, its export, the demo and the option checks."""
import json
import os
import re
import subprocess

import numpy as np
import pytest
import torch

from ops.models import TSN
from ops.online import (export_parity, export_step, offline_frame_logits, state_nbytes, stream_clip,
                        to_streaming)
from ops.temporal_modules import TemporalConfig, make_temporal_shift
from ops.temporal_shift import TemporalShiftUni, shift_uni
from conftest import load_script


def _arange_clip(n=1, t=4, c=8):
    # value 8t + c at (time t, channel c), spatial 1x1: (N*T, C, 1, 1)
    return torch.arange(n * t * c, dtype=torch.float32).reshape(n * t, c, 1, 1)


def _uni_model(arch, place='blockres', num_segments=8, seed=0, num_class=6):
    """A random uni TSN in eval mode with non-trivial BN statistics and head (so every layer matters)."""
    torch.manual_seed(seed)
    model = TSN(num_class, num_segments, 'RGB', base_model=arch, pretrain='none', dropout=0.5, input_size=32,
                temporal=TemporalConfig('tsm', shift_place=place, shift_direction='uni'))
    with torch.no_grad():
        model.new_fc.weight.normal_(0, 0.5)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        # Random deep nets have exploding activations; scale the head so logits are about +-5, as a
        # trained model's are, and an absolute tolerance means the same for every backbone.
        model.eval()
        peak = offline_frame_logits(model, torch.randn(1, 2, 3, 32, 32)).abs().max()
        model.new_fc.weight.mul_(5 / peak)
    return model


# ------------------------------------------------------------------------------------------ the shift
def test_uni_shift_hand_computed_example():
    out = shift_uni(_arange_clip(), n_segment=4, fold_div=8)   # fold = 1: channel 0 comes from t-1
    expected = torch.tensor([
        [0, 1, 2, 3, 4, 5, 6, 7],          # t = 0: zeros in the fold
        [0, 9, 10, 11, 12, 13, 14, 15],
        [8, 17, 18, 19, 20, 21, 22, 23],
        [16, 25, 26, 27, 28, 29, 30, 31],
    ], dtype=torch.float32)
    assert torch.equal(out[:, :, 0, 0], expected)


def test_uni_shift_gradient_is_the_adjoint():
    x = torch.randn(2 * 4, 16, 3, 5, requires_grad=True)
    g = torch.randn(2 * 4, 16, 3, 5)
    (shift_uni(x, 4, 8) * g).sum().backward()
    expected = torch.autograd.grad((_reference_uni(x, 4, 8) * g).sum(), x)[0]
    assert torch.equal(x.grad, expected)


def _reference_uni(x, t, div):
    # The definition with torch.cat, for the gradient check.
    x5 = x.view(-1, t, *x.shape[1:])
    fold = x.shape[1] // div
    past = torch.cat((torch.zeros_like(x5[:, :1, :fold]), x5[:, :-1, :fold]), dim=1)
    return torch.cat((past, x5[:, :, fold:]), dim=2).view_as(x)


def test_uni_model_is_causal_and_records_its_direction():
    model = _uni_model('resnet18')
    assert model.config()['shift_direction'] == 'uni'
    assert sum(isinstance(m, TemporalShiftUni) for m in model.modules()) == 8
    clip = torch.randn(1, 8, 3, 32, 32)
    changed = clip.clone()
    changed[:, 5:] = torch.randn(1, 3, 3, 32, 32)    # a different future changes nothing before frame 5
    a, b = offline_frame_logits(model, clip), offline_frame_logits(model, changed)
    assert torch.equal(a[:, :5], b[:, :5]) and not torch.allclose(a[:, 5:], b[:, 5:])


@pytest.mark.parametrize('kwargs', [dict(temporal_pool=True), dict(non_local=True)])
def test_uni_refuses_non_causal_modules(kwargs):
    with pytest.raises(ValueError, match='causal'):
        TemporalConfig('tsm', shift_direction='uni', **kwargs)
    with pytest.raises(ValueError, match='needs the temporal shift'):
        TemporalConfig(shift_direction='uni')
    with pytest.raises(ValueError, match='temporal pooling'):
        import torchvision
        make_temporal_shift(torchvision.models.resnet18(), 8, temporal_pool=True, direction='uni')


# ------------------------------------------------------------------------------------------ streaming
# Every backbone family and placement the shift exists for; 16x16 input keeps them fast.
FAMILIES = [('resnet18', 'blockres'), ('resnet18', 'block'), ('resnet50', 'blockres'),
            ('mobilenetv2', 'blockres'), ('BNInception', 'block')]


@pytest.mark.slow
@pytest.mark.parametrize('arch,place', FAMILIES)
def test_stream_equals_offline_on_every_prefix(arch, place):
    """Frame t of the stream == frame t of the offline uni model run on the first t frames, checked at
    prefixes t = 1, 8 and 16 (> the model's 4 training segments). In float64 the two agree to
    1e-12; in float32 they differ by rounding only (the convolutions of a batch of B*t frames and
    of B frames sum in different orders), which a random ResNet-50 amplifies to ~1e-5 of its largest
    logit, hence the tolerance relative to it."""
    model = _uni_model(arch, place, num_segments=4)
    stream = to_streaming(model)
    torch.manual_seed(1)
    clip = torch.randn(1, 16, 3, 32, 32)
    streamed, _ = stream_clip(stream, clip)
    assert streamed.shape == (1, 16, 6)
    peak = streamed.abs().max().item()
    assert peak > 1   # non-trivial logits, so the tolerance below means something
    for t in (1, 8, 16):
        offline = offline_frame_logits(model, clip[:, :t])
        assert (streamed[:, :t] - offline).abs().max().item() <= 1e-5 * peak, (arch, place, t)
    model64 = model.double()
    streamed64, _ = stream_clip(to_streaming(model64), clip[:, :4].double())
    assert (streamed64 - offline_frame_logits(model64, clip[:, :4].double())).abs().max().item() < 1e-12


@pytest.mark.slow
def test_resnet101_every_other_block_streams():
    # n_round = 2: blockres shifts every other block of every stage; the stream caches exactly those.
    model = _uni_model('resnet101')
    stream = to_streaming(model)
    assert stream.num_states == (3 + 1) // 2 + 4 // 2 + (23 + 1) // 2 + (3 + 1) // 2
    clip = torch.randn(1, 3, 3, 32, 32)
    streamed = stream_clip(stream, clip)[0]
    assert (streamed - offline_frame_logits(model, clip)).abs().max().item() <= 1e-5 * streamed.abs().max().item()


def test_state_shapes_dtypes_and_batch_independence():
    model = _uni_model('resnet18')
    stream = to_streaming(model)
    state = stream.initial_state(2, 32, 32)
    # resnet18 at 32 px: layer1..4 block inputs 64@8, 64@8 | 64@8, 128@4 | 128@4, 256@2 | 256@2, 512@1;
    # each caches 1/8 of the channels of its input.
    assert [tuple(s.shape) for s in state] == [(2, 8, 8, 8), (2, 8, 8, 8), (2, 8, 8, 8), (2, 16, 4, 4),
                                               (2, 16, 4, 4), (2, 32, 2, 2), (2, 32, 2, 2), (2, 64, 1, 1)]
    assert all(s.dtype == torch.float32 and not s.any() for s in state)
    assert state_nbytes(state) == 4 * 2 * (3 * 512 + 2 * 256 + 2 * 128 + 64)
    clip = torch.randn(2, 5, 3, 32, 32)
    both, end = stream_clip(stream, clip, state)
    one, end0 = stream_clip(stream, clip[:1])
    two, end1 = stream_clip(stream, clip[1:])
    # equal up to float32 rounding (a batch of 2 and of 1 may take different convolution kernels)
    assert (both - torch.cat((one, two))).abs().max().item() <= 1e-5 * both.abs().max().item()
    for e, pair in zip(end, zip(end0, end1)):
        assert (e - torch.cat(pair)).abs().max().item() <= 1e-5 * e.abs().max().item()
    assert model.base_model.layer1[0].conv1.__class__ is TemporalShiftUni   # the model itself is unchanged


def test_stream_in_bf16():
    model = _uni_model('mobilenetv2')
    clip = torch.randn(1, 6, 3, 32, 32)
    ref = offline_frame_logits(model, clip)
    stream = to_streaming(model).to(torch.bfloat16)
    state = stream.initial_state(1, 32, 32)
    assert all(s.dtype == torch.bfloat16 for s in state)
    out, state = stream_clip(stream, clip.to(torch.bfloat16), state)
    assert out.dtype == torch.bfloat16 and all(s.dtype == torch.bfloat16 for s in state)
    assert (out.float() - ref).abs().max().item() < 0.05 * ref.abs().max().item()


def test_to_streaming_refuses_what_cannot_stream():
    bi = TSN(4, 8, 'RGB', base_model='resnet18', pretrain='none', temporal=TemporalConfig('tsm'))
    with pytest.raises(ValueError, match="shift_direction='bi'.*--shift_direction uni"):
        to_streaming(bi)
    tpool = TSN(4, 8, 'RGB', base_model='resnet18', pretrain='none', temporal=TemporalConfig('tsm', temporal_pool=True))
    with pytest.raises(ValueError, match='temporal pooling'):
        to_streaming(tpool)
    with pytest.raises(ValueError, match='TSM model'):
        to_streaming(TSN(4, 8, 'RGB', base_model='resnet18', pretrain='none'))
    stream = to_streaming(_uni_model('resnet18'))
    with pytest.raises(ValueError, match='1 tensors, this resnet18 stream needs 8'):
        stream(torch.zeros(1, 3, 32, 32), (torch.zeros(1),))
    with pytest.raises(ValueError, match='state is for 2 streams but the frame batch has 1'):
        stream(torch.zeros(1, 3, 32, 32), stream.initial_state(2, 32, 32))
    with pytest.raises(ValueError, match='one frame per stream'):
        stream(torch.zeros(1, 6, 32, 32))
    with pytest.raises(RuntimeError, match='inference only'):
        stream.train()


@pytest.mark.slow
def test_export_parity_onnxruntime_and_torch_export(tmp_path):
    stream = to_streaming(_uni_model('resnet18'))
    onnx_path = str(tmp_path / 'step.onnx')
    program = export_step(stream, 32, 32, onnx_path=onnx_path)
    import onnx
    graph = onnx.load(onnx_path).graph
    assert [i.name for i in graph.input][:2] == ['frame', 'state_0'] and len(graph.input) == 1 + 8
    assert [o.name for o in graph.output][:2] == ['logits', 'next_state_0'] and len(graph.output) == 1 + 8
    torch.manual_seed(3)
    clip = torch.randn(1, 6, 3, 32, 32)
    diffs = export_parity(stream, clip, program=program, onnx_path=onnx_path)
    assert diffs['torch.export']['logits'] <= 1e-6 and diffs['torch.export']['state'] <= 1e-6
    assert diffs['onnxruntime']['logits'] <= 1e-4 and diffs['onnxruntime']['state'] <= 1e-4
    # The parity means something: without the cached state (a fresh stream per frame) the logits move
    # by far more than the tolerances above, so an export that lost the cache would fail.
    streamed, _ = stream_clip(stream, clip)
    with torch.no_grad():
        memoryless = torch.stack([stream(clip[:, t])[0] for t in range(6)], dim=1)
    assert (streamed - memoryless)[:, 1:].abs().max().item() > 0.1


# ------------------------------------------------------------------------------------------ checkpoints
def test_checkpoint_direction_checks(tmp_path, tiny_checkpoint):
    from ops.checkpoint import check_shift_direction, load_checkpoint, load_weights, model_config_from_checkpoint
    from ops.online import load_uni_model
    uni = tiny_checkpoint(tmp_path / 'uni.pth.tar', 'RGB', 0, shift_direction='uni')
    bi = tiny_checkpoint(tmp_path / 'bi.pth.tar', 'RGB', 0)
    assert load_uni_model(uni).temporal.shift_direction == 'uni'
    with pytest.raises(ValueError, match=r"bi.pth.tar: .*shift_direction='bi'"):
        load_uni_model(bi)
    with pytest.raises(ValueError, match="trained with shift direction 'bi'"):
        load_uni_model(bi, shift_direction='uni')
    # Our checkpoints rebuild their direction; an old config without the key is 'bi'.
    ckpt = load_checkpoint(uni)
    assert TSN.from_config(model_config_from_checkpoint(ckpt)).temporal.shift_direction == 'uni'
    old = dict(ckpt['config'])
    old.pop('shift_direction')
    model = TSN.from_config(dict(ckpt['config'], pretrain='none'))
    report = load_weights(model, ckpt['state_dict'], src_config=old)
    assert report['shift_direction'] == 'bi -> uni' and report['changed']
    assert load_weights(model, ckpt)['shift_direction'] is None
    with pytest.raises(ValueError, match='trained with shift direction bi but the model is built with uni'):
        check_shift_direction(model, old, 'ckpt.pth.tar')


def test_cli_options_are_validated(tmp_path, tiny_toy, tiny_checkpoint, capsys):
    from opts import parse_args, parse_test_args
    ModelUnderTest = load_script('test_models.py', 'test_models_cli').ModelUnderTest
    base = ['toy', 'RGB', '--data_root', tiny_toy]
    args = parse_args(base + ['--shift', '--shift_direction', 'uni'])
    assert args.shift_direction == 'uni' and args.store_names[0].endswith('_uni')
    assert parse_args(base + ['--shift']).shift_direction == 'bi'
    for extra, message in ((['--shift_direction', 'uni'], 'it needs --shift'),
                           (['--shift', '--shift_direction', 'uni', '--temporal_pool'], 'causal'),
                           (['--shift', '--shift_direction', 'uni', '--non_local'], 'causal')):
        with pytest.raises(SystemExit) as exc:
            parse_args(base + extra)
        assert exc.value.code == 2 and message in capsys.readouterr().err
    # test_models.py: a bi checkpoint evaluated as uni stops before any video is read, naming the file.
    bi = tiny_checkpoint(tmp_path / 'bi.pth.tar', 'RGB', 0)
    targs = parse_test_args(['toy', '--data_root', tiny_toy, '--weights', bi, '--shift_direction', 'uni'])
    with pytest.raises(SystemExit, match=r"bi.pth.tar: carries its own model configuration; --shift_direction "
                                         r"'uni' \(the checkpoint has 'bi'\)"):
        ModelUnderTest(targs, 0, None)


# ------------------------------------------------------------------------------------------ the demo
def _write_moving_square_mp4(path, num_frames, size=48):
    """A white square moving right on grey, H.264 (near-lossless) via imageio-ffmpeg's binary."""
    import imageio_ffmpeg
    frames = np.full((num_frames, size, size, 3), 90, np.uint8)
    for k in range(num_frames):
        x = 4 + 3 * k
        frames[k, 16:28, x:x + 12] = 250
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), '-y', '-loglevel', 'error', '-f', 'rawvideo', '-pix_fmt', 'rgb24',
           '-s', f'{size}x{size}', '-r', '10', '-i', '-', '-c:v', 'libx264', '-crf', '0', '-pix_fmt',
           'yuv444p', str(path)]
    subprocess.run(cmd, input=frames.tobytes(), check=True)
    return str(path)


def _decode(path):
    import av
    with av.open(path) as c:
        return np.stack([f.to_ndarray(format='rgb24') for f in c.decode(c.streams.video[0])])


@pytest.mark.slow
def test_demo_on_a_video_file_matches_offline(tmp_path, tiny_checkpoint, run_cli):
    from ops.online import load_uni_model
    from ops.transforms import build_transform
    ckpt = tiny_checkpoint(tmp_path / 'uni.pth.tar', 'RGB', 0, random_bn_stats=True, shift_direction='uni')
    video = _write_moving_square_mp4(tmp_path / 'in.mp4', 12)
    out = tmp_path / 'annotated.mp4'
    proc = run_cli(['scripts/online_demo.py', '--weights', ckpt, '--video', video, '--output', str(out),
                    '--history', '3', '--scale_size', '32', '--export', str(tmp_path / 'exported')],
                   cwd=str(tmp_path), timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith('frame ')]
    assert len(lines) == 12
    printed = [int(re.search(r'class (\d+) p=', line).group(1)) for line in lines]

    # Offline: the same decoded frames, the test transform (shorter side 32, centre crop 32), the uni
    # model on the whole clip; per frame t the argmax of the logits summed over frames t-2..t.
    model = load_uni_model(ckpt)
    transform = build_transform(False, 'RGB', input_size=32, scale_size=32, **model.normalization())
    clip = transform(torch.from_numpy(_decode(video)))[0].unsqueeze(0)     # (1, 12, 3, 32, 32)
    logits = offline_frame_logits(model, clip)[0]
    expected = [int(logits[max(0, t - 2):t + 1].sum(0).argmax()) for t in range(12)]
    assert printed == expected

    annotated = _decode(str(out))
    assert annotated.shape[0] == 12 and annotated.shape[1] > 48      # every frame, with the label band
    assert 'step latency median' in proc.stdout
    # --export: both exported steps, fed the 12 real frames with their own state, match eager.
    parity = re.findall(r'export parity \((\S+), 12 frames\): max abs diff logits (\S+), state (\S+)', proc.stdout)
    assert [p[0] for p in parity] == ['torch.export', 'onnxruntime']
    assert all(float(p[1]) <= 1e-4 and float(p[2]) <= 1e-4 for p in parity), parity
    assert (tmp_path / 'exported' / 'step.onnx').is_file() and (tmp_path / 'exported' / 'step.pt2').is_file()


def test_demo_reports_what_it_cannot_open(tmp_path, tiny_checkpoint):
    demo = load_script('scripts/online_demo.py', 'online_demo')
    uni = tiny_checkpoint(tmp_path / 'uni.pth.tar', 'RGB', 0, shift_direction='uni')
    with pytest.raises(SystemExit, match='cannot open camera 57'):
        demo.main(demo.parse_args(['--weights', uni, '--camera', '57']))
    bi = tiny_checkpoint(tmp_path / 'bi.pth.tar', 'RGB', 0)
    video = _write_moving_square_mp4(tmp_path / 'in.mp4', 2)
    with pytest.raises(SystemExit, match=r'bi.pth.tar.*--shift_direction uni'):
        demo.main(demo.parse_args(['--weights', bi, '--video', video]))
    broken = tmp_path / 'broken.mp4'
    broken.write_bytes(b'not a video')
    with pytest.raises(SystemExit, match=r"cannot open video '.*broken.mp4'"):
        demo.main(demo.parse_args(['--weights', uni, '--video', str(broken)]))


@pytest.mark.slow
def test_streaming_evaluation_agrees_with_test_models(tmp_path, tiny_toy, tiny_checkpoint, capsys):
    """scripts/online_eval.py (frame by frame) gives test_models.py's per-video scores on the same views."""
    tm = load_script('test_models.py', 'test_models_cli')
    online_eval = load_script('scripts/online_eval.py', 'online_eval')
    ckpt = tiny_checkpoint(tmp_path / 'uni.pth.tar', 'RGB', 0, random_bn_stats=True, shift_direction='uni')
    scores = str(tmp_path / 'offline.npz')
    common = ['toy', '--data_root', tiny_toy, '--weights', ckpt, '--test_crops', '3', '--workers', '0']
    tm.main(tm.parse_test_args(common + ['--save_scores', scores, '--no_progress']))
    online_eval.main(online_eval.parse_args(common + ['--compare', scores]))
    out = capsys.readouterr().out
    assert '16/16 per-video predictions agree' in out, out
    diff = float(re.search(r'max abs score difference (\S+)', out).group(1))
    assert diff <= 1e-4


def test_benchmark_online_reports_latencies_and_state(capsys):
    bench = load_script('scripts/benchmark.py', 'benchmark_online')
    args = bench.get_args_parser().parse_args(['online', '--arch', 'mobilenetv2', '--input_size', '32', '--warmup',
                                               '0', '--repeats', '2', '--threads', '1', '--device', 'cpu', '--json'])
    bench.main(args)
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [c['case'] for c in result['cases']] == ['step', 'plain_frame', 'offline_clip', 'state_copies']
    assert all(c['median_ms'] > 0 and c['p95_ms'] >= c['median_ms'] for c in result['cases'])
    assert 0 < result['state_copies_vs_plain_min'] < 1 and result['step_vs_plain_paired'] > 0
    assert result['step_vs_plain'] > 0 and result['state_tensors'] == 10
    # MobileNetV2 at 32 px caches 1/8 of the inputs of its 10 shifted blocks (TSM's online demo at 224:
    # 3@56, 4@28 x2, 8@14 x3, 12@14 x2, 20@7 x2), here 3@8, 4@4 x2, 8@2 x3, 12@2 x2, 20@1 x2 floats.
    assert result['state_kib'] * 1024 == 4 * (3 * 64 + 2 * 4 * 16 + 3 * 8 * 4 + 2 * 12 * 4 + 2 * 20)


def test_offline_uni_model_exports_to_onnx_with_its_shift(tmp_path):
    """The offline uni TSN (not the stream) through the legacy ONNX exporter: tracing takes the cat-based
    shift, which computes the same values (before it, the exported graph ignored the shifted input)."""
    import onnxruntime as ort
    from ops.temporal_shift import shift_for_export
    x = _arange_clip(n=2, t=4, c=16)
    assert torch.equal(shift_for_export(x, 4, 8, direction='uni'), shift_uni(x, 4, 8))
    xc = torch.randn(8, 16, 3, 5).contiguous(memory_format=torch.channels_last)
    assert torch.equal(shift_for_export(xc, 4, 8, direction='uni'), shift_uni(xc, 4, 8))
    model = _uni_model('resnet18', num_segments=4)
    clip = torch.randn(1, 12, 32, 32)
    path = str(tmp_path / 'offline.onnx')
    torch.onnx.export(model, (clip,), path, dynamo=False)
    sess = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    out = sess.run(None, {sess.get_inputs()[0].name: clip.numpy()})[0]
    with torch.no_grad():
        assert np.abs(out - model(clip).numpy()).max() <= 1e-4


@pytest.mark.slow
def test_train_uni_then_resume_or_fine_tune_across_directions(tmp_path, tiny_toy, run_cli):
    """main.py end to end: a uni run records its direction; resuming it as bi stops with the reason;
    fine-tuning it into a bi model is allowed and logged."""
    from ops.checkpoint import load_checkpoint
    tiny = ['toy', 'RGB', '--data_root', tiny_toy, '--arch', 'resnet18', '--num_segments', '4', '--input_size',
            '32', '--batch-size', '8', '-j', '0', '--no_progress', '--epochs', '1', '--shift']

    def argv(name, *extra):
        return ['main.py', *tiny, '--root_model', str(tmp_path / name), '--root_log', str(tmp_path / 'log'), *extra]
    run_cli(argv('uni', '--shift_direction', 'uni'), cwd=str(tmp_path))
    (run,) = list((tmp_path / 'uni').iterdir())
    assert run.name.endswith('_uni')
    ckpt = str(run / 'ckpt.pth.tar')
    assert load_checkpoint(ckpt)['config']['shift_direction'] == 'uni'
    proc = run_cli(argv('bi', '--resume', ckpt), cwd=str(tmp_path), check=False)
    assert proc.returncode != 0
    assert 'trained with shift direction uni but the model is built with bi' in proc.stderr
    proc = run_cli(argv('tuned', '--tune_from', ckpt), cwd=str(tmp_path))
    assert 'shift direction uni -> bi' in proc.stderr


@pytest.mark.parametrize('script,options', [
    ('scripts/online_demo.py', ('--weights', '--video', '--camera', '--url', '--output', '--history', '--every',
                                '--export')),
    ('scripts/online_eval.py', ('--weights', '--compare', '--test_crops', '--shift_direction')),
])
def test_help_of_the_online_entry_points(script, options, capsys):
    module = load_script(script, os.path.basename(script)[:-3])
    with pytest.raises(SystemExit) as exc:
        module.parse_args(['--help'])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and 'usage:' in out and all(o in out for o in options)


def test_stream_normalises_uint8_frames_like_the_model():
    torch.manual_seed(0)
    model = TSN(5, 4, 'RGB', base_model='resnet18', temporal=TemporalConfig('tsm', shift_direction='uni'),
                pretrain='none', input_size=32).eval()
    stream = to_streaming(model)
    clip = torch.randint(0, 256, (2, 4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        from_uint8, _ = stream_clip(stream, clip)
        as_float = model.normalize_input(clip.reshape(2, 12, 32, 32)).reshape(2, 4, 3, 32, 32)
        from_float, _ = stream_clip(stream, as_float)
    assert torch.equal(from_uint8, from_float)


# ------------------------------------------------------------------------------------ TSM's online demo
# online_demo/mobilenet_v2_tsm.py of TSM: (t, c, n, s) settings, and the blocks (counted from 0 after the stem)
# built as InvertedResidualWithShift, which return x + conv(cat(buffer, x[:, c//8:])) and x[:, :c//8].
_DEMO_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                  (6, 320, 1, 1))
_DEMO_SHIFT_BLOCKS = (2, 4, 5, 7, 8, 9, 11, 12, 14, 15)
_BN = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')


def _demo_blocks():
    """(features index, expand ratio, stride, shifted) of the demo's 17 inverted residuals."""
    blocks, g = [], 0
    for t, _, n, s in _DEMO_SETTINGS:
        for i in range(n):
            blocks.append((g + 1, t, s if i == 0 else 1, g in _DEMO_SHIFT_BLOCKS))
            g += 1
    return blocks


def _demo_keys():
    """The demo's state-dict keys, spelled out from its modules: features.0 = conv_bn (conv, BN, ReLU6),
    features.1..17 = `.conv` Sequentials (pw, BN, ReLU6, dw, BN, ReLU6, pw-linear, BN; without the first
    three when t = 1; no wrapper around a shifted block's conv), features.18 = conv_1x1_bn, classifier."""
    keys = ['features.0.0.weight'] + [f'features.0.1.{b}' for b in _BN]
    for idx, t, _, _ in _demo_blocks():
        for conv in ((0, 3, 6) if t != 1 else (0, 3)):
            keys += [f'features.{idx}.conv.{conv}.weight'] + [f'features.{idx}.conv.{conv + 1}.{b}' for b in _BN]
    return keys + ['features.18.0.weight'] + [f'features.18.1.{b}' for b in _BN] + ['classifier.weight',
                                                                                       'classifier.bias']


def _demo_forward(sd, x, buffers):
    """The demo's MobileNetV2.forward(x, *shift_buffer) -> (logits, new buffers), in functional ops on a
    state dict of its layout (BN in eval mode, eps 1e-5)."""
    import torch.nn.functional as F

    def layer(key_conv, key_bn, h, stride=1, groups=1, relu=True):
        w = sd[key_conv + '.weight']
        h = F.conv2d(h, w, None, stride, w.shape[-1] // 2, 1, groups)
        h = F.batch_norm(h, sd[key_bn + '.running_mean'], sd[key_bn + '.running_var'], sd[key_bn + '.weight'],
                         sd[key_bn + '.bias'], False, 0.0, 1e-5)
        return F.relu6(h) if relu else h

    x = layer('features.0.0', 'features.0.1', x, stride=2)
    out = []
    for idx, t, stride, shifted in _demo_blocks():
        p = f'features.{idx}.conv.'
        h = x
        if shifted:
            fold = x.shape[1] // 8
            h = torch.cat((buffers[len(out)], x[:, fold:]), 1)
            out.append(x[:, :fold])
        if t != 1:
            h = layer(p + '0', p + '1', h)
        h = layer(p + ('3' if t != 1 else '0'), p + ('4' if t != 1 else '1'), h, stride, groups=h.shape[1])
        h = layer(p + ('6' if t != 1 else '3'), p + ('7' if t != 1 else '4'), h, relu=False)
        x = x + h if stride == 1 and x.shape[1] == h.shape[1] else h
    x = layer('features.18.0', 'features.18.1', x)
    return F.linear(x.mean(3).mean(2), sd['classifier.weight'], sd['classifier.bias']), out


def test_tsm_online_demo_checkpoint_loads_and_streams_as_the_demo(tmp_path):
    from ops.checkpoint import infer_config_from_state_dict
    from ops.online import load_uni_model
    torch.manual_seed(0)
    # The model the weights "came from": a uni MobileNetV2 TSM with the demo's head (a Linear, no dropout).
    source = TSN(27, 8, 'RGB', base_model='mobilenetv2', pretrain='none', dropout=0.0, input_size=32,
                 temporal=TemporalConfig('tsm', shift_direction='uni'))
    with torch.no_grad():
        for m in source.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        source.base_model.classifier.weight.normal_(0, 0.5)
    source.eval()
    # Our key of each demo key: base_model. in front, `.net` where our wrapper sits (the shifted blocks' conv.0).
    shifted = {idx for idx, _, _, s in _demo_blocks() if s}

    def ours(key):
        idx = int(key.split('.')[1]) if key.startswith('features.') else -1
        key = 'base_model.' + key
        return key.replace('.conv.0.', '.conv.0.net.') if idx in shifted else key
    own = source.state_dict()
    demo_sd = {k: own[ours(k)].clone() for k in _demo_keys()}
    assert sorted(map(ours, demo_sd)) == sorted(own)                    # every tensor, nothing else
    path = tmp_path / 'mobilenetv2_jester_online.pth.tar'
    torch.save(demo_sd, path)                                           # a bare state dict, as TSM ships it

    assert infer_config_from_state_dict(demo_sd)['num_class'] == 27     # keys alone: arch and head, no shift
    model = load_uni_model(str(path))
    config = model.config()
    assert (config['base_model'], config['shift_direction'], config['shift_div'], config['shift_place'],
            config['num_class'], config['dropout']) == ('mobilenetv2', 'uni', 8, 'blockres', 27, 0.0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, own[k]), k
    # test_models.py, predict.py and main.py --tune_from read it the same way (the bare dict is the state dict).
    from ops.checkpoint import load_checkpoint, model_config_from_checkpoint
    ckpt = load_checkpoint(str(path), require=('state_dict',))
    rebuilt = TSN.from_config(model_config_from_checkpoint(ckpt, path=str(path)))
    assert list(ckpt) == ['state_dict'] and rebuilt.config() == config
    from ops.export import load_model
    assert load_model(str(path))[1]['shift_direction'] == 'uni'      # predict.py / export.py

    # float64 from here: what is compared is the computation, not float32 summation orders.
    model, source = model.double(), source.double()
    demo_sd = {k: v.double() if v.is_floating_point() else v for k, v in demo_sd.items()}
    clip = torch.randn(1, 5, 3, 32, 32, dtype=torch.float64)
    stream = to_streaming(model)
    streamed, state = stream_clip(stream, clip)
    reference, _ = stream_clip(to_streaming(source), clip)
    assert torch.equal(streamed, reference)                             # the model it came from
    # TSM's demo computation on its own state dict, buffers starting at zero like our initial state.
    buffers = [torch.zeros_like(s) for s in state]
    demo = []
    for t in range(clip.shape[1]):
        logits, buffers = _demo_forward(demo_sd, clip[:, t], buffers)
        demo.append(logits)
    torch.testing.assert_close(streamed, torch.stack(demo, 1), rtol=0, atol=1e-12)
    assert all(torch.allclose(a, b, rtol=0, atol=1e-12) for a, b in zip(state, buffers))
    with torch.no_grad():                                               # the cached channels matter
        memoryless = torch.stack([stream(clip[:, t])[0] for t in range(clip.shape[1])], 1)
    assert (streamed - memoryless)[:, 1:].abs().max() > 1e-6                # >> the 1e-12 above
    # And the offline uni model on the whole clip (test_models.py's view of the same file).
    torch.testing.assert_close(offline_frame_logits(model, clip), streamed, rtol=0, atol=1e-12)
