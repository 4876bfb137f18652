"""Export: the shift's traceable form, ONNX (onnxruntime) and torch.export (.pt2) parity, refusals, CLI."""
import json
import types

import numpy as np
import onnx
import pytest
import torch

from ops.export import ExportError, compare, export_onnx, export_pt2, load_exported
from ops.models import TSN
from ops.temporal_modules import TemporalConfig
from ops.temporal_shift import shift, shift_for_export
from conftest import load_script

MODELS = {
    'tsm_r18': dict(base_model='resnet18', temporal=TemporalConfig('tsm')),
    'tsn_r18': dict(base_model='resnet18'),
    'tsm_mbv2': dict(base_model='mobilenetv2', temporal=TemporalConfig('tsm')),
    'tin_r18': dict(base_model='resnet18', temporal=TemporalConfig('tin')),
    'tdn_r18': dict(base_model='resnet18', temporal=TemporalConfig('tdn')),
    'msn_r18': dict(base_model='resnet18', temporal=TemporalConfig('msn')),
}


def tiny(kind, seed=0):
    """A random eval model with non-trivial logits: BN statistics and affines and the head drawn."""
    torch.manual_seed(seed)
    model = TSN(5, 4, 'RGB', pretrain='none', input_size=32, dropout=0.5, **MODELS[kind])
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        model.new_fc.weight.normal_(0, 1.0, generator=g)
    return model.eval()


