"""Backbones, the TSN wrapper, partial BN and optimiser groups."""

import pytest
import torch
import torch.nn as nn
import torchvision

import archs
from ops.modality import mean_expand_kernel, replace_first_conv
from ops.models import TSN, is_temporal
from ops.temporal_modules import (FLAG_INSERTS, MOTION_MODULES, TEMPORAL_MODULES, Insert, MotionNetwork,
                                  TemporalConfig, backbone_entry, backbone_models_time, motion_module_of,
                                  shift_places_of, temporal_modules_of)
from ops.temporal_shift import SHIFT_PLACES

H = 32  # tiny frames keep every forward/backward fast on CPU


def _variant(name, modalities=('RGB', 'Flow', 'RGBDiff'), size=H, **kw):
    return [pytest.param(name, m, size, kw, id=f'{name}-{m}') for m in modalities]


TSM = TemporalConfig('tsm')
TSM_NL = TemporalConfig('tsm', non_local=True)

# (id, modality, frame size, TSN keywords). Extend here for new backbones / temporal modules.
MODEL_VARIANTS = (
    _variant('r18-tsn', base_model='resnet18')
    + _variant('r18-tsm-blockres', base_model='resnet18', temporal=TSM)
    + _variant('r18-tsm-block', base_model='resnet18', temporal=TemporalConfig('tsm', shift_place='block'))
    + _variant('r18-tsm-tpool', base_model='resnet18', temporal=TemporalConfig('tsm', temporal_pool=True))
    + _variant('r18-nl', base_model='resnet18', temporal=TemporalConfig(non_local=True))
    + _variant('r18-tsm-nl-tpool', ('RGB',), base_model='resnet18',
               temporal=TemporalConfig('tsm', non_local=True, temporal_pool=True))
    + _variant('r18-dropout0-identity', ('RGB',), base_model='resnet18', dropout=0.0, consensus_type='identity')
    + _variant('r34-tsm', ('RGB',), base_model='resnet34', temporal=TSM)
    + _variant('r50-tsm-nl', ('Flow',), base_model='resnet50', temporal=TSM_NL)
    + _variant('mbv2-tsm', ('RGB', 'Flow'), base_model='mobilenetv2', temporal=TSM)
    + _variant('bninception-tsm-block', ('RGB', 'RGBDiff'), base_model='BNInception',
               temporal=TemporalConfig('tsm', shift_place='block'))
    + _variant('r18-tin', ('RGB',), base_model='resnet18', temporal=TemporalConfig('tin'))
    + _variant('msn-r18', ('RGB',), base_model='resnet18', temporal=TemporalConfig('msn'))
    + _variant('tdn-r18', ('RGB',), base_model='resnet18', temporal=TemporalConfig('tdn'))
    + _variant('ila-tiny', ('RGB',), base_model='ila_vit_tiny', input_size=H)
    + _variant('swin3d-toy', ('RGB', 'Flow'), base_model='swin3d_toy', input_size=H)
    + _variant('stlt-tiny', ('Layout',), base_model='stlt_tiny')
)

T = 2


def _make(modality, num_class=5, **kw):
    kw.setdefault('pretrain', 'none')
    return TSN(num_class, T, modality, **kw)


def _input(model, batch=2, size=H):
    torch.manual_seed(0)
    if model.modality == 'Layout':     # (category, score, box) of 14 box slots per frame, ops/layout.py
        return torch.rand(batch, model.input_channels, 14, 1)
    return torch.rand(batch, model.input_channels, size, size)


@pytest.mark.parametrize('name, modality, size, kw', MODEL_VARIANTS)
def test_forward_backward(name, modality, size, kw):
    model = _make(modality, **kw).train()
    out = model(_input(model, size=size))
    expected = (2, 5) if model.consensus_type == 'avg' else (2, T, 5)
    assert out.shape == expected
    assert torch.isfinite(out).all()
    loss = out.float().pow(2).mean()
    if model.aux_loss is not None:
        loss = loss + model.aux_loss
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad


def _family(name):
    return archs.BACKBONES[name].family


