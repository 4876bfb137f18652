"""scripts/convert_checkpoint.py: released TDN / mmaction2 key layouts become loadable checkpoints.

The source state dicts are written here with the released key layouts (spelled out below from TDN's
ops/tdn_net.py + ops/base_module.py and mmaction2's resnet / resnet_tsm / resnet_tin backbones),
including TDN's conv biases, and must convert to a model that computes the same function.
"""
import re
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'scripts'))

import convert_checkpoint as cc  # noqa: E402
from ops.checkpoint import load_checkpoint  # noqa: E402
from ops.export import load_model  # noqa: E402
from ops.models import TSN  # noqa: E402
from ops.temporal_modules import TemporalConfig  # noqa: E402

# Hand-written from TDN's code: module of TDN_Net / BottleneckShift / mSEModule -> this project's.
TDN_GOLDEN = {
    'base_model.conv1.weight': 'base_model.conv1.weight',
    'base_model.bn1.running_mean': 'base_model.bn1.running_mean',
    'base_model.conv1_5.0.weight': 'base_model.short_term.conv.weight',
    'base_model.conv1_5.1.running_var': 'base_model.short_term.bn.running_var',
    'base_model.resnext_layer1.2.conv3.weight': 'base_model.motion_layer1.2.conv3.weight',
    'base_model.layer1_bak.0.downsample.0.weight': 'base_model.layer1.0.downsample.0.weight',
    'base_model.layer3_bak.5.bn2.weight': 'base_model.layer3.5.bn2.weight',
    'base_model.layer2_bak.1.mse.conv1.weight': 'base_model.layer2.1.excite.reduce.weight',
    'base_model.layer2_bak.1.mse.bn1.bias': 'base_model.layer2.1.excite.reduce_bn.bias',
    'base_model.layer2_bak.1.mse.conv2.weight': 'base_model.layer2.1.excite.smooth.weight',
    'base_model.layer4_bak.0.mse.conv3_smallscale2.weight': 'base_model.layer4.0.excite.coarse.weight',
    'base_model.layer4_bak.0.mse.bn3_smallscale2.running_mean': 'base_model.layer4.0.excite.coarse_bn.running_mean',
    'base_model.layer4_bak.0.mse.conv3_smallscale4.weight': 'base_model.layer4.0.excite.fine.weight',
    'base_model.layer4_bak.0.mse.bn3_smallscale4.weight': 'base_model.layer4.0.excite.fine_bn.weight',
    'base_model.layer2_bak.3.mse.conv3.weight': 'base_model.layer2.3.excite.expand.weight',
    'base_model.layer2_bak.3.mse.bn3.bias': 'base_model.layer2.3.excite.expand_bn.bias',
    'base_model.layer3_bak.0.shift.conv.weight': 'base_model.layer3.0.shift.conv.weight',
    'new_fc.weight': 'new_fc.weight',
}

MMACTION2_GOLDEN = {
    'backbone.conv1.conv.weight': 'base_model.conv1.weight',
    'backbone.conv1.bn.running_mean': 'base_model.bn1.running_mean',
    'backbone.layer1.0.conv1.conv.net.weight': 'base_model.layer1.0.conv1.net.weight',     # TSM
    'backbone.layer1.0.conv1.conv.weight': 'base_model.layer1.0.conv1.weight',             # TSN
    'backbone.layer1.0.conv1.bn.weight': 'base_model.layer1.0.bn1.weight',
    'backbone.layer3.1.conv2.bn.num_batches_tracked': 'base_model.layer3.1.bn2.num_batches_tracked',
    'backbone.layer2.0.downsample.conv.weight': 'base_model.layer2.0.downsample.0.weight',
    'backbone.layer2.0.downsample.bn.bias': 'base_model.layer2.0.downsample.1.bias',
    'backbone.layer4.1.conv1.conv.net1.offset_net.fc2.bias': 'base_model.layer4.1.conv1.offset_net.fc2.bias',
    'backbone.layer4.1.conv1.conv.net1.weight_net.conv.weight': 'base_model.layer4.1.conv1.weight_net.conv.weight',
    'backbone.layer4.1.conv1.conv.net2.weight': 'base_model.layer4.1.conv1.net.weight',      # TIN
    'cls_head.fc_cls.weight': 'new_fc.weight',
}


