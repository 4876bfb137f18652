"""Input modalities: the closed set, channels per frame, frames per segment and the first-conv change
between modalities. A leaf module (torch only), so the dataset, the model and the checkpoint loader
all take these from here without importing each other."""
import torch
import torch.nn as nn

MODALITIES = ('RGB', 'Flow', 'RGBDiff', 'Audio', 'Layout')
# per frame: Flow stacks x and y; Audio is one spectrogram image repeated to 3 channels (ops/audio.py);
# Layout is a (6, max_boxes, 1) "image" of boxes per frame (ops/layout.py: category, score, x1, y1, x2, y2
# per box), so clips, views and batches keep the image modalities' shapes.
CHANNELS = {'RGB': 3, 'Flow': 2, 'RGBDiff': 3, 'Audio': 3, 'Layout': 6}
# Frames loaded per segment when new_length is not given. RGBDiff loads 6 raw frames; the model turns
# them into 5 differences.
_DEFAULT_NEW_LENGTH = {'RGB': 1, 'Flow': 5, 'RGBDiff': 5, 'Audio': 1, 'Layout': 1}


def check_modality(modality):
    if modality not in MODALITIES:
        raise ValueError(f'unknown modality {modality!r}; allowed: {", ".join(MODALITIES)}')


def default_new_length(modality):
    """TSM's new_length: frames per segment for RGB/Flow, number of DIFFERENCES for RGBDiff."""
    check_modality(modality)
    return _DEFAULT_NEW_LENGTH[modality]


def frames_per_segment(modality, new_length=None):
    """Frames the dataset reads per segment: RGB 1, Flow 5, RGBDiff 6 by default (new_length + 1)."""
    check_modality(modality)
    length = _DEFAULT_NEW_LENGTH[modality] if new_length is None else int(new_length)
    if length < 1:
        raise ValueError(f'new_length must be >= 1, got {length}')
    return length + 1 if modality == 'RGBDiff' else length


def first_conv_name(module):
    """Dotted name of the first nn.Conv2d in ``module.modules()`` order (TSM's rule)."""
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d):
            return name
    raise ValueError(f'{type(module).__name__} has no Conv2d')


def mean_expand_kernel(weight, in_channels):
    """(O, C, kh, kw) -> (O, in_channels, kh, kw): the channel mean replicated, no rescaling (TSM)."""
    o, _, kh, kw = weight.shape
    return weight.mean(dim=1, keepdim=True).expand(o, in_channels, kh, kw).contiguous()


def replace_first_conv(module, in_channels):
    """Rebuild the first conv of ``module`` for ``in_channels`` inputs (kernel = RGB channel mean)."""
    name = first_conv_name(module)
    parent_name, _, leaf = name.rpartition('.')
    parent = module.get_submodule(parent_name) if parent_name else module
    old = getattr(parent, leaf)
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, old.dilation,
                    old.groups, bias=old.bias is not None)
    with torch.no_grad():
        new.weight.copy_(mean_expand_kernel(old.weight, in_channels))
        if old.bias is not None:
            new.bias.copy_(old.bias)
    setattr(parent, leaf, new)
    return name
