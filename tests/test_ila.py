"""ILA backbone: CLIP encoder, alignment module properties, weight loading, parameter groups."""
import logging

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from archs import BACKBONES
from archs.ila import (CLIP_CONFIGS, ILA_ARCHS, CLIPVisionTransformer, ILAAlign, ILAVideoModel,
                       cosine_alignment_loss, ila_param_groups, jittered_mask, merge_pairs, point_mask,
                       read_clip_state_dict, tent_profile)

TINY = CLIP_CONFIGS['vit_tiny']


@pytest.fixture(autouse=True)
def _quiet_random_init_warning(caplog):
    caplog.set_level(logging.ERROR, logger='archs.ila')


def tiny_clip(seed=0, input_resolution=None):
    torch.manual_seed(seed)
    cfg = dict(TINY) if input_resolution is None else {**TINY, 'input_resolution': input_resolution}
    return CLIPVisionTransformer(**cfg).eval()


def full_clip_state(clip):
    """A full-CLIP-like state dict: image tower under 'visual.', plus text-tower keys to be ignored."""
    state = {f'visual.{k}': v for k, v in clip.state_dict().items()}
    state['token_embedding.weight'] = torch.randn(10, 8)
    state['logit_scale'] = torch.tensor(4.6)
    return state


class _ScriptHolder(nn.Module):
    def forward(self, x):
        return x


def scriptable_holder(state):
    """A scriptable module whose state dict is ``state``: plain nn.Module nodes along the dotted keys."""
    root = _ScriptHolder()
    for key, value in state.items():
        *path, leaf = key.split('.')
        node = root
        for part in path:
            if not hasattr(node, part):
                node.add_module(part, nn.Module())
            node = getattr(node, part)
        node.register_parameter(leaf, nn.Parameter(value.clone()))
    return root


def test_registry_names_and_published_clip_sizes():
    assert set(ILA_ARCHS) == {'ila_vit_b32', 'ila_vit_b16', 'ila_vit_l14', 'ila_vit_l14_336', 'ila_vit_tiny'}
    # Parameter counts of the OpenAI CLIP image towers: the key layout and shapes match the release.
    expected = {'vit_b32': 87_849_216, 'vit_b16': 86_192_640, 'vit_l14': 303_966_208,
                'vit_l14_336': 304_293_888}
    with torch.device('meta'):
        for name, count in expected.items():
            assert sum(p.numel() for p in CLIPVisionTransformer(**CLIP_CONFIGS[name]).parameters()) == count
        model = ILA_ARCHS['ila_vit_b16'](8)
    assert BACKBONES['ila_vit_b16'].video and model.feature_dim == 512 and model.visual.grid_size == 14
    keys = set(model.state_dict())
    assert {'visual.conv1.weight', 'visual.transformer.resblocks.11.attn.in_proj_weight',
            'visual.transformer.resblocks.11.mlp.c_fc.weight', 'visual.ln_post.bias', 'visual.proj',
            'visual.transformer.resblocks.0.ila.skip_align_fc.weight'} <= keys


def test_tent_profile_and_single_point_mask():
    # 14-point grid e_i = 2i/13 - 1, point 0: 1 within 0.25, then 1 - 1.5 (|e| - 0.25), floored at 0.
    expected = torch.tensor([0.0, 0.105769, 0.336538, 0.567308, 0.798077, 1, 1, 1, 1,
                             0.798077, 0.567308, 0.336538, 0.105769, 0.0])
    profile = tent_profile(torch.tensor(0.0), 14)
    torch.testing.assert_close(profile, expected, atol=1e-5, rtol=0)
    mask = point_mask(torch.zeros(2), 14)
    assert mask.max() == 1.0
    torch.testing.assert_close(mask.sum(), expected.sum() ** 2)  # 7.61538^2 = 57.994

    points = torch.empty(50, 2).uniform_(-0.75, 0.75)
    masks = point_mask(points, 7)
    for p, m in zip(points, masks):
        # rows follow y = p[1], columns follow x = p[0]
        torch.testing.assert_close(m, torch.outer(tent_profile(p[1], 7), tent_profile(p[0], 7)))
        assert torch.linalg.matrix_rank(m) == 1


