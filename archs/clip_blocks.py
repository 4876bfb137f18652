"""Transformer blocks of OpenAI CLIP (parameter names as its released weights), shared by ILA's image
tower (archs/ila.py) and its text tower (archs/ila_text.py)."""
from collections import OrderedDict

import torch
import torch.nn as nn


class QuickGELU(nn.Module):
    """The GELU approximation the OpenAI CLIP weights were trained with."""

    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block with the OpenAI CLIP parameter names (attn, ln_1, mlp.c_fc/c_proj, ln_2).

    causal: each token attends to itself and the tokens before it (CLIP's text encoder)."""

    def __init__(self, width, heads, causal=False):
        super().__init__()
        self.causal = causal
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ('c_fc', nn.Linear(width, 4 * width)),
            ('gelu', QuickGELU()),
            ('c_proj', nn.Linear(4 * width, width)),
        ]))
        self.ln_2 = nn.LayerNorm(width)

    def attention_mlp(self, x):
        # x: (N, L, d)
        y = self.ln_1(x)
        mask = None
        if self.causal:
            length = x.shape[1]
            mask = torch.full((length, length), float('-inf'), dtype=x.dtype, device=x.device).triu(1)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))

    def forward(self, x):
        return self.attention_mlp(x)


class CLIPTransformer(nn.Module):
    """Holds the blocks so that their keys read ``transformer.resblocks.N.*`` as in CLIP."""

    def __init__(self, blocks):
        super().__init__()
        self.resblocks = nn.ModuleList(blocks)
