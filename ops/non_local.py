"""Embedded-Gaussian non-local blocks (Wang et al., CVPR 2018) for ResNet backbones.

Keys match the released TSM non-local checkpoints: ``layer2.0.block.*`` (the original residual block)
and ``layer2.0.nl.{g.0,theta,phi.0,W.0,W.1}.*``.
"""
import torch
import torch.nn as nn
import torchvision


class NonLocalBlock3D(nn.Module):
    """z = W(softmax(theta(x)^T phi(x)) g(x)) + x on (N, C, T, H, W); identity at initialisation."""

    def __init__(self, in_channels, inter_channels=None, sub_sample=True):
        super().__init__()
        inter = inter_channels or max(in_channels // 2, 1)
        self.inter_channels = inter
        pool = [nn.MaxPool3d(kernel_size=(1, 2, 2))] if sub_sample else []
        self.g = nn.Sequential(nn.Conv3d(in_channels, inter, kernel_size=1), *pool)
        self.theta = nn.Conv3d(in_channels, inter, kernel_size=1)
        self.phi = nn.Sequential(nn.Conv3d(in_channels, inter, kernel_size=1), *pool)
        self.W = nn.Sequential(nn.Conv3d(inter, in_channels, kernel_size=1), nn.BatchNorm3d(in_channels))
        # Zero BN affine makes the block an exact identity at start.
        nn.init.zeros_(self.W[1].weight)
        nn.init.zeros_(self.W[1].bias)

    def forward(self, x):
        n, c, t, h, w = x.shape
        k = self.inter_channels
        g_x = self.g(x).reshape(n, k, -1).transpose(1, 2)          # (N, THW', k)
        theta_x = self.theta(x).reshape(n, k, -1).transpose(1, 2)  # (N, THW, k)
        phi_x = self.phi(x).reshape(n, k, -1)                      # (N, k, THW')
        f = torch.softmax(theta_x @ phi_x, dim=-1)                 # (N, THW, THW')
        y = (f @ g_x).transpose(1, 2).reshape(n, k, t, h, w)
        return self.W(y) + x


class NL3DWrapper(nn.Module):
    """Runs ``block`` on (N*T, C, H, W), then a non-local block over (N, C, T, H, W)."""

    def __init__(self, block, n_segment):
        super().__init__()
        self.block = block
        channels = block.bn3.num_features if hasattr(block, 'bn3') else block.bn2.num_features
        self.nl = NonLocalBlock3D(channels)
        self.n_segment = n_segment

    def forward(self, x):
        x = self.block(x)
        nt, c, h, w = x.shape
        x5 = x.view(nt // self.n_segment, self.n_segment, c, h, w).transpose(1, 2)  # (N, C, T, H, W)
        y = self.nl(x5)
        return y.transpose(1, 2).reshape(nt, c, h, w)


def make_non_local(net, n_segment, temporal_pool=False):
    """Wrap every other block (0, 2, 4, ...) of layer2 and layer3 with a non-local block.

    For ResNet-50 this is exactly TSM's placement (layer2 blocks 0, 2; layer3 blocks 0, 2, 4); TSM
    hard-coded those counts and truncated layer3 of deeper nets, here the rule covers every block.
    With temporal pooling layer2/layer3 see n_segment // 2 segments.
    """
    if not isinstance(net, torchvision.models.ResNet):
        raise NotImplementedError(f'non-local blocks are defined for ResNets only, not {type(net).__name__}')
    seg = n_segment // 2 if temporal_pool else n_segment
    for name in ('layer2', 'layer3'):
        stage = getattr(net, name)
        blocks = [NL3DWrapper(b, seg) if i % 2 == 0 else b for i, b in enumerate(stage)]
        setattr(net, name, nn.Sequential(*blocks))
    return net
