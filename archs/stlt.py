"""STLT: the Spatial-Temporal Layout Transformer (Radevski et al., ICCV 2021), as the multimodal-distillation
paper's reference code builds it (``modelling/hand_models.py``: CategoryBoxEmbeddings, SpatialTransformer,
TemporalTransformer, Stlt) for Something-Else layouts.

Per frame, every box becomes category embedding + Linear(box) + Linear(score), LayerNorm (eps 0.1, the
reference's value), dropout; a frame CLS token is prepended and a spatial transformer encoder runs over the
boxes with the padding boxes masked; its CLS output is the frame's layout embedding. Frame embeddings get a
learned position embedding, LayerNorm and dropout; a video CLS token is appended at the END, and a temporal
transformer encoder with a causal mask runs over the frames (each frame attends to itself and earlier
frames; the last position, the CLS token, attends to all of them); its output is the clip feature. TSN
(ops/models.py) adds the classifier (``new_fc``) on it.

Input: the Layout clip ``(B, T, 6, N, 1)`` that ops/layout.py encodes, per box (category index, score,
x1, y1, x2, y2) with coordinates divided by the frame size; category 0 is padding.

Deviations (README): the reference's side and state embeddings (EPIC-Kitchens hand detections) are not
built: on Something-Else layouts they are always the padding index, whose embedding is zero and never
trained, so the function is the same.
"""
import torch
import torch.nn as nn

from archs.backbone import VideoBackbone

# Category vocabulary of the reference: 0 pads, a box whose category names a hand is 'hand', any other 'object'.
LAYOUT_CATEGORIES = ('pad', 'object', 'hand')
BOX_FIELDS = 6          # category, score, x1, y1, x2, y2

MAX_BOXES = 14          # box slots per frame (the reference's max_objects); the model takes any number
# The reference sizes (hidden 768, 8 heads, 6 + 6 layers, feed-forward 4 x hidden, dropout 0.1) and a tiny
# variant for the toy set and tests.
# stlt_tiny scales the box embedding's initial weights by 5: with PyTorch's default init (the reference's) the
# coordinates are a weak signal next to the category embedding, and on the toy set, where motion is all there
# is, the tiny model stayed at 37.5% for 8 epochs (it learned only the boxes' presence); x5: 77% in 180 steps.
STLT_CONFIGS = {
    'stlt': dict(hidden_size=768, num_heads=8, spatial_layers=6, temporal_layers=6, dropout=0.1),
    'stlt_tiny': dict(hidden_size=64, num_heads=4, spatial_layers=1, temporal_layers=2, dropout=0.1,
                      box_init_gain=5.0),
}
LAYER_NORM_EPS = 0.1


def causal_mask(length):
    """(length, length) bool, True above the diagonal: position i may not attend to j > i."""
    return torch.ones(length, length, dtype=torch.bool).triu(1)


def _encoder(hidden_size, num_heads, num_layers, dropout):
    layer = nn.TransformerEncoderLayer(hidden_size, num_heads, dim_feedforward=4 * hidden_size, dropout=dropout,
                                       activation='gelu', batch_first=True)   # post-norm, as the reference
    return nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)


class STLT(VideoBackbone, nn.Module):
    """Layout clip (B, T, 6, N, 1) -> clip feature (B, hidden_size); ``feature_dim`` for TSN's head."""

    def __init__(self, num_segments, *, hidden_size=768, num_heads=8, spatial_layers=6, temporal_layers=6,
                 dropout=0.1, box_init_gain=1.0):
        super().__init__()
        self.num_segments = int(num_segments)
        self.feature_dim = int(hidden_size)
        h = self.feature_dim
        self.category_embedding = nn.Embedding(len(LAYOUT_CATEGORIES), h, padding_idx=0)
        self.box_embedding = nn.Linear(4, h)
        with torch.no_grad():
            self.box_embedding.weight.mul_(box_init_gain)
        self.score_embedding = nn.Linear(1, h)
        self.box_norm = nn.LayerNorm(h, eps=LAYER_NORM_EPS)
        self.box_dropout = nn.Dropout(dropout)
        self.frame_cls = nn.Parameter(torch.zeros(1, 1, h))
        self.spatial = _encoder(h, num_heads, spatial_layers, dropout)
        self.position_embedding = nn.Embedding(self.num_segments, h)
        self.frame_norm = nn.LayerNorm(h, eps=LAYER_NORM_EPS)
        self.frame_dropout = nn.Dropout(dropout)
        self.video_cls = nn.Parameter(torch.zeros(1, 1, h))
        self.temporal = _encoder(h, num_heads, temporal_layers, dropout)
        self.register_buffer('_causal', causal_mask(self.num_segments + 1), persistent=False)

    def frame_embeddings(self, layout):
        """(B, T, 6, N, 1) -> per-frame layout embeddings (B, T, H) (the spatial transformer's CLS outputs)."""
        b, t, fields, n, _ = layout.shape
        if fields != BOX_FIELDS or t != self.num_segments:
            raise ValueError(f'STLT expects a layout clip (B, {self.num_segments}, {BOX_FIELDS}, N, 1), '
                             f'got {tuple(layout.shape)}')
        boxes = layout.squeeze(-1).transpose(2, 3).reshape(b * t, n, fields)   # (B*T, N, 6)
        category = boxes[..., 0].round().long()
        emb = (self.category_embedding(category) + self.box_embedding(boxes[..., 2:6])
               + self.score_embedding(boxes[..., 1:2]))                        # (B*T, N, H)
        emb = self.box_dropout(self.box_norm(emb))
        tokens = torch.cat([self.frame_cls.expand(b * t, -1, -1), emb], dim=1)  # (B*T, 1 + N, H)
        pad = torch.cat([torch.zeros(b * t, 1, dtype=torch.bool, device=layout.device), category == 0], dim=1)
        out = self.spatial(tokens, src_key_padding_mask=pad)                   # (B*T, 1 + N, H)
        return out[:, 0].reshape(b, t, -1)

    def forward(self, layout):
        frames = self.frame_embeddings(layout)                                 # (B, T, H)
        b, t, _ = frames.shape
        frames = frames + self.position_embedding(torch.arange(t, device=frames.device))[None]
        frames = self.frame_dropout(self.frame_norm(frames))
        tokens = torch.cat([frames, self.video_cls.expand(b, -1, -1)], dim=1)  # (B, T + 1, H): CLS last
        out = self.temporal(tokens, mask=self._causal)
        return out[:, -1]                                                      # (B, H)


def stlt(name, num_segments=8, input_size=None):
    """STLT of registry ``name`` (STLT_CONFIGS) for clips of ``num_segments`` frames. ``input_size`` (what
    TSN passes every video backbone) does not apply to boxes."""
    if name not in STLT_CONFIGS:
        raise ValueError(f'unknown STLT variant {name!r}; choose from {sorted(STLT_CONFIGS)}')
    return STLT(num_segments, **STLT_CONFIGS[name])