def test_mask_values_bounded_and_jitter_symmetric():
    points = torch.empty(100, 2).uniform_(-0.75, 0.75)
    for masks in (point_mask(points, 14), jittered_mask(points, 14, 0.2), jittered_mask(points, 3, 0.5)):
        assert masks.min() >= 0 and masks.max() <= 1
    centre = jittered_mask(torch.zeros(2), 14, 0.2)
    torch.testing.assert_close(centre, centre.T)
    torch.testing.assert_close(centre, centre.flip(0, 1))
    assert abs(centre.max().item() - 0.9733) < 1e-3


def test_points_zero_at_init_and_bounded():
    torch.manual_seed(0)
    align = ILAAlign(width=8, grid_size=4, align_dim=8)
    inter = torch.randn(6, 8, 4, 4)
    assert torch.equal(align.predict_points(inter), torch.zeros(6, 2, 2))
    # A huge last layer saturates tanh, but every coordinate stays within +-0.75.
    nn.init.normal_(align.point_head[-1].weight, std=100.0)
    points = align.predict_points(100 * inter)
    assert 0.7 < points.abs().max() <= 0.75


def test_merge_pairs():
    f = torch.randn(2, 5, 3, 4)
    torch.testing.assert_close(merge_pairs(f[:, :-1], f[:, 1:]), f)
    first = torch.tensor([[1.0, 2.0]])   # pairs (0,1), (1,2): values for frames 0 and 1
    second = torch.tensor([[10.0, 20.0]])  # values for frames 1 and 2
    torch.testing.assert_close(merge_pairs(first, second), torch.tensor([[1.0, 6.0, 20.0]]))


def test_cosine_alignment_loss():
    a = torch.randn(4, 3, 16)
    loss = cosine_alignment_loss(a, torch.randn(4, 3, 16))
    assert 0 <= loss <= 2
    assert cosine_alignment_loss(a, 3 * a).abs() < 1e-6
    torch.testing.assert_close(cosine_alignment_loss(a, -a), torch.tensor(2.0))
    orthogonal = cosine_alignment_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]]))
    torch.testing.assert_close(orthogonal, torch.tensor(1.0))


@pytest.mark.parametrize('train', [True, False])
def test_identity_with_frozen_clip_at_init(tmp_path, train):
    clip = tiny_clip()
    path = tmp_path / 'clip.pt'
    torch.save(clip.state_dict(), path)
    torch.manual_seed(1)
    model = ILA_ARCHS['ila_vit_tiny'](3, clip_weights=path).train(train)
    x = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        frames = model.frame_features(x)
        expected = clip(x.flatten(0, 1)).view(2, 3, -1)
    torch.testing.assert_close(frames, expected, atol=1e-5, rtol=1e-5)
    assert model.aux_loss.dim() == 0 and 0 <= model.aux_loss <= 2 * len(model.visual.transformer.resblocks)


def test_only_alignment_and_temporal_train_by_default():
    model = ILA_ARCHS['ila_vit_tiny'](3)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all('.ila.' in n or n.startswith(('temporal.', 'norm_out.')) for n in trainable)
    assert {n for n in dict(model.named_parameters()) if '.ila.' in n or not n.startswith('visual.')} == trainable
    unfrozen = ILA_ARCHS['ila_vit_tiny'](3, finetune_backbone=True)
    assert all(p.requires_grad for p in unfrozen.parameters())


def test_forward_backward_tiny():
    torch.manual_seed(0)
    model = ILA_ARCHS['ila_vit_tiny'](4, input_size=64).train()
    x = torch.randn(2, 4, 3, 64, 64)
    out = model(x)
    assert out.shape == (2, model.feature_dim)
    (out.square().mean() + model.aux_loss).backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name
    # The zero-initialised point layer and skip layers receive gradient, so they move away from zero.
    align = model.visual.transformer.resblocks[0].ila
    assert align.point_head[-1].weight.grad.abs().sum() > 0
    assert align.skip_align_fc.weight.grad.abs().sum() > 0