def test_every_backbone_family_has_a_forward_backward_variant():
    tested = {_family(backbone_entry(v.values[3]['base_model'], v.values[3].get('temporal', TemporalConfig()).module))
              for v in MODEL_VARIANTS}
    missing = sorted(name for name in archs.BACKBONES if _family(name) not in tested)
    assert not missing, f'no MODEL_VARIANTS entry builds the family of {missing}'


@pytest.mark.slow
@pytest.mark.parametrize('arch', ['resnet101', 'resnet152'])
def test_deep_resnets_smoke(arch):
    model = _make('RGB', base_model=arch, temporal=TSM_NL).train()
    out = model(_input(model, batch=1))
    out.sum().backward()
    assert out.shape == (1, 5) and torch.isfinite(out).all()


def test_channels_last_matches_contiguous():
    model = _make('RGB', base_model='resnet18', temporal=TemporalConfig('tsm', temporal_pool=True)).eval()
    x = _input(model)
    ref = model(x)
    out = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(out, ref, atol=1e-5)
    nl = _make('RGB', base_model='resnet18', temporal=TSM_NL).eval()  # Conv3d stays 5-D
    assert torch.allclose(nl(x.contiguous(memory_format=torch.channels_last)), nl(x), atol=1e-5)


def test_input_channel_check():
    model = _make('Flow', base_model='resnet18')
    assert model.input_channels == T * 5 * 2
    with pytest.raises(ValueError, match=rf'expected input \(B, {T * 10}'):
        model(torch.zeros(1, 24, H, H))


def test_rgbdiff_differences_inside_model():
    model = _make('RGBDiff', base_model='resnet18')
    assert model.new_length == 5 and model.frames_per_segment == 6
    x = torch.arange(6, dtype=torch.float32).repeat_interleave(3)  # frame k has value k in all channels
    x = x.repeat(T).reshape(1, T * 18, 1, 1)
    d = model._get_diff(x)
    assert d.shape == (1, T * 15, 1, 1)
    assert torch.equal(d, torch.ones_like(d))


def test_first_conv_conversion_values():
    conv = nn.Conv2d(3, 2, 1, bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1., 2., 6.], [0., -3., 0.]]).reshape(2, 3, 1, 1))
        conv.bias.copy_(torch.tensor([0.5, -1.]))
    holder = nn.Sequential(conv)
    replace_first_conv(holder, 10)
    new = holder[0]
    assert new.weight.shape == (2, 10, 1, 1)
    assert torch.equal(new.weight[:, :, 0, 0], torch.tensor([[3.] * 10, [-1.] * 10]))  # means, no rescale
    assert torch.equal(new.bias, torch.tensor([0.5, -1.]))
    assert torch.equal(mean_expand_kernel(torch.ones(1, 2, 1, 1) * 4, 15), torch.full((1, 15, 1, 1), 4.))


def _write_resnet18_weights(tmp_path, fmt):
    torch.manual_seed(1)
    sd = torchvision.models.resnet18(weights=None).state_dict()
    if fmt == 'safetensors':
        from safetensors.torch import save_file
        path = tmp_path / 'r18.safetensors'
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        path = tmp_path / 'r18.pth'
        torch.save(sd, path)
    return sd, str(path)


@pytest.mark.parametrize('fmt', ['pth', 'safetensors'])
def test_pretrain_local_file_and_flow_stem(tmp_path, fmt):
    sd, path = _write_resnet18_weights(tmp_path, fmt)
    rgb = TSN(5, T, 'RGB', base_model='resnet18', pretrain=path)
    assert torch.equal(rgb.base_model.layer4[1].conv2.weight, sd['layer4.1.conv2.weight'])
    flow = TSN(5, T, 'Flow', base_model='resnet18', pretrain=path, temporal=TSM)
    expected = sd['conv1.weight'].mean(dim=1, keepdim=True).expand(64, 10, 7, 7)
    assert torch.equal(flow.base_model.conv1.weight, expected)
    diff = TSN(5, T, 'RGBDiff', base_model='resnet18', pretrain=path)
    assert diff.base_model.conv1.weight.shape == (64, 15, 7, 7)