def clips(model, n=3, seed=1):
    return torch.randn(n, model.input_channels, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('fold_div', [2, 4, 8])
def test_shift_for_export_equals_the_training_shift(fold_div):
    x = torch.arange(2 * 3 * 8 * 2 * 2, dtype=torch.float32).reshape(6, 8, 2, 2)
    expected = shift(x, 3, fold_div)
    assert torch.equal(shift_for_export(x, 3, fold_div), expected)
    x5, e5, fold = x.view(2, 3, 8, 2, 2), expected.view(2, 3, 8, 2, 2), 8 // fold_div
    assert torch.equal(e5[:, :2, :fold], x5[:, 1:, :fold]) and not e5[:, 2, :fold].any()
    cl = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(shift_for_export(cl, 3, fold_div), expected)


def test_tracing_uses_the_traceable_shift():
    class Shift(torch.nn.Module):
        def forward(self, x):
            return shift(x, 2, 4)
    x = torch.randn(4, 8, 3, 3)
    traced = torch.jit.trace(Shift(), (x,))
    assert 'aten::cat' in str(traced.graph) and 'PythonOp' not in str(traced.graph)
    y = torch.randn(6, 8, 3, 3)          # another batch: the traced graph shifts it too
    assert torch.equal(traced(y), shift(y, 2, 4))


def test_onnx_tsm_keeps_the_shift(tmp_path):
    model = tiny('tsm_r18')
    path = str(tmp_path / 'tsm.onnx')
    export_onnx(model, clips(model)[:2], path)
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert {'Slice', 'Concat'} <= ops
    x = clips(model)
    result = compare(model, load_exported(path), x)
    assert result['max_abs_diff'] < 1e-4 * result['max_abs_logit'] and result['top1_agreement'] == 1.0
    # the same weights without the shift give other logits: the check above can see a dropped shift
    plain = TSN(5, 4, 'RGB', base_model='resnet18', pretrain='none', input_size=32, dropout=0.5).eval()
    plain.load_state_dict({k.replace('.net.', '.'): v for k, v in model.state_dict().items()})
    with torch.no_grad():
        assert (plain(x) - model(x)).abs().max() > 100 * result['max_abs_diff'] + 1e-3
    # dynamic batch: exported with 2 clips, run with 1 and 3
    run = load_exported(path)
    with torch.no_grad():
        for n in (1, 3):
            np.testing.assert_allclose(run(x[:n].numpy()), model(x[:n]).numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['tsn_r18', 'tsm_mbv2', 'tin_r18', 'tdn_r18', 'msn_r18'])
def test_onnx_parity(tmp_path, kind):
    model = tiny(kind)
    path = str(tmp_path / f'{kind}.onnx')
    opset = export_onnx(model, clips(model)[:2], path, meta={'config': json.dumps(model.config())})
    assert opset == (19 if kind == 'msn_r18' else 17)
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert json.loads(meta['config'])['num_class'] == 5
    result = compare(model, load_exported(path), clips(model))
    assert result['max_abs_logit'] > 0.1
    assert result['max_abs_diff'] < 1e-4 * result['max_abs_logit'] and result['top1_agreement'] == 1.0


@pytest.mark.slow
def test_pt2_parity(tmp_path):
    # TDN and MSN (deform_conv2d as a torchvision op) export the same way; slower, checked by hand (note).
    model = tiny('tsm_r18')
    path = str(tmp_path / 'tsm.pt2')
    export_pt2(model, clips(model)[:2], path, meta={'kind': 'tsm_r18'})
    result = compare(model, load_exported(path), clips(model))
    assert result['max_abs_logit'] > 0.1 and result['max_abs_diff'] < 1e-5 * result['max_abs_logit']


def test_msn_onnx_below_opset_19_is_refused(tmp_path):
    model = tiny('msn_r18')
    with pytest.raises(ExportError, match=r'DeformConv needs opset >= 19.*--format pt2'):
        export_onnx(model, clips(model)[:1], str(tmp_path / 'msn.onnx'), opset=17)


@pytest.mark.slow
def test_export_cli_checks_real_clips_and_exit_code(tmp_path, tiny_checkpoint, write_mp4, run_cli):
    ckpt = tiny_checkpoint(tmp_path / 'tsm.pth.tar', 'RGB', 0, random_bn_stats=True)
    video = write_mp4(str(tmp_path / 'clip.mp4'), 12)
    run = run_cli(['scripts/export.py', '--weights', ckpt, '--format', 'onnx', '--output', str(tmp_path / 'm.onnx'),
                   '--check', video, '--atol', '1e-12', '--batch', '1'], cwd=tmp_path, check=False)
    assert 'exported' in run.stdout and 'batch 1' in run.stdout and 'parity on 1 real clips from' in run.stdout
    if 'max |exported - eager| 0 ' in run.stdout:     # onnxruntime happened to round exactly like eager
        assert run.returncode == 0 and '-> OK' in run.stdout
    else:
        assert run.returncode == 1 and '-> FAILED' in run.stdout
    bad = run_cli(['scripts/export.py', '--weights', ckpt, '--format', 'pt2', '--output', str(tmp_path / 'm.onnx')],
                  cwd=tmp_path, check=False)
    assert bad.returncode == 2 and 'must end in .pt2' in bad.stderr


def test_export_metadata_carries_the_class_names_main_py_records(tmp_path, tiny_checkpoint):
    # main.py stores the training set's class names as data.categories (ops.dataset_config.data_record),
    # converted files as class_names: both reach the exported file's metadata.
    from ops.checkpoint import load_checkpoint, save_checkpoint
    from ops.export import load_model, metadata
    path = tiny_checkpoint(tmp_path / 'tsm.pth.tar', 'RGB', 0)
    state = load_checkpoint(path)
    categories = [f'class {i}' for i in range(8)]
    save_checkpoint(dict(state, data={'dataset': 'toy', 'categories': categories}), path)
    model, config, names = load_model(path)
    assert names == categories
    onnx_path = str(tmp_path / 'tsm.onnx')
    export_onnx(model, clips(model)[:1], onnx_path, meta=metadata(model, config, names, 32, path))
    meta = {p.key: p.value for p in onnx.load(onnx_path).metadata_props}
    assert json.loads(meta['class_names']) == categories
    save_checkpoint(dict(state, data={'categories': categories}, class_names=list('abcdefgh')), path)
    assert load_model(path)[2] == list('abcdefgh')


def test_export_script_help_and_bad_options(capsys):
    script = load_script('scripts/export.py', 'export_script')
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(['--help'])
    assert exit_info.value.code == 0 and '--check' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        script.parse_args(['--weights', script.__file__, '--format', 'onnx', '--batch', 'many'])
    assert "--batch 'many'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(['--weights', script.__file__, '--format', 'onnx', '--opset', '5'])
    assert exit_info.value.code == 2 and '--opset 5' in capsys.readouterr().err


def test_check_clips_are_normalised_like_the_float_transform(tmp_path, tiny_checkpoint, write_mp4):
    from ops.export import load_model
    script = load_script('scripts/export.py', 'export_script_clips')
    ckpt = tiny_checkpoint(tmp_path / 'tsm.pth.tar', 'RGB', 0)
    video = write_mp4(str(tmp_path / 'clip.mp4'), 12)
    model = load_model(ckpt)[0]
    clips = script.real_clips(types.SimpleNamespace(weights=ckpt, check=[video], max_clips=2), model)
    assert clips.dtype == torch.float32
    # ImageNet-normalised pixels lie in [-2.2, 2.7]; raw 0-255 values would not
    assert clips.min() >= -2.2 and clips.max() <= 2.7 and clips.std() > 0.05


def test_check_clips_stop_at_max_clips(tmp_path, tiny_checkpoint, write_mp4, capsys):
    # One view per video: with --max_clips 1 the frame folder after the video is never probed.
    from ops.export import load_model
    script = load_script('scripts/export.py', 'export_script_max_clips')
    ckpt = tiny_checkpoint(tmp_path / 'tsm.pth.tar', 'RGB', 0)
    video = write_mp4(str(tmp_path / 'clip.mp4'), 12)
    frames = tmp_path / 'frames'
    frames.mkdir()
    (frames / 'not_the_template.jpg').write_bytes(b'')     # a frame folder whose probe reports an error
    model = load_model(ckpt)[0]
    for max_clips, probed in ((1, False), (2, True)):
        clips = script.real_clips(types.SimpleNamespace(weights=ckpt, check=[video, str(frames)],
                                                        max_clips=max_clips), model)
        assert len(clips) == 1
        assert (str(frames) in capsys.readouterr().err) == probed


@pytest.mark.parametrize('modality,arch', [('Layout', 'stlt_tiny'), ('Audio', 'resnet18')])
def test_audio_and_layout_models_are_refused_by_export_naming_the_modality(tmp_path, modality, arch):
    from ops.checkpoint import save_checkpoint
    from ops.export import load_model
    from ops.models import TSN
    model = TSN(8, 4, modality, base_model=arch, pretrain='none', input_size=32)
    path = save_checkpoint({'epoch': 1, 'state_dict': model.state_dict(), 'config': model.config()},
                           str(tmp_path / f'{modality}.pth.tar'))
    with pytest.raises(ExportError, match=f'is a {modality} model; export handles the image modalities'):
        load_model(path)
