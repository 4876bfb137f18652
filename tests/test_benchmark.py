"""scripts/benchmark.py: every subcommand runs with tiny settings and prints the JSON fields it promises."""
import json

import pytest

TINY_MODEL = ['--arch', 'resnet18', '--num_segments', '2', '--input_size', '32', '--batch_size', '2',
              '--warmup', '0', '--repeats', '1', '--threads', '1', '--device', 'cpu']


def bench(run_cli, tmp_path, *argv):
    out = run_cli(['scripts/benchmark.py', *argv, '--json'], cwd=tmp_path).stdout
    result = json.loads(out.strip().splitlines()[-1])
    for key in ('device', 'torch', 'date', 'threads', 'load_before', 'load_after'):
        assert key in result['env']
    return result


def test_help_lists_every_subcommand(run_cli, tmp_path):
    out = run_cli(['scripts/benchmark.py', '--help'], cwd=tmp_path).stdout
    for sub in ('peak', 'train', 'fastpath', 'infer', 'data', 'shift', 'mml', 'vs_reference'):
        assert sub in out


def test_peak(run_cli, tmp_path):
    r = bench(run_cli, tmp_path, 'peak', '--size', '64', '--repeats', '1', '--threads', '1', '--device', 'cpu')
    assert set(r['peak']) == {'fp32', 'bf16'}
    assert all(v['gflops'] > 0 for v in r['peak'].values())


@pytest.mark.slow
@pytest.mark.parametrize('extra', [['--shift'], ['--plain', '--amp', 'bf16', '--channels_last'],
                                   ['--arch', 'swin3d_toy']])
def test_train(run_cli, tmp_path, extra):
    r = bench(run_cli, tmp_path, 'train', *TINY_MODEL, '--peak_size', '64', *extra)
    for key in ('ms_per_step', 'clips_per_s', 'achieved_gflops', 'gflops_per_clip_fwd', 'ratio_to_peak',
                'peak_mem_mb', 'peak_gflops'):
        assert r[key] > 0, key
    assert r['peak_dtype'] == ('bf16' if '--amp' in extra else 'fp32')
    assert r['plain'] == ('--plain' in extra)


@pytest.mark.slow
def test_fastpath_runs_each_config_and_reports_speedup(run_cli, tmp_path):
    r = bench(run_cli, tmp_path, 'fastpath', *TINY_MODEL, '--shift', '--no_peak', '--configs', 'fp32,bf16')
    assert [run['config'] for run in r['runs']] == ['fp32', 'bf16']
    assert r['runs'][0]['speedup'] == 1.0 and r['runs'][1]['amp'] == 'bf16'


def test_fastpath_rejects_unknown_config(run_cli, tmp_path):
    proc = run_cli(['scripts/benchmark.py', 'fastpath', '--configs', 'fp32,fp8'], cwd=tmp_path, check=False)
    assert proc.returncode != 0 and 'fp8' in proc.stderr


@pytest.mark.slow
def test_infer_counts_views(run_cli, tmp_path):
    r = bench(run_cli, tmp_path, 'infer', *TINY_MODEL, '--shift', '--test_crops', '3', '--num_clips', '2')
    assert r['views'] == 6 and r['videos_per_s'] > 0
    assert r['views_per_s'] == pytest.approx(6 * r['videos_per_s'])


@pytest.mark.slow
def test_data_every_case(run_cli, tmp_path):
    r = bench(run_cli, tmp_path, 'data', '--num_videos', '2', '--num_frames', '12', '--width', '64', '--height', '48',
              '--input_size', '32', '--num_segments', '2', '--samples', '2', '--warmup', '1', '--threads', '1')
    cases = {c['case']: c for c in r['cases']}
    from ops.video_io import available_video_backends
    videos = {f'rgb-video-{b}' for b in available_video_backends()}
    assert set(cases) == {'rgb-frames', 'rgb-hdf5', 'flow-frames', 'flow-hdf5', 'rgbdiff-frames', 'rgbdiff-hdf5',
                          'audio-video', 'audio-frames', 'audio-hdf5', 'layout-frames'} | videos
    # T * frames per segment * C; Audio: one 3-channel spectrogram image per segment
    channels = {'rgb': 2 * 3, 'flow': 2 * 5 * 2, 'rgbdiff': 2 * 6 * 3, 'audio': 2 * 3}
    for name, c in cases.items():
        assert c['clips_per_s'] > 0
        assert 0 < c['decode_share'] < 1 and 0 < c['transform_share'] < 1
        layout = [2 * 6, 14, 1]                        # T * (category, score, box), 14 box slots
        assert c['clip_shape'] == (layout if name == 'layout-frames' else [channels[name.split('-')[0]], 32, 32])


@pytest.mark.slow
def test_shift(run_cli, tmp_path):
    r = bench(run_cli, tmp_path, 'shift', '--arch', 'resnet18', '--num_segments', '2', '--batch_size', '1',
              '--input_size', '64', '--warmup', '0', '--repeats', '1', '--threads', '1', '--backward')
    assert [s['stage'] for s in r['stages']] == ['layer1', 'layer2', 'layer3', 'layer4']
    assert r['stages'][0]['shape'] == [2, 64, 16, 16]
    for s in r['stages']:
        assert s['shift_per_conv'] > 0 and s['tin_per_conv'] > 0 and s['conv_fwdbwd_ms'] > 0
    assert 0 < r['shift_share_of_blocks'] < 1


@pytest.mark.slow
def test_mml_two_gloo_ranks(run_cli, tmp_path):
    r = bench(run_cli, tmp_path, 'mml', '--world_sizes', '2', '--arch', 'resnet18', '--num_segments', '2',
              '--input_size', '32', '--batch_size', '2', '--warmup', '1', '--repeats', '2', '--threads', '2')
    (run,) = r['runs']
    assert run['world_size'] == 2 and run['logits_shape'] == [2, 174]
    assert run['exchange_ms'] > 0 and run['step_ms'] > 0 and 0 < run['exchange_share'] < 1


@pytest.mark.parametrize('temporal', [dict(module='msn'), dict(module='tsm', non_local=True)])
def test_to_channels_last_handles_5d_weights(temporal):
    # model.to(memory_format=torch.channels_last) raises on Conv3d weights; the helper converts 4-D only.
    import torch
    from ops.models import TSN, to_channels_last
    from ops.temporal_modules import TemporalConfig
    torch.manual_seed(0)
    model = TSN(5, 2, 'RGB', base_model='resnet18', pretrain='none', dropout=0,
                temporal=TemporalConfig(**temporal)).eval()
    x = torch.randn(1, model.input_channels, 32, 32)
    with torch.no_grad():
        ref = model(x)
        assert to_channels_last(model) is model
        out = model(x.contiguous(memory_format=torch.channels_last))
    for p in model.parameters():
        if p.dim() == 4:
            assert p.is_contiguous(memory_format=torch.channels_last)
    assert any(p.dim() == 5 for p in model.parameters())
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