def test_pretrain_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        archs.create_backbone('resnet18', pretrain=str(tmp_path / 'nope.pth'))
    bad = tmp_path / 'bad.pth'
    torch.save({'conv1.weight': torch.zeros(64, 3, 7, 7)}, bad)
    with pytest.raises(RuntimeError, match='missing'):
        archs.create_backbone('resnet18', pretrain=str(bad))
    with pytest.raises(ValueError, match='resnet50'):
        archs.create_backbone('resnet5')


def test_mobilenetv2_loads_torchvision_layout(tmp_path):
    tv = torchvision.models.mobilenet_v2(weights=None).eval()
    path = tmp_path / 'mbv2.pth'
    torch.save(tv.state_dict(), path)
    ours = archs.create_backbone('mobilenetv2', pretrain=str(path)).eval()
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(ours(x), tv(x), atol=1e-6)


def test_mobilenetv2_tsm_keys():
    keys = _make('RGB', base_model='mobilenetv2', temporal=TSM).state_dict()
    assert 'base_model.features.3.conv.0.net.weight' in keys  # expanded block with residual
    assert 'base_model.features.2.conv.0.weight' in keys      # stride 2: no residual, not shifted
    assert 'base_model.features.1.conv.0.weight' in keys      # no expansion: not shifted
    assert 'base_model.features.3.conv.7.running_var' in keys
    assert sum(k.endswith('conv.0.net.weight') for k in keys) == 10  # 16 blocks, 10 with a residual


@pytest.mark.parametrize('bad, match', [
    (dict(modality='Depth'), 'modality'), (dict(consensus_type='max'), 'consensus_type'),
    (dict(shift_place='res'), 'shift_place'), (dict(temporal_module='tcn'), 'temporal_module'),
    (dict(first_conv_lr='x5'), 'first_conv_lr'), (dict(is_shift=True, temporal_module='tin'), 'is_shift'),
    (dict(temporal_pool=True), 'temporal_pool needs the temporal shift'),
    (dict(is_shift=True, temporal_pool=True, num_segments=3), 'even num_segments'),
    (dict(shift_direction='uni'), "shift_direction='uni' needs"),
    (dict(temporal_module='msn', modality='Flow'), 'RGB input only')])
def test_unknown_options_raise(bad, match):
    # TSM's flat keywords (a checkpoint's config) go through the same checks as a TemporalConfig.
    kw = dict(num_class=5, num_segments=T, modality='RGB', base_model='resnet18', pretrain='none')
    kw.update(bad)
    with pytest.raises(ValueError, match=match):
        TSN.from_config(kw)


def test_properties_and_config_round_trip():
    model = _make('Flow', base_model='resnet18', temporal=TemporalConfig('tsm', shift_div=4), input_size=112)
    assert (model.crop_size, model.scale_size) == (112, 128)
    assert model.input_mean == [0.5] and model.input_std == pytest.approx([0.226], abs=1e-3)
    cfg = model.config()
    assert (cfg['is_shift'], cfg['temporal_module'], cfg['shift_div']) == (True, 'tsm', 4)
    rebuilt = TSN.from_config(cfg)
    assert rebuilt.config() == cfg and rebuilt.temporal == model.temporal
    bgr = _make('RGB', base_model='BNInception')
    assert bgr.input_mean == [104, 117, 128] and bgr.input_space == 'BGR'


def test_partial_bn_freezes_all_but_first_and_keeps_non_local_trainable():
    model = _make('RGB', base_model='resnet18', temporal=TSM_NL).train()
    bns = [m for m in model.base_model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns[0].training and bns[0].weight.requires_grad
    assert all(not m.training and not m.weight.requires_grad for m in bns[1:])
    nl_bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm3d)]
    assert nl_bns and all(m.training and m.weight.requires_grad for m in nl_bns)
    in_groups = {id(p) for g in model.get_optim_policies() for p in g['params']}
    assert all(id(m.weight) in in_groups and id(m.bias) in in_groups for m in nl_bns)
    stats = bns[3].running_mean.clone()
    model(_input(model))
    assert torch.equal(bns[3].running_mean, stats)
    model.partialBN(False)
    model.train()
    assert all(m.training and m.weight.requires_grad for m in bns)


def _group_sizes(model):
    return {g['name']: (len(g['params']), g['lr_mult'], g['decay_mult']) for g in model.get_optim_policies()}


