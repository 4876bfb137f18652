"""Video Swin backbones (archs/swin3d.py) and the Video Swin checkpoint converter.

The original Video Swin / mmaction layout is written here by the test, from a torchvision model's weights
renamed by a key table spelled out from Video-Swin-Transformer's mmaction/models/backbones/
swin_transformer3d.py (BasicLayer.blocks / downsample, Mlp.fc1/fc2, I3DHead.fc_cls), and must load back
into torchvision's own model with identical logits.
"""
import json

import pytest
import torch
import torchvision
from torchvision.models.video.swin_transformer import SwinTransformer3d

import archs
from archs.swin3d import SWIN3D_CONFIGS, Swin3DBackbone, convert_videoswin_state_dict, videoswin_key
from conftest import load_script
from ops.checkpoint import load_checkpoint
from ops.export import load_model
from ops.models import TSN
from ops.temporal_modules import backbone_models_time, temporal_modules_of
from opts import parse_args

# Original (Video Swin, mmaction 0.x; mmaction2 1.x for norm3) -> torchvision's SwinTransformer3d.
GOLDEN = {
    'patch_embed.proj.weight': 'patch_embed.proj.weight',
    'patch_embed.norm.bias': 'patch_embed.norm.bias',
    'layers.0.blocks.0.norm1.weight': 'features.0.0.norm1.weight',
    'layers.0.blocks.1.attn.relative_position_bias_table': 'features.0.1.attn.relative_position_bias_table',
    'layers.0.blocks.1.attn.relative_position_index': 'features.0.1.attn.relative_position_index',
    'layers.1.blocks.0.attn.qkv.weight': 'features.2.0.attn.qkv.weight',
    'layers.2.blocks.5.attn.proj.bias': 'features.4.5.attn.proj.bias',
    'layers.2.blocks.3.norm2.weight': 'features.4.3.norm2.weight',
    'layers.3.blocks.1.mlp.fc1.weight': 'features.6.1.mlp.0.weight',
    'layers.3.blocks.1.mlp.fc2.bias': 'features.6.1.mlp.3.bias',
    'layers.0.downsample.reduction.weight': 'features.1.reduction.weight',
    'layers.2.downsample.norm.bias': 'features.5.norm.bias',
    'norm.weight': 'norm.weight',
    'norm3.bias': 'norm.bias',
    'cls_head.fc_cls.weight': 'head.weight',
}
TOY = SWIN3D_CONFIGS['swin3d_toy']