def test_grad_checkpoint_matches_plain():
    torch.manual_seed(0)
    plain = ILA_ARCHS['ila_vit_tiny'](3).train()
    ckpt = ILA_ARCHS['ila_vit_tiny'](3, grad_checkpoint=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 3, 32, 32)
    grads = []
    for model in (plain, ckpt):
        torch.manual_seed(1)
        (model(x).sum() + model.aux_loss).backward()
        grads.append(model.visual.transformer.resblocks[0].ila.token_fc.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_bf16_autocast_forward_cpu():
    model = ILA_ARCHS['ila_vit_tiny'](3).eval()
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(torch.randn(2, 3, 3, 32, 32))
    assert out.shape == (2, 16) and torch.isfinite(out.float()).all()
    assert torch.isfinite(model.aux_loss)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match='num_segments >= 2'):
        ILA_ARCHS['ila_vit_tiny'](1)
    model = ILA_ARCHS['ila_vit_tiny'](3)
    with pytest.raises(ValueError, match=r'\(B, T, 3, H, W\)'):
        model(torch.randn(2, 9, 32, 32))
    with pytest.raises(ValueError, match='built for 3 frames'):
        model(torch.randn(1, 4, 3, 32, 32))
    with pytest.raises(ValueError, match='32x32'):
        model(torch.randn(1, 3, 3, 64, 64))


def test_set_epoch_halves_jitter_from_epoch_30():
    model = ILA_ARCHS['ila_vit_tiny'](3)
    for epoch, jitter in ((0, 0.2), (29, 0.2), (30, 0.1), (32, 0.025)):
        model.set_epoch(epoch)
        assert all(b.ila.jitter == pytest.approx(jitter) for b in model.visual.transformer.resblocks)


def test_load_state_dict_and_safetensors_files(tmp_path):
    clip = tiny_clip(seed=3)
    x = torch.randn(1, 3, 3, 32, 32)
    expected = clip(x.flatten(0, 1))
    # torch.save of a full CLIP state dict ('visual.' prefix, text keys dropped), and the safetensors
    # of the bare image tower in half precision (weights are converted to float32).
    torch.save(full_clip_state(clip), tmp_path / 'full.pth')
    save_file({k: v.half() for k, v in clip.state_dict().items()}, str(tmp_path / 'visual.safetensors'))
    for name, atol in (('full.pth', 1e-5), ('visual.safetensors', 5e-2)):
        model = ILA_ARCHS['ila_vit_tiny'](3, clip_weights=tmp_path / name).eval()
        assert model.visual.proj.dtype == torch.float32
        with torch.no_grad():
            torch.testing.assert_close(model.frame_features(x)[0], expected, atol=atol, rtol=0)


def test_torchscript_archive_needs_trust(tmp_path):
    clip = tiny_clip(seed=4)
    path = tmp_path / 'ViT-tiny.pt'
    # Same layout as the OpenAI release: the whole CLIP model scripted, image tower under 'visual.'.
    with pytest.warns(FutureWarning):  # torch.jit is deprecated but still writes that format
        torch.jit.save(torch.jit.script(scriptable_holder(full_clip_state(clip))), str(path))
    with pytest.raises(ValueError, match='trust_jit_checkpoint'):
        read_clip_state_dict(path)
    with pytest.raises(ValueError, match='TorchScript'):
        ILA_ARCHS['ila_vit_tiny'](3, clip_weights=path)
    model = ILA_ARCHS['ila_vit_tiny'](3, clip_weights=path, trust_jit_checkpoint=True)
    torch.testing.assert_close(model.visual.transformer.resblocks[1].attn.in_proj_weight,
                               clip.transformer.resblocks[1].attn.in_proj_weight)


def test_bad_weight_files_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothing is downloaded'):
        ILA_ARCHS['ila_vit_tiny'](3, clip_weights=tmp_path / 'absent.pt')
    torch.save({'fc.weight': torch.zeros(2, 2)}, tmp_path / 'other.pt')
    with pytest.raises(ValueError, match='not a CLIP image encoder'):
        ILA_ARCHS['ila_vit_tiny'](3, clip_weights=tmp_path / 'other.pt')
    torch.save({'state': {'a': 1}}, tmp_path / 'nested.pt')
    with pytest.raises(ValueError, match='plain state dict'):
        ILA_ARCHS['ila_vit_tiny'](3, clip_weights=tmp_path / 'nested.pt')
    wide = CLIPVisionTransformer(**{**TINY, 'width': 48, 'heads': 3})
    torch.save(wide.state_dict(), tmp_path / 'wide.pt')
    with pytest.raises(ValueError, match='shape mismatch'):
        ILA_ARCHS['ila_vit_tiny'](3, clip_weights=tmp_path / 'wide.pt')