def test_optim_policies_match_tsm():
    model = _make('RGB', num_class=174, base_model='resnet50', temporal=TSM)
    sizes = _group_sizes(model)
    names = ('first_conv_weight', 'first_conv_bias', 'normal_weight', 'normal_bias', 'BN scale/shift', 'custom_ops',
             'lr5_weight', 'lr10_bias')
    assert [sizes[n][0] for n in names] == [1, 0, 53, 1, 2, 0, 0, 0]  # TSM's R50 counts with partial BN
    model.partialBN(False)
    assert _group_sizes(model)['BN scale/shift'][0] == 106
    flow = _make('Flow', base_model='resnet18', fc_lr5=True)
    sizes = _group_sizes(flow)
    assert sizes['first_conv_weight'][1:] == (5, 1) and sizes['first_conv_bias'][1:] == (10, 0)
    assert sizes['lr5_weight'] == (1, 5, 1) and sizes['lr10_bias'] == (1, 10, 0)
    mml = _group_sizes(_make('Flow', base_model='resnet18', first_conv_lr='mml'))
    assert mml['first_conv_weight'][1] == 1


def test_optim_policies_cover_every_parameter():
    model = _make('RGB', base_model='resnet18', temporal=TSM_NL, partial_bn=False)
    model.extra = nn.Module()
    model.extra.scale = nn.Parameter(torch.ones(3))  # a parameter of an unknown module type
    groups = model.get_optim_policies()
    grouped = [p for g in groups for p in g['params']]
    assert len(grouped) == len({id(p) for p in grouped}) == len(list(model.parameters()))
    assert any(p is model.extra.scale for g in groups if g['name'] == 'custom_ops' for p in g['params'])
    torch.optim.SGD(groups, lr=0.1)


def test_model_info_counts_flops_per_clip(capsys):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'scripts'))
    import model_info
    args = model_info.get_args_parser().parse_args(
        ['--arch', 'resnet18', '--num_segments', '2', '--shift', '--input_size', '32', '--num_class', '3', '--keys'])
    info = model_info.main(args)
    out = capsys.readouterr().out
    assert 'base_model.layer1.0.conv1.net.weight (64, 64, 3, 3)' in out
    assert info['params'] == sum(p.numel() for p in TSN(3, 2, 'RGB', base_model='resnet18', pretrain='none').parameters())
    # a shift adds no FLOPs; two segments cost twice one segment
    one = model_info.count_flops(TSN(3, 1, 'RGB', base_model='resnet18', pretrain='none', input_size=32))
    assert info['flops_per_clip'] == pytest.approx(2 * one, rel=1e-6)


def test_pretrain_imagenet_reads_torchvision_cache(tmp_path, monkeypatch):
    # torchvision looks for IMAGENET1K_V1 in $TORCH_HOME/hub/checkpoints before downloading.
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cache = tmp_path / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    sd, _ = _write_resnet18_weights(tmp_path, 'pth')
    torch.save(sd, cache / url.rsplit('/', 1)[1])
    net = archs.create_backbone('resnet18', pretrain='imagenet')
    assert torch.equal(net.conv1.weight, sd['conv1.weight'])


def test_ila_backbone_options():
    with pytest.raises(ValueError, match='clip_weights'):
        TSN(5, T, 'RGB', base_model='ila_vit_tiny', input_size=H)  # pretrain='imagenet' has no meaning
    with pytest.raises(ValueError, match='clip_weights'):
        TSN(5, T, 'RGB', base_model='resnet18', pretrain='none', backbone_kwargs=dict(clip_weights='clip.pt'))
    model = _make('RGB', base_model='ila_vit_tiny', input_size=H, pretrain=None,
                  backbone_kwargs=dict(clip_weights=None, pair_net='ssv2'))
    cfg = model.config()
    assert cfg['backbone_kwargs'] == dict(clip_weights=None, pair_net='ssv2') and TSN.from_config(cfg).config() == cfg
    assert 'backbone_kwargs' not in _make('RGB', base_model='resnet18').config()   # configs of 2-D models unchanged