def test_key_rules_match_the_released_layouts():
    for src, dst in TDN_GOLDEN.items():
        assert cc.tdn_key(src) == dst, src
    for src, dst in MMACTION2_GOLDEN.items():
        assert cc.mmaction2_key(src) == dst, src
    assert cc.tdn_key('base_model.layer2_bak.0.mse.conv_mask.weight') is None
    assert cc.mmaction2_key('some_other_head.weight') is None


def _randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype.is_floating_point:
                if name.endswith('running_var'):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                elif name.endswith('shift.conv.weight'):
                    t.add_(0.1 * torch.randn(t.shape, generator=g))
                else:
                    t.copy_(0.3 * torch.randn(t.shape, generator=g))
    return model.eval()


def _to_tdn_layout(own):
    """This project's TDN state dict -> TDN's release layout, written from TDN's module names; every
    ResNet conv gets a bias b (TDN's convs have one), compensated in the next BN as running_mean + b."""
    mse = {'reduce': 'conv1', 'reduce_bn': 'bn1', 'smooth': 'conv2', 'coarse': 'conv3_smallscale2',
           'coarse_bn': 'bn3_smallscale2', 'fine': 'conv3_smallscale4', 'fine_bn': 'bn3_smallscale4',
           'expand': 'conv3', 'expand_bn': 'bn3'}
    g = torch.Generator().manual_seed(7)
    out, biases = {}, 0
    for k, v in own.items():
        t = k.replace('base_model.short_term.conv.', 'base_model.conv1_5.0.')
        t = t.replace('base_model.short_term.bn.', 'base_model.conv1_5.1.')
        t = t.replace('base_model.motion_layer1.', 'base_model.resnext_layer1.')
        t = re.sub(r'^base_model\.layer(\d)\.', r'base_model.layer\1_bak.', t)
        t = re.sub(r'\.excite\.([a-z_]+)\.', lambda m: f'.mse.{mse[m.group(1)]}.', t)
        out['module.' + t] = v.clone()
    for k in list(out):
        m = re.match(r'^(module\.base_model\.(?:.*\.)?)(conv[123]|downsample\.0)\.weight$', k)
        if m and '.mse.' not in k and 'conv1_5' not in k:
            bn = {'conv1': 'bn1', 'conv2': 'bn2', 'conv3': 'bn3', 'downsample.0': 'downsample.1'}[m.group(2)]
            bias = torch.randn(out[k].shape[0], generator=g)
            out[f'{m.group(1)}{m.group(2)}.bias'] = bias
            out[f'{m.group(1)}{bn}.running_mean'] += bias
            biases += 1
    # the unused stem copies TDN keeps in its state dict
    out['module.base_model.conv1_temp.weight'] = torch.randn(64, 3, 7, 7)
    out['module.base_model.conv1_temp.bias'] = torch.randn(64)
    out['module.base_model.conv1_temp1.weight'] = out['module.base_model.conv1_temp.weight']
    out['module.base_model.conv1_temp1.bias'] = out['module.base_model.conv1_temp.bias']
    return out, biases


@pytest.fixture(scope='module')
def tdn_model():
    torch.manual_seed(0)
    return _randomise(TSN(6, 2, 'RGB', base_model='resnet50', temporal=TemporalConfig('tdn'), pretrain='none',
                          dropout=0.5, input_size=32), 1)