def test_positional_embedding_resized_to_input_size(tmp_path):
    clip = tiny_clip(seed=5)  # 4x4 grid at 32 px
    torch.save(clip.state_dict(), tmp_path / 'clip.pt')
    model = ILA_ARCHS['ila_vit_tiny'](3, clip_weights=tmp_path / 'clip.pt', input_size=64)  # 8x8 grid
    pos = model.visual.positional_embedding
    assert pos.shape == (1 + 64, TINY['width'])
    torch.testing.assert_close(pos[0], clip.positional_embedding[0])
    # A constant grid stays constant under bicubic resizing.
    clip.positional_embedding.data[1:] = 0.5
    torch.save(clip.state_dict(), tmp_path / 'const.pt')
    model = ILA_ARCHS['ila_vit_tiny'](3, clip_weights=tmp_path / 'const.pt', input_size=64)
    torch.testing.assert_close(model.visual.positional_embedding[1:], torch.full((64, TINY['width']), 0.5))


def test_param_groups():
    class Wrapper(nn.Module):  # stands in for TSN: backbone plus a new classifier
        def __init__(self, backbone):
            super().__init__()
            self.base_model = backbone
            self.new_fc = nn.Linear(backbone.feature_dim, 5)

    model = Wrapper(ILA_ARCHS['ila_vit_tiny'](3))
    groups = ila_param_groups(model, 8e-6)
    by_name = {g['name']: g for g in groups}
    assert list(by_name) == ['align', 'align_no_decay', 'skip', 'skip_no_decay', 'temporal',
                             'temporal_no_decay', 'head', 'head_no_decay']
    for name, lr, wd in (('align', 5e-4, 1e-2), ('skip', 8e-5, 1e-3), ('temporal', 4e-4, 3e-3),
                         ('head', 4e-4, 3e-3)):
        assert by_name[name]['lr'] == pytest.approx(lr) and by_name[name]['weight_decay'] == wd
        assert by_name[name]['decay_mult'] * 3e-3 == pytest.approx(wd)
        assert by_name[f'{name}_no_decay']['weight_decay'] == by_name[f'{name}_no_decay']['decay_mult'] == 0.0
    grouped = [p for g in groups for p in g['params']]
    assert len(grouped) == len({id(p) for p in grouped})
    assert {id(p) for p in grouped} == {id(p) for p in model.parameters() if p.requires_grad}
    assert any(p is model.base_model.temporal.positional_embedding for p in by_name['temporal_no_decay']['params'])
    assert by_name['head']['params'] == [model.new_fc.weight]
    torch.optim.AdamW(groups, betas=(0.9, 0.98), eps=1e-8)

    unfrozen = ILA_ARCHS['ila_vit_tiny'](3, finetune_backbone=True)
    names = [g['name'] for g in ila_param_groups(unfrozen, 1e-5, lr_mult={'backbone': 0.5})]
    assert names[-2:] == ['backbone', 'backbone_no_decay']
    backbone = next(g for g in ila_param_groups(unfrozen, 1e-5, lr_mult={'backbone': 0.5})
                    if g['name'] == 'backbone')
    assert backbone['lr'] == pytest.approx(5e-6) and backbone['weight_decay'] == 3e-3
    with pytest.raises(ValueError, match='allowed'):
        ila_param_groups(unfrozen, 1e-5, lr_mult={'mit': 2.0})
    with pytest.raises(ValueError, match='exactly one ILAVideoModel'):
        ila_param_groups(nn.Linear(2, 2), 1e-5)