def original_key(tv_key):
    """torchvision key -> the original layout's, written independently of ops.checkpoint's rules."""
    if tv_key.startswith('head.'):
        return 'cls_head.fc_cls.' + tv_key[len('head.'):]
    parts = tv_key.split('.')
    if parts[0] == 'features':
        k = int(parts[1])
        if k % 2:                                   # patch merging after stage k // 2
            parts = ['layers', str(k // 2), 'downsample'] + parts[2:]
        else:
            parts = ['layers', str(k // 2), 'blocks'] + parts[2:]
            mlp = {'0': 'fc1', '3': 'fc2'}
            if parts[4] == 'mlp':
                parts[5] = mlp[parts[5]]
    return 'backbone.' + '.'.join(parts)


def torchvision_model(num_classes=5, seed=0):
    torch.manual_seed(seed)
    model = SwinTransformer3d(patch_size=[2, 4, 4], embed_dim=TOY['embed_dim'], depths=list(TOY['depths']),
                              num_heads=list(TOY['num_heads']), window_size=[8, 7, 7], num_classes=num_classes)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.2 * torch.randn_like(p))       # beyond the init: LayerNorms and biases matter too
    return model.double().eval()


def write_original(model, path, **extra):
    state = {original_key(k): v for k, v in model.state_dict().items()}
    torch.save({'meta': {'epoch': 30, 'mmcv_version': '1.3.1'}, 'state_dict': {**state, **extra}}, path)
    return state


def test_key_rules_match_the_original_layout():
    for src, dst in GOLDEN.items():
        assert videoswin_key(src) == dst, src
        if src != 'norm3.bias':
            assert original_key(dst) in ('backbone.' + src, src), dst
    assert videoswin_key('cls_head.fc_cls.extra') is None and videoswin_key('neck.weight') is None


def test_registry_traits_and_recipe():
    entry = archs.backbone_traits('swin3d_t')
    assert entry.video and backbone_models_time('swin3d_t') and entry.video_modalities == ('RGB', 'Flow')
    assert temporal_modules_of('swin3d_t') == () and entry.input_size == 224
    assert (entry.norm.mean, entry.norm.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    recipe = dict(entry.recipe)
    assert (recipe['optimizer'], recipe['lr'], recipe['weight_decay'], recipe['dropout']) == ('adamw', 1e-4, 0.02, 0.0)
    for name in ('swin3d_t', 'swin3d_s', 'swin3d_b'):
        with torch.device('meta'):                  # shapes only: the published sizes, as torchvision's
            net = archs.create_backbone(name, pretrain='none')
            tv = getattr(torchvision.models.video, name)()
        assert {k: v.shape for k, v in net.state_dict().items()} == \
            {k: v.shape for k, v in tv.state_dict().items() if not k.startswith('head.')}
        assert net.feature_dim == {'swin3d_t': 768, 'swin3d_s': 768, 'swin3d_b': 1024}[name]
        blocks = [m for m in net.modules() if type(m).__name__ == 'ShiftedWindowAttention3d']
        assert [b.window_size for b in blocks[:2]] == [[8, 7, 7]] * 2
        assert [b.shift_size for b in blocks[:2]] == [[0, 0, 0], [4, 3, 3]]
        assert net.patch_embed.proj.kernel_size == (2, 4, 4)


def test_original_layout_round_trip_gives_torchvision_logits(tmp_path, capsys):
    ref = torchvision_model()
    write_original(ref, tmp_path / 'orig.pth')
    cc = load_script('scripts/convert_checkpoint.py', 'convert_checkpoint')
    assert cc.main(['videoswin', str(tmp_path / 'orig.pth'), str(tmp_path / 'ours.pth.tar'), '--num_segments', '4']) == 0
    out = capsys.readouterr().out
    n = len(ref.state_dict())
    assert out.count('mapped  ') == n and f'swin3d_toy, 5 classes, 4 segments, RGB; {n} mapped' in out
    assert 'mapped  backbone.layers.1.downsample.reduction.weight -> base_model.features.3.reduction.weight' in out
    assert cc.main(['videoswin', str(tmp_path / 'ours.pth.tar'), str(tmp_path / 'x.pth.tar')]) == 1
    assert 'not a Video Swin file' in capsys.readouterr().err      # our own layout is not a source
    model = load_model(str(tmp_path / 'ours.pth.tar'))[0]
    model = model.double().eval()
    x = torch.randn(2, 3, 4, 32, 32, dtype=torch.float64)            # (B, C, T, H, W)
    ours = model(x.transpose(1, 2).reshape(2, 4 * 3, 32, 32))        # TSN: (B, T*C, H, W)
    assert torch.equal(ours, ref(x))


def test_pretrain_loads_both_layouts_and_drops_the_head(tmp_path):
    ref = torchvision_model(num_classes=7, seed=1)
    write_original(ref, tmp_path / 'orig.pth')
    torch.save(ref.state_dict(), tmp_path / 'tv.pth')
    x = torch.randn(1, 4, 3, 32, 32, dtype=torch.float64)
    feats = []
    for name in ('orig.pth', 'tv.pth'):
        net = archs.create_backbone('swin3d_toy', pretrain=str(tmp_path / name)).double().eval()
        feats.append(net(x))
    assert torch.equal(feats[0], feats[1])
    ref_feats = ref.norm(ref.features(ref.patch_embed(x.transpose(1, 2)))).mean(dim=(1, 2, 3))
    assert torch.equal(feats[0], ref_feats)
    # A model built with --pretrain keeps the file's weights and gets a new head (TSN's new_fc).
    tsn = TSN(3, 4, 'RGB', base_model='swin3d_toy', pretrain=str(tmp_path / 'orig.pth'), dropout=0.5)
    assert torch.equal(tsn.base_model.norm.weight, ref.norm.weight.float())


def test_report_names_every_key_and_fills_missing_index_buffers():
    ref = torchvision_model()
    state = {original_key(k): v for k, v in ref.state_dict().items() if not k.endswith('relative_position_index')}
    state['data_preprocessor.mean'] = torch.zeros(3)
    state['backbone.unknown.weight'] = torch.zeros(1)
    own = Swin3DBackbone(**TOY).state_dict()
    out, report = convert_videoswin_state_dict(state, own)
    assert report['layout'] == 'videoswin'
    assert {k for k, _ in report['dropped']} == {'data_preprocessor.mean', 'backbone.unknown.weight'}
    filled = [dst for src, dst in report['mapped'] if src == '(model)']
    assert len(filled) == sum(TOY['depths']) and all(k.endswith('relative_position_index') for k in filled)
    assert len(report['mapped']) == len(state) - 2 + len(filled)
    assert set(out) == set(own) | {'head.weight', 'head.bias'}


def test_2d_imagenet_swin_is_inflated_as_video_swin_does(tmp_path):
    # The released 2D Swin layout: {'model': ...}, no 'backbone.' prefix, 4-D patch kernel, (2*7-1)^2-row
    # tables, 49 x 49 index buffers, attn_mask buffers and a 1000-class 'head'.
    torch.manual_seed(0)
    state = {original_key(k)[len('backbone.'):]: v.float() for k, v in torchvision_model().state_dict().items()
             if not k.startswith('head.')}
    kernel = torch.randn(16, 3, 4, 4)
    state['patch_embed.proj.weight'] = kernel
    tables = {k: torch.randn(169, v.shape[1]) for k, v in state.items() if k.endswith('bias_table')}
    state.update(tables)
    state.update({k: torch.zeros(49, 49, dtype=torch.long) for k in state if k.endswith('position_index')})
    state['layers.0.blocks.1.attn_mask'] = torch.zeros(64, 49, 49)
    state['head.weight'] = torch.zeros(1000, 128)
    torch.save({'model': state}, tmp_path / 'swin_2d.pth')
    net = archs.create_backbone('swin3d_toy', pretrain=str(tmp_path / 'swin_2d.pth')).eval()
    assert torch.equal(net.patch_embed.proj.weight, torch.stack([kernel / 2] * 2, dim=2))
    table = net.features[0][1].attn.relative_position_bias_table
    assert torch.equal(table, tables['layers.0.blocks.1.attn.relative_position_bias_table'].repeat(15, 1))
    assert torch.equal(net.features[0][1].attn.relative_position_index,
                       Swin3DBackbone(**TOY).features[0][1].attn.relative_position_index)
    # A static clip embeds as the 2D kernel on its frame.
    frame = torch.randn(1, 3, 8, 8)
    clip = frame.unsqueeze(2).expand(1, 3, 2, 8, 8)
    assert torch.allclose(net.patch_embed.proj(clip)[:, :, 0], torch.nn.functional.conv2d(
        frame, kernel, net.patch_embed.proj.bias, stride=4), atol=1e-5)


def test_bad_files_are_refused_naming_the_shapes(tmp_path):
    ref = torchvision_model()
    own = Swin3DBackbone(**TOY).state_dict()
    state = {original_key(k): v for k, v in ref.state_dict().items()}
    # Video Swin-B on Something-Something v2 uses window 16x7x7: a (31*13*13, heads) table.
    window = dict(state, **{'backbone.layers.0.blocks.0.attn.relative_position_bias_table': torch.zeros(5239, 1)})
    with pytest.raises(ValueError, match=r'file \(5239, 1\) vs model \(2535, 1\) \(another attention window'):
        convert_videoswin_state_dict(window, own)
    del state['backbone.layers.3.blocks.1.mlp.fc2.weight']
    torch.save(state, tmp_path / 'partial.pth')
    with pytest.raises(RuntimeError, match=r'features\.6\.1\.mlp\.3\.weight'):
        archs.create_backbone('swin3d_toy', pretrain=str(tmp_path / 'partial.pth'))
    with pytest.raises(ValueError, match='Kinetics-400 video weights, not ImageNet.*swin3d_t-7615ae03.pth'):
        archs.create_backbone('swin3d_t', pretrain='imagenet')


def test_flow_is_given_as_x_y_zero_and_other_modalities_refused():
    torch.manual_seed(0)
    net = archs.create_backbone('swin3d_toy', pretrain='none').eval()
    flow = torch.randn(1, 4, 2, 32, 32)
    assert torch.equal(net(flow), net(torch.cat([flow, torch.zeros(1, 4, 1, 32, 32)], dim=2)))
    model = TSN(3, 4, 'Flow', base_model='swin3d_toy', pretrain='none', dropout=0.0, input_size=32)
    assert model.new_length == 1 and model.input_channels == 8 and isinstance(model.head_dropout, torch.nn.Identity)
    assert model(torch.randint(0, 256, (2, 8, 32, 32), dtype=torch.uint8)).shape == (2, 3)
    with pytest.raises(ValueError, match='takes RGB, Flow input with one frame per segment, got RGBDiff'):
        TSN(3, 4, 'RGBDiff', base_model='swin3d_toy', pretrain='none')
    with pytest.raises(ValueError, match='got Flow with new_length 5'):
        TSN(3, 4, 'Flow', base_model='swin3d_toy', pretrain='none', new_length=5)
    with pytest.raises(ValueError, match='takes RGB input'):
        TSN(3, 4, 'Flow', base_model='ila_vit_tiny', pretrain='none')


@pytest.mark.parametrize('extra,message', [
    (['--shift'], 'it models time itself'),
    (['--temporal_module', 'tin'], 'its temporal modules: none; it models time itself'),
    (['--non_local'], '--non_local is defined for ResNets'),
])
def test_shift_and_temporal_modules_are_parser_errors(extra, message, tiny_toy, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(['toy', 'RGB', '--data_root', tiny_toy, '--arch', 'swin3d_t', *extra])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_recipe_defaults_from_the_registry(tiny_toy):
    custom = ['kinetics', 'RGB', '--root_path', 'r', '--train_list', 't', '--val_list', 'v', '--num_class', '5']
    args = parse_args(custom + ['--arch', 'swin3d_t'])
    assert (args.optimizer, args.lr, args.weight_decay, args.clip_gradient, args.dropout, args.pretrain,
            args.input_size, args.fc_lr5) == ('adamw', 1e-4, 0.02, 5.0, 0.0, 'none', 224, 'auto')
    assert parse_args(['toy', 'RGB', '--data_root', tiny_toy, '--arch', 'swin3d_t']).input_size == 64


@pytest.mark.slow
def test_swin_flow_teacher_distils_into_an_rgb_swin_student_through_main_and_test_models(tiny_toy, run_cli,
                                                                                        tmp_path):
    # The paper's setup at toy size: a Flow Swin teacher ((x, y, 0) input), then an RGB Swin student
    # taught by it through main.py --distill_from; both evaluated by test_models.py from their checkpoints.
    common = ['--data_root', tiny_toy, '--root_model', str(tmp_path / 'ckpt'), '--root_log', str(tmp_path / 'log'),
              '--arch', 'swin3d_toy', '--num_segments', '4', '--input_size', '32', '--batch-size', '8', '-j', '0',
              '--no_progress', '--epochs', '1', '--max_steps_per_epoch', '2', '--amp', 'off']
    run_cli(['main.py', 'toy', 'Flow', *common, '--run_name', 'flow'], cwd=tmp_path)
    teacher = tmp_path / 'ckpt' / 'flow' / 'ckpt.best.pth.tar'
    config = load_checkpoint(str(teacher))['config']
    assert (config['base_model'], config['modality'], config['new_length']) == ('swin3d_toy', 'Flow', 1)
    run_cli(['main.py', 'toy', 'RGB', *common, '--run_name', 'student', '--distill_from', str(teacher)],
            cwd=tmp_path)
    d = tmp_path / 'ckpt' / 'student'
    args = json.loads((d / 'args.json').read_text())
    assert (args['optimizer'], args['distill_from'], args['gt_weight']) == ('adamw', str(teacher), 0.0)
    for name, weights in (('teacher', teacher), ('student', d / 'ckpt.best.pth.tar')):
        run_cli(['test_models.py', 'toy', '--weights', str(weights), '--data_root', tiny_toy, '--no_progress',
                 '-j', '0', '--output_dir', str(tmp_path / name)], cwd=tmp_path)
        summary = json.loads((tmp_path / name / 'summary.json').read_text())
        assert summary['protocol'][0].startswith('4 frames x 1 crop x 1 clip')
