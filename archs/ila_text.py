"""ILA's Kinetics classifier: CLIP text features of the class names, adapted per video, cosine logits.

ILA's master branch (Kinetics-400/600) classifies as X-CLIP does (Ni et al., "Expanding Language-Image
Pretrained Models for General Video Recognition", ECCV 2022):

1. each class name, as written (prompt "{}"), is tokenised with CLIP's BPE and encoded by the frozen CLIP
   text transformer into t_k (K, D); the features are cached per class list;
2. the patch tokens of every frame (before ``ln_post``) go through a LayerNorm and a (width, D)
   projection and are averaged over time: the visual context (B, G*G, D);
3. a video-specific prompt generator (2 cross-attention layers, text as queries, the visual context as
   keys and values) adds ``alpha * generator(t, context)`` to each t_k (alpha = 0.1 per channel);
4. logits = exp(logit_scale) * cos(v, t_k), v the video feature of the multi-frame integration
   transformer (archs.ila.TemporalTransformer); logit_scale is CLIP's (ln 100).

As in ILA's optimiser, only the visual alignment modules and the integration transformer train: the text
tower, logit_scale, the prompt generator and the visual projection keep their values (CLIP's, or the
random initialisation, which ILA's published models also kept). Any list of class names can be given
after training (zero-shot).
"""
import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from archs.clip_blocks import CLIPTransformer, QuickGELU, ResidualAttentionBlock

# Text towers of the OpenAI CLIP releases (the image tower's output_dim is the joint embedding size).
# 'vit_tiny' is for tests and toy runs; its vocabulary is CLIP's, so the real tokenizer applies.
TEXT_CONFIGS = {
    'vit_b32': dict(context_length=77, vocab_size=49408, width=512, heads=8, layers=12),
    'vit_b16': dict(context_length=77, vocab_size=49408, width=512, heads=8, layers=12),
    'vit_l14': dict(context_length=77, vocab_size=49408, width=768, heads=12, layers=12),
    'vit_l14_336': dict(context_length=77, vocab_size=49408, width=768, heads=12, layers=12),
    'vit_tiny': dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=2),
}
# Top-level keys of a full CLIP state dict that belong to the text tower, and the logit scale.
TEXT_KEYS = ('token_embedding.weight', 'positional_embedding', 'ln_final.weight', 'ln_final.bias', 'text_projection')
LOGIT_SCALE_KEY = 'logit_scale'
# ILA's xclip.load defaults: two prompt-generator layers, alpha initialised to 0.1.
PROMPT_LAYERS = 2
PROMPT_ALPHA = 0.1


@functools.lru_cache(maxsize=1)
def _tokenizer():
    # open_clip ships CLIP's BPE vocabulary and the same text cleaning (ftfy, whitespace, lower case).
    from open_clip.tokenizer import SimpleTokenizer
    return SimpleTokenizer()


def tokenize(names, context_length):
    """Class names -> token ids (K, context_length): <start> BPE tokens <end>, zero padded.

    A name that does not fit raises (CLIP's own tokenize does; truncating would drop the end token, whose
    position the encoder reads)."""
    tok = _tokenizer()
    out = torch.zeros(len(names), context_length, dtype=torch.long)
    for i, name in enumerate(names):
        ids = [tok.sot_token_id] + tok.encode(name) + [tok.eot_token_id]
        if len(ids) > context_length:
            raise ValueError(f'class name {i} {name!r} is {len(ids)} tokens long; the CLIP text encoder '
                             f'reads at most {context_length}')
        out[i, :len(ids)] = torch.tensor(ids)
    return out


class CLIPTextTransformer(nn.Module):
    """The OpenAI CLIP text encoder, its key names. forward: tokens (K, L) -> features (K, output_dim)."""

    def __init__(self, *, context_length, vocab_size, width, heads, layers, output_dim):
        super().__init__()
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = CLIPTransformer([ResidualAttentionBlock(width, heads, causal=True) for _ in range(layers)])
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, output_dim))
        # CLIP's initialisation (used by toy runs; real runs load CLIP's weights over it).
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std = width ** -0.5 * (2 * max(layers, 1)) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=width ** -0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width ** -0.5)

    def forward(self, tokens):
        x = self.token_embedding(tokens) + self.positional_embedding       # (K, L, width)
        for block in self.transformer.resblocks:
            x = block(x)
        x = self.ln_final(x)
        # The end token has the largest id: its position carries the sequence feature.
        return x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)] @ self.text_projection