def test_tsn_delegates_optimiser_groups_and_epoch_to_the_backbone():
    from ops.models import TSN
    model = TSN(5, 3, 'RGB', base_model='ila_vit_tiny', dropout=0.5, input_size=32, pretrain='none',
                backbone_kwargs=dict(finetune_backbone=True))
    ours = model.get_optim_policies(lr=8e-6, weight_decay=3e-3)
    reference = ila_param_groups(model, 8e-6, weight_decay=3e-3)
    assert [{k: v for k, v in g.items() if k != 'params'} for g in ours] == \
        [{k: v for k, v in g.items() if k != 'params'} for g in reference]
    assert [[id(p) for p in g['params']] for g in ours] == [[id(p) for p in g['params']] for g in reference]
    with pytest.raises(ValueError, match='lr and weight_decay'):
        model.get_optim_policies()
    model.set_epoch(31)      # jitter halved twice from epoch 30 on
    assert {m.jitter for m in model.modules() if isinstance(m, ILAAlign)} == {0.2 * 0.25}


def test_eval_uses_the_jittered_mask_as_the_reference():
    # ILA's ILA module is built with is_training=True in both branches: its 9-point average applies at test.
    align = ILAAlign(width=8, grid_size=5, align_dim=8).eval()
    points = torch.tensor([[0.1, -0.3]])
    torch.testing.assert_close(align.masks(points), jittered_mask(points, 5, 0.2))
    align.train()
    torch.testing.assert_close(align.masks(points), jittered_mask(points, 5, 0.2))
    align.jitter = 0.0
    torch.testing.assert_close(align.masks(points), point_mask(points, 5))
    assert isinstance(ILA_ARCHS['ila_vit_tiny'](2), ILAVideoModel)


# ---- issue 15: the reference's max-pool rounding and the SSv2 pair network ----

def _pools(align):
    return [m for m in align.point_features if isinstance(m, nn.MaxPool2d)]


@pytest.mark.parametrize('grid, kept, out', [(7, 4, 1), (14, 12, 3)])
def test_point_pools_round_down_like_the_reference(grid, kept, out):
    # Two 2x2 max-pools rounding down: 7 -> 3 -> 1 covers cells 0..3; 14 -> 7 -> 3 covers cells 0..11.
    align = ILAAlign(8, grid, align_dim=8)
    pools = _pools(align)
    assert len(pools) == 2 and not any(p.ceil_mode for p in pools)
    for pos, expect in ((kept - 1, 1.0), (kept, 0.0), (grid - 1, 0.0)):
        x = torch.zeros(1, 1, grid, grid)
        x[..., pos, pos] = 1.0
        y = pools[1](pools[0](x))
        assert y.shape[-1] == out and float(y.max()) == expect
    assert align.point_features(torch.zeros(2, 8, grid, grid)).shape == (2, 4, out, out)


def test_grid_too_small_for_the_point_pools_is_an_explicit_error():
    ILAAlign(8, 4, align_dim=8)                                     # 4 -> 2 -> 1 still leaves one cell
    with pytest.raises(ValueError, match='3x3 patch grid.*at least 4x4'):
        ILAAlign(8, 3, align_dim=8)


def test_ssv2_pair_network_is_two_full_3x3_convs():
    k400 = ILAAlign(8, 4, align_dim=16)
    ssv2 = ILAAlign(8, 4, align_dim=16, pair_net='ssv2')
    convs = [m for m in ssv2.interact if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.groups) for c in convs] == [
        (16, 16, (3, 3), 1), (16, 16, (3, 3), 1)]
    assert [type(m) for m in ssv2.interact] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU] * 2
    convs = [m for m in k400.interact if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.groups) for c in convs] == [
        (16, 16, (3, 3), 16), (16, 16, (1, 1), 1), (16, 16, (3, 3), 1)]
    with pytest.raises(ValueError, match='pair_net'):
        ILAAlign(8, 4, align_dim=16, pair_net='k700')


def test_ssv2_pair_network_reaches_the_model_and_its_config():
    from ops.models import TSN
    model = TSN(5, 3, 'RGB', base_model='ila_vit_tiny', dropout=0.5, input_size=32, pretrain='none',
                backbone_kwargs=dict(pair_net='ssv2'))
    block = model.base_model.visual.transformer.resblocks[0].ila
    assert block.pair_net == 'ssv2'
    rebuilt = TSN.from_config(model.config())
    assert rebuilt.base_model.visual.transformer.resblocks[0].ila.pair_net == 'ssv2'
    assert set(rebuilt.state_dict()) == set(model.state_dict())
    assert model(torch.randn(2, 9, 32, 32)).shape == (2, 5)
