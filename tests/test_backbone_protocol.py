"""The declared backbone protocol (archs/backbone.py) and the command-line options a family owns."""
import pytest
import torch
import torch.nn as nn
import torchvision

import archs
import opts
from archs.backbone import FamilyOptions, Option, VideoBackbone
from ops.models import TSN


def test_a_2d_backbone_has_the_default_hooks():
    net = archs.create_backbone('resnet18', pretrain='none')
    assert isinstance(net, VideoBackbone) and isinstance(net, torchvision.models.ResNet)
    assert (net.last_layer_name, net.num_class, net.aux_loss) == ('fc', None, None)
    assert net.set_epoch(3) is None and net.get_optim_policies(net, lr=0.1, weight_decay=0.0) is None
    assert archs.create_backbone('mobilenetv2', pretrain='none').last_layer_name == 'classifier'

    model = TSN(4, 2, 'RGB', base_model='resnet18', pretrain='none', input_size=32)
    model.set_epoch(1)
    assert model.aux_loss is None and model.has_linear_head
    names = [g['name'] for g in model.get_optim_policies()]      # TSM's groups: the backbone has none
    assert names[:2] == ['first_conv_weight', 'first_conv_bias'] and 'lr5_weight' in names


def test_a_constructor_returning_an_undeclared_module_is_refused(monkeypatch):
    monkeypatch.setitem(archs.BACKBONES, 'plain_linear',
                        archs.Backbone(lambda pretrain: nn.Linear(2, 2), 'plain', video=True))
    with pytest.raises(TypeError, match=r'plain_linear: its constructor returned a Linear, which does not '
                                        r'declare the backbone hooks \(inherit archs.backbone.VideoBackbone\)'):
        archs.create_backbone('plain_linear', pretrain='none')


class _Pooled(VideoBackbone, nn.Module):
    feature_dim = 3

    def forward(self, x):                    # (B, T, 3, H, W) -> (B, 3)
        return x.mean(dim=(1, 3, 4))


def test_a_new_family_brings_its_options_without_editing_opts(monkeypatch):
    family = FamilyOptions('pooled family', train=(Option(('--pool_depth',), (('type', int), ('default', 2),
                                                                              ('help', 'pooling depth'))),))
    monkeypatch.setitem(archs.BACKBONES, 'pooled', archs.Backbone(lambda pretrain, **kw: _Pooled(), 'pooled',
                                                                  video=True, options=family))
    assert archs.family_options()[-1] is family
    parser = opts.get_train_parser()
    assert parser.parse_args(['toy', 'RGB', '--pool_depth', '5']).pool_depth == 5
    assert parser._option_string_actions['--pool_depth'].container.title == 'pooled family'
    assert 'pooling depth' in parser.format_help()
    assert '--pool_depth' not in opts.get_test_parser().format_help()      # no evaluation options declared
    model = TSN(4, 2, 'RGB', base_model='pooled', pretrain='none', input_size=8)
    assert model(torch.zeros(2, 2 * 3, 8, 8)).shape == (2, 4)


def test_each_family_adds_its_options_once():
    families = archs.family_options()
    assert [f.title for f in families] == ['MSN/TDN', 'ILA (CLIP ViT)']
    train = opts.get_train_parser()
    for family in families:
        for option in family.train:
            assert train._option_string_actions[option.flags[0]].container.title == family.title
    test = opts.get_test_parser()
    assert '--trust_jit_checkpoint' in test._option_string_actions
    assert '--motion_init' not in test._option_string_actions