@pytest.mark.parametrize('kw, temporal', [
    (dict(base_model='resnet18'), False), (dict(base_model='BNInception'), False),
    (dict(base_model='resnet18', is_shift=True), True), (dict(base_model='resnet18', non_local=True), True),
    (dict(base_model='resnet18', temporal_module='tin'), True),
    (dict(base_model='resnet18', temporal_module='msn'), True), (dict(base_model='tdn_resnet18'), True),
    (dict(base_model='ila_vit_tiny', input_size=H), True), (dict(base_model='swin3d_toy', input_size=H), True),
])
def test_is_temporal_from_config_and_model(kw, temporal):
    # kw: a checkpoint's flat keywords, as test_models.py reads them
    model = TSN.from_config(dict(num_class=5, num_segments=T, modality='RGB', pretrain='none', **kw))
    assert model.is_temporal == is_temporal(model.config()) == temporal
    given = {k: v for k, v in kw.items() if k != 'input_size'}
    assert is_temporal(given) == temporal     # decided before building (test_models.py: per-frame models)


def test_registry_traits_are_consistent():
    for name, entry in archs.BACKBONES.items():
        assert entry.family in ('resnet', 'mobilenetv2', 'bninception', 'msn', 'tdn', 'ila', 'swin3d', 'stlt'), name
        assert set(shift_places_of(name)) <= set(SHIFT_PLACES)
        for module in temporal_modules_of(name):
            if module in MOTION_MODULES:
                variant = backbone_entry(name, module)
                assert motion_module_of(variant) == module == archs.BACKBONES[variant].family
        # a motion network's registry entries are exactly the variants its table entry names
        assert (motion_module_of(name) is not None) == (entry.family in MOTION_MODULES), name
        assert backbone_models_time(name) == (entry.video or entry.family in MOTION_MODULES), name
        assert set(entry.weight_kwargs) <= set(entry.kwargs)
        assert set(entry.recipe_over_dataset) <= {k for k, _ in entry.recipe}
    net = archs.create_backbone('BNInception', pretrain='none')
    assert (net.input_mean, net.input_std, net.flow_mean, net.input_space, net.input_range) == (
        [104, 117, 128], [1, 1, 1], 128, 'BGR', 255)
    with pytest.raises(ValueError, match='resnet18'):
        archs.backbone_traits('resnet5')
    with pytest.raises(ValueError, match='no MSN variant'):
        backbone_entry('resnet152', 'msn')


def test_temporal_module_table_gives_each_backbone_its_modules():
    # What the registry's traits said before they derived from the table.
    assert temporal_modules_of('resnet50') == ('tsm', 'tin', 'msn', 'tdn')
    assert temporal_modules_of('resnet152') == ('tsm', 'tin')              # no MSN/TDN variant
    assert (temporal_modules_of('mobilenetv2'), shift_places_of('mobilenetv2')) == (('tsm',), ('blockres',))
    assert (temporal_modules_of('BNInception'), shift_places_of('BNInception')) == (('tsm',), ('block',))
    assert shift_places_of('resnet18') == SHIFT_PLACES
    for name in ('msn_resnet50', 'tdn_resnet18', 'ila_vit_tiny', 'swin3d_toy', 'stlt'):
        assert temporal_modules_of(name) == shift_places_of(name) == (), name
    assert [name for name, entry in archs.BACKBONES.items()
            if all(insert.defined_for(name) for insert in FLAG_INSERTS.values())] == \
        ['resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152']
    families = {entry.family for entry in archs.BACKBONES.values()}
    for entry in (*TEMPORAL_MODULES.values(), *FLAG_INSERTS.values()):
        assert isinstance(entry, (Insert, MotionNetwork))
        if isinstance(entry, Insert):
            assert set(dict(entry.families)) <= families
    assert MOTION_MODULES == ('msn', 'tdn')


@pytest.mark.parametrize('name', ['resnet18', 'mobilenetv2', 'BNInception'])
def test_registry_shift_places_are_the_places_the_insertion_accepts(name):
    # The registry declares the places for the parser; make_temporal_shift guards its own contract on any
    # module. They must agree.
    for place in SHIFT_PLACES:
        net = archs.create_backbone(name, pretrain='none')
        try:
            TEMPORAL_MODULES['tsm'].insert(net, 4, place=place)
            accepted = True
        except ValueError:
            accepted = False
        assert accepted == (place in shift_places_of(name)), (name, place)