@pytest.mark.slow
def test_tdn_release_converts_to_the_same_function(tmp_path, tdn_model, capsys):
    sd, biases = _to_tdn_layout(tdn_model.state_dict())
    assert any(k.endswith('layer2_bak.0.conv2.bias') for k in sd) and biases > 50
    src = tmp_path / 'TDN_release.pth.tar'
    torch.save({'epoch': 100, 'state_dict': sd, 'best_prec1': 77.5}, src)
    out = tmp_path / 'tdn.pth.tar'
    classes = tmp_path / 'classes.txt'
    classes.write_text('\n'.join(f'c{i}' for i in range(6)) + '\n')
    assert cc.main(['tdn', str(src), str(out), '--num_segments', '2', '--category_file', str(classes)]) == 0
    text = capsys.readouterr().out
    assert 'dropped module.base_model.conv1_temp1.weight' in text
    assert 'folded  module.base_model.layer2_bak.0.conv2.bias -> base_model.layer2.0.bn2.running_mean' in text
    assert f'{biases} biases folded' in text
    ckpt = load_checkpoint(str(out))
    assert ckpt['class_names'] == [f'c{i}' for i in range(6)]
    assert ckpt['config']['temporal_module'] == 'tdn' and ckpt['config']['base_model'] == 'resnet50'
    model, _, _ = load_model(str(out))      # the loader of export / test_models / --tune_from
    x = torch.randn(2, model.input_channels, 32, 32, dtype=torch.float64)
    with torch.no_grad():   # float64: what is left is the float32 rounding of running_mean - b
        expected = tdn_model.double()(x)
        assert (model.double()(x) - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_bias_folding_is_exact_for_conv_then_batchnorm():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, bias=True)
    bn = _randomise(torch.nn.BatchNorm2d(4), 2)
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        expected = bn(conv(x))
        sd = {'base_model.conv1.weight': conv.weight, 'base_model.conv1.bias': conv.bias,
              **{f'base_model.bn1.{k}': v for k, v in bn.state_dict().items()}}
        out, report = cc.convert_state_dict('tdn', sd)
        plain = torch.nn.Conv2d(3, 4, 3, bias=False)
        plain.weight.copy_(out['base_model.conv1.weight'])
        folded = torch.nn.BatchNorm2d(4).eval()
        folded.load_state_dict({k[len('base_model.bn1.'):]: v for k, v in out.items() if '.bn1.' in k})
        torch.testing.assert_close(folded(plain(x)), expected)
    assert report['folded'] == [('base_model.conv1.bias', 'base_model.bn1.running_mean')]


def _to_mmaction2_layout(own):
    """This project's TSM / TIN state dict -> mmaction2's (ConvModule conv/bn, TSM .net, TIN net1/net2)."""
    out = {}
    for k, v in own.items():
        if k.startswith('new_fc.'):
            out['cls_head.fc_cls.' + k[len('new_fc.'):]] = v.clone()
            continue
        t = 'backbone.' + k[len('base_model.'):]
        t = re.sub(r'^backbone\.conv1\.', 'backbone.conv1.conv.', t)
        t = re.sub(r'^backbone\.bn1\.', 'backbone.conv1.bn.', t)
        t = re.sub(r'\.conv1\.(offset_net|weight_net)\.', r'.conv1.conv.net1.\1.', t)
        if any('.offset_net.' in key for key in own):
            t = t.replace('.conv1.net.', '.conv1.conv.net2.')
        else:
            t = t.replace('.conv1.net.', '.conv1.conv.net.')
        # residual blocks, also inside a temporal pool (layer2.net.i) or a non-local wrapper (layerK.i.block)
        t = re.sub(r'\.(layer\d\.(?:net\.)?\d+(?:\.block)?)\.conv(\d)\.weight$', r'.\1.conv\2.conv.weight', t)
        t = re.sub(r'\.(layer\d\.(?:net\.)?\d+(?:\.block)?)\.bn(\d)\.', r'.\1.conv\2.bn.', t)
        # mmcv NonLocal3d (sub-sampled): g/phi = Sequential(ConvModule, pool), conv_out = ConvModule(conv, bn)
        t = re.sub(r'\.nl\.(g\.0|theta|phi\.0)\.', r'.non_local_block.\1.conv.', t)
        t = t.replace('.nl.W.0.', '.non_local_block.conv_out.conv.')
        t = t.replace('.nl.W.1.', '.non_local_block.conv_out.bn.')
        t = t.replace('.downsample.0.', '.downsample.conv.').replace('.downsample.1.', '.downsample.bn.')
        if not t.endswith('conv_out.conv.bias'):      # mmcv's conv_out has no bias
            out[t] = v.clone()
    return out