class CrossAttention(nn.Module):
    """Multi-head attention of queries (B, N, D) on keys/values (B, M, D); q/k/v without bias (X-CLIP)."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, q, kv):
        b, n, d = q.shape
        h = self.heads
        # (B, N, D) -> (B, h, N, D/h)
        q = self.q_proj(q).view(b, n, h, d // h).transpose(1, 2)
        k = self.k_proj(kv).view(b, -1, h, d // h).transpose(1, 2)
        v = self.v_proj(kv).view(b, -1, h, d // h).transpose(1, 2)
        attn = (q @ k.transpose(-2, -1) * (d // h) ** -0.5).softmax(dim=-1)   # (B, h, N, M)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class PromptGeneratorLayer(nn.Module):
    """text <- text + CrossAttn(LN(text), visual); text <- text + MLP(LN(text))."""

    def __init__(self, dim, heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = CrossAttention(dim, heads)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), QuickGELU(), nn.Linear(4 * dim, dim))

    def forward(self, text, visual):
        text = text + self.cross_attn(self.norm1(text), visual)
        return text + self.mlp(self.norm3(text))


class VideoSpecificPrompt(nn.Module):
    """X-CLIP's prompt generator. forward: text (B, K, D), visual (B, M, D) -> offsets (B, K, D)."""

    def __init__(self, dim, layers=PROMPT_LAYERS, alpha=PROMPT_ALPHA):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.decoder = nn.ModuleList([PromptGeneratorLayer(dim, max(1, dim // 64)) for _ in range(layers)])
        self.alpha = nn.Parameter(torch.full((dim,), float(alpha)))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, text, visual):
        visual = self.norm(visual)
        for layer in self.decoder:
            text = layer(text, visual)
        return self.alpha * text


def cosine_logits(video, text, logit_scale):
    """exp(logit_scale) * cos: video (B, D), text (B, K, D) or (K, D) -> (B, K)."""
    video = F.normalize(video, dim=-1)
    text = F.normalize(text, dim=-1)
    if text.dim() == 2:
        text = text.unsqueeze(0).expand(video.shape[0], -1, -1)
    return logit_scale.exp() * torch.einsum('bd,bkd->bk', video, text)


class ILATextHead(nn.Module):
    """Text classifier of ILA's Kinetics model. forward: video (B, D), patch tokens (B, T, N, width)
    -> logits (B, K) over ``class_names``."""

    def __init__(self, class_names, *, visual_width, output_dim, text_config):
        super().__init__()
        self.text = CLIPTextTransformer(**text_config, output_dim=output_dim)
        self.prompts_visual_ln = nn.LayerNorm(visual_width)
        # ILA/X-CLIP draw this projection from N(0, 1) and never train it.
        self.prompts_visual_proj = nn.Parameter(torch.randn(visual_width, output_dim))
        self.prompts_generator = VideoSpecificPrompt(output_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        for p in self.parameters():
            p.requires_grad_(False)
        self._cache = None
        self.set_class_names(class_names)

    def set_class_names(self, class_names):
        """Classify over another list of names (no retraining: the text features are recomputed)."""
        names = [str(n) for n in class_names]
        if not names:
            raise ValueError('the text head needs at least one class name')
        self.class_names = names
        self.register_buffer('frozen_features', None, persistent=False)
        tokens = tokenize(names, self.text.context_length).to(self.text.positional_embedding.device)
        self.register_buffer('tokens', tokens, persistent=False)
        self._cache = None

    def freeze_text_features(self):
        """Keep the text features of the current class list as a (non-persistent) buffer, so that an
        exported graph holds them as constants and not the text tower."""
        self.register_buffer('frozen_features', self.text_features().clone(), persistent=False)

    def text_features(self):
        """(K, D) text features of the class names, computed once per list and set of text weights (the
        key follows in-place updates such as load_state_dict, and moves between devices)."""
        if self.frozen_features is not None:
            return self.frozen_features
        params = list(self.text.parameters())
        key = tuple((p.data_ptr(), p._version, p.dtype) for p in params)
        if self._cache is None or self._cache[0] != key:
            # In the weights' precision even under autocast: the features are reused by every later step.
            with torch.no_grad(), torch.autocast(self.tokens.device.type, enabled=False):
                self._cache = (key, self.text(self.tokens))
        return self._cache[1]

    def forward(self, video, patch_tokens):
        # patch_tokens (B, T, N, width) -> visual context (B, N, D): LN and projection per token, mean over T
        context = (self.prompts_visual_ln(patch_tokens) @ self.prompts_visual_proj).mean(dim=1)
        text = self.text_features().to(video.dtype).unsqueeze(0).expand(video.shape[0], -1, -1)  # (B, K, D)
        text = text + self.prompts_generator(text, context)
        return cosine_logits(video, text, self.logit_scale)


def text_state(state):
    """The text tower and logit scale of a full CLIP state dict (float32), keys as in ILATextHead.

    Raises naming the missing keys when the file holds no text tower (an image-only file, whose keys
    have no 'visual.' prefix: its top-level blocks are the image tower's)."""
    if not any(k.startswith('visual.') for k in state):
        state = {}
    blocks = {k: v for k, v in state.items() if k.startswith('transformer.resblocks.')}
    missing = [k for k in (*TEXT_KEYS, LOGIT_SCALE_KEY) if k not in state]
    if not blocks:
        missing.append('transformer.resblocks.*')
    if missing:
        raise ValueError(f'no CLIP text tower: missing {missing} (the text head needs a full CLIP checkpoint, '
                         f'image and text towers, such as the OpenAI release files)')
    out = {f'text.{k}': state[k].float() for k in TEXT_KEYS}
    out.update({f'text.{k}': v.float() for k, v in blocks.items()})
    out[LOGIT_SCALE_KEY] = state[LOGIT_SCALE_KEY].float().reshape(())
    return out


def load_text_weights(head, state, path):
    """Load the text tower and logit scale of a CLIP state dict into an ILATextHead (shapes checked)."""
    text = text_state(state)
    own = head.state_dict()
    expected = {k for k in own if k.startswith('text.') or k == LOGIT_SCALE_KEY}
    missing = sorted(expected - set(text))
    unexpected = sorted(set(text) - expected)
    wrong = [f'{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}'
             for k, v in text.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f'{path}: the text tower does not match this CLIP architecture: missing {missing[:5]}, '
                         f'unexpected {unexpected[:5]}, shape mismatch {wrong[:5]}')
    head.load_state_dict(text, strict=False)