@pytest.mark.parametrize('module', ['tsm', 'tin', None])
def test_mmaction2_release_round_trip(tmp_path, module):
    torch.manual_seed(0)
    model = _randomise(TSN(5, 4, 'RGB', base_model='resnet18', pretrain='none', dropout=0.5, input_size=32,
                           temporal=TemporalConfig(module)), 3)
    mm = _to_mmaction2_layout(model.state_dict())
    assert ('backbone.layer1.0.conv1.conv.net.weight' in mm) == (module == 'tsm')
    src = tmp_path / 'mm.pth'
    torch.save({'meta': {'mmaction_version': '1.2.0'}, 'state_dict': mm}, src)
    report, config = cc.convert('mmaction2', str(src), str(tmp_path / 'out.pth.tar'), num_segments=4)
    assert config['temporal_module'] == module and not report['dropped']
    converted = load_checkpoint(str(tmp_path / 'out.pth.tar'))['state_dict']
    for k, v in model.state_dict().items():
        assert torch.equal(converted[k], v), k
    rebuilt, _, _ = load_model(str(tmp_path / 'out.pth.tar'))
    x = torch.randn(1, 12, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


def test_missing_tensor_and_bad_files_are_errors(tmp_path, capsys):
    torch.manual_seed(0)
    model = TSN(5, 4, 'RGB', base_model='resnet18', temporal=TemporalConfig('tsm'), pretrain='none', dropout=0.5)
    mm = _to_mmaction2_layout(model.state_dict())
    del mm['backbone.layer2.1.conv2.conv.weight']
    mm['backbone.extra_thing.weight'] = torch.zeros(1)
    torch.save({'state_dict': mm}, tmp_path / 'mm.pth')
    assert cc.main(['mmaction2', str(tmp_path / 'mm.pth'), str(tmp_path / 'o.pth.tar')]) == 1
    err = capsys.readouterr().err
    assert 'base_model.layer2.1.conv2.weight' in err and 'not in the file' in err
    assert not (tmp_path / 'o.pth.tar').exists()
    torch.save({'epoch': 3}, tmp_path / 'empty.pth')
    assert cc.main(['tdn', str(tmp_path / 'empty.pth'), str(tmp_path / 'o.pth.tar')]) == 1
    assert 'no state dict' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cc.main(['caffe', str(tmp_path / 'empty.pth'), str(tmp_path / 'o.pth.tar')])
    assert "invalid choice: 'caffe'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cc.main(['tdn', str(tmp_path / 'empty.pth'), str(tmp_path / 'o.pth.tar'), '--num_segments', '0'])
    assert exit_info.value.code == 2 and '--num_segments must be >= 1' in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cc.main(['--help'])
    assert exit_info.value.code == 0 and 'folded into the BatchNorm that follows' in capsys.readouterr().out


def test_mmaction2_non_local_and_temporal_pool_tsm_convert_or_are_refused_with_the_reason(tmp_path, capsys):
    torch.manual_seed(0)
    nl = _randomise(TSN(5, 4, 'RGB', base_model='resnet18', temporal=TemporalConfig('tsm', non_local=True),
                        pretrain='none', dropout=0.5, input_size=32), 4)
    with torch.no_grad():
        for m in nl.modules():
            if m.__class__.__name__ == 'NonLocalBlock3D':
                m.W[0].bias.zero_()                       # mmcv's conv_out has none: the same function
    mm = _to_mmaction2_layout(nl.state_dict())
    # the layout written from mmaction2's NL3DWrapper(block, non_local_block=NonLocal3d) and ResNetTSM
    for key in ('backbone.layer2.0.block.conv1.conv.net.weight', 'backbone.layer2.0.block.conv2.bn.running_var',
                'backbone.layer3.0.non_local_block.g.0.conv.weight',
                'backbone.layer2.0.non_local_block.theta.conv.bias',
                'backbone.layer2.0.non_local_block.phi.0.conv.weight',
                'backbone.layer2.0.non_local_block.conv_out.conv.weight',
                'backbone.layer2.0.non_local_block.conv_out.bn.running_mean'):
        assert key in mm, key
    assert not any(k.endswith('conv_out.conv.bias') for k in mm)
    src, out = tmp_path / 'nl.pth', tmp_path / 'nl.pth.tar'
    torch.save({'state_dict': mm}, src)
    # The tensors of mmcv's embedded_gaussian and dot_product modes are the same: the mode must be said.
    assert cc.main(['mmaction2', str(src), str(out), '--num_segments', '4']) == 1
    err = capsys.readouterr().err
    assert 'pass --non_local_mode' in err and 'not in the file' not in err and not out.exists()
    assert cc.main(['mmaction2', str(src), str(out), '--num_segments', '4', '--non_local_mode', 'dot_product']) == 1
    assert "mmcv's mode 'dot_product'" in capsys.readouterr().err and not out.exists()
    assert cc.main(['mmaction2', str(src), str(out), '--num_segments', '4', '--non_local_mode',
                    'embedded_gaussian']) == 0
    text = capsys.readouterr().out
    assert 'zeros   base_model.layer2.0.nl.W.0.bias' in text and 'resnet18 + tsm + non-local' in text
    converted = load_checkpoint(str(out))
    assert converted['config']['non_local'] is True
    for k, v in nl.state_dict().items():
        assert torch.equal(converted['state_dict'][k], v), k
    rebuilt, _, _ = load_model(str(out))
    x = torch.randn(1, 12, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), nl(x), rtol=0, atol=0)
    # An mmengine checkpoint that saved its config text needs no flag.
    cfg = "model = dict(backbone=dict(non_local_cfg=dict(sub_sample=True, mode='embedded_gaussian')))"
    torch.save({'meta': {'cfg': cfg}, 'state_dict': mm}, src)
    assert cc.convert('mmaction2', str(src), str(out), num_segments=4)[1]['non_local'] is True
    # mmcv's 'gaussian' mode has no theta/phi convolutions, and blocks without sub-sampling no pool.
    gauss = {k: v for k, v in mm.items() if '.theta.' not in k and '.phi.' not in k}
    torch.save({'state_dict': gauss}, src)
    with pytest.raises(ValueError, match="no theta/phi convolutions: mmcv's mode 'gaussian'"):
        cc.convert('mmaction2', str(src), str(out), num_segments=4, non_local_mode='gaussian')
    flat = {k.replace('.g.0.conv.', '.g.conv.'): v for k, v in mm.items()}
    torch.save({'state_dict': flat}, src)
    with pytest.raises(ValueError, match=r'sub_sample=False'):
        cc.convert('mmaction2', str(src), str(out), num_segments=4, non_local_mode='embedded_gaussian')
    with pytest.raises(ValueError, match=r'non-local blocks and temporal pooling: .*unpooled number of segments'):
        cc.check_mmaction2_non_local(list(mm), 'embedded_gaussian', temporal_pool=True)

    # Temporal pooling: mmaction2 wraps layer2 as TemporalPool(net=layer2) -> backbone.layer2.net.i.*
    tp = _randomise(TSN(5, 4, 'RGB', base_model='resnet18', temporal=TemporalConfig('tsm', temporal_pool=True),
                        pretrain='none', dropout=0.5, input_size=32), 5)
    mm = _to_mmaction2_layout(tp.state_dict())
    assert 'backbone.layer2.net.0.conv1.conv.net.weight' in mm and 'backbone.layer2.net.1.conv2.bn.bias' in mm
    torch.save({'state_dict': mm}, src)
    report, config = cc.convert('mmaction2', str(src), str(out), num_segments=4)
    assert config['temporal_pool'] is True and not report['dropped']
    rebuilt, _, _ = load_model(str(out))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), tp(x), rtol=0, atol=0)
