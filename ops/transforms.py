"""Clip transforms on uint8 tensors, with TSM's crop boxes.

Input: frames, uint8 tensor (F, H, W, C) (C = 3 for RGB/RGBDiff, 2 for Flow x, y); every frame gets
the same geometry. Output: float tensor (V, F, C, h, w), V views (crops) in TSM's order.

Box definitions follow TSM's GroupMultiScaleCrop / GroupScale / GroupCenterCrop / GroupOverSample /
GroupFullResSample; the boxes are pure functions so they can be tested exactly. Differences from TSM
(documented in the README): crops and resizes run on whole-clip uint8 tensors (torch bilinear,
align_corners=False, antialias=True: same geometry as PIL BILINEAR, values within 1 grey level); a
crop larger than the frame is clamped to the frame (TSM padded with black); the 3-crop test takes its
crops along the LONGER side also for portrait frames (TSM's offsets then gave three identical crops);
random choices come from one np.random.Generator draw of 3 uniforms instead of python `random`.

Optional training augmentations of the ILA recipe (datasets/build.py of ILA: ColorJitter p 0.8,
GrayScale p 0.2 after the crop, RandomErasing 0.25 after normalisation): colour jitter (brightness
0.4, contrast 0.4, saturation 0.2, hue 0.1 in a random order, torchvision's functional ops on uint8)
and grayscale on RGB/RGBDiff frames, and timm-style random erasing (one box, area 2-33 %, aspect
0.3-3.3, up to 10 tries, filled with 0 after normalisation) on every modality. One draw per clip,
applied to every frame (ILA's ColorJitter drew new factors per frame). Their draws follow the 3
geometry uniforms on the same generator, so modality ranks and teachers see the same views.

A flip can swap labels (flip_pairs, e.g. Something-Something's 86<->87, 93<->94, 166<->167 as TDN's
GroupRandomHorizontalFlip_sth): label_for(label, params) gives the label of the flipped clip.
"""
import dataclasses
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from ops.modality import check_modality

TEST_CROPS = (1, 3, 5, 10)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FLOW_MEAN = (0.5,)
FLOW_STD = (0.226,)
RGB_SCALES = (1, .875, .75, .66)
FLOW_SCALES = (1, .875, .75)

Box = Tuple[int, int, int, int]   # (x, y, w, h) in pixels of the input frame

# ILA's ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)
JITTER_BRIGHTNESS, JITTER_CONTRAST, JITTER_SATURATION, JITTER_HUE = 0.4, 0.4, 0.2, 0.1
# timm RandomErasing defaults (as ILA uses it): area fraction, aspect-ratio range, tries
ERASE_AREA = (0.02, 1 / 3)
ERASE_LOG_ASPECT = (math.log(0.3), math.log(1 / 0.3))
ERASE_TRIES = 10


@dataclasses.dataclass(frozen=True)
class TrainParams:
    """Random parameters of one training clip when extra augmentations are on.

    geometry: the 3 uniforms of draw_train_params; colour: None or (order of the 4 ops, brightness,
    contrast, saturation, hue factors); gray: convert to grayscale; erase: None or (x, y, w, h) on the
    output crop."""
    geometry: np.ndarray
    colour: Optional[tuple] = None
    gray: bool = False
    erase: Optional[Box] = None


def draw_colour(rng: np.random.Generator, p: float) -> Optional[tuple]:
    """Colour jitter draw: always 1 + 4 uniforms and a permutation of 4; None when not applied."""
    apply, u, order = rng.random(), rng.random(4), rng.permutation(4)
    if apply >= p:
        return None
    b, c, s = (1 + m * (2 * x - 1) for m, x in zip((JITTER_BRIGHTNESS, JITTER_CONTRAST, JITTER_SATURATION), u))
    return tuple(int(i) for i in order), float(b), float(c), float(s), float(JITTER_HUE * (2 * u[3] - 1))


def draw_erase_box(rng: np.random.Generator, p: float, height: int, width: int) -> Optional[Box]:
    """timm RandomErasing's box on an height x width image (None: not applied or no box fitted)."""
    if rng.random() >= p:
        return None
    area = height * width
    for _ in range(ERASE_TRIES):
        target = rng.uniform(*ERASE_AREA) * area
        aspect = math.exp(rng.uniform(*ERASE_LOG_ASPECT))
        h = int(round(math.sqrt(target * aspect)))
        w = int(round(math.sqrt(target / aspect)))
        if w < width and h < height:
            y = int(rng.integers(0, height - h + 1))
            x = int(rng.integers(0, width - w + 1))
            return x, y, w, h
    return None


def parse_flip_pairs(text: str, option: str = '--flip_pairs') -> Dict[int, int]:
    """'86:87,93:94' -> {86: 87, 87: 86, 93: 94, 94: 93}; '' or 'none' -> {}. Clear error on bad input."""
    if text is None or text.strip().lower() in ('', 'none'):
        return {}
    mapping = {}
    for item in text.split(','):
        parts = item.strip().split(':')
        try:
            a, b = (int(v) for v in parts)
        except ValueError:
            raise ValueError(f'{option}: expected pairs like 86:87,93:94 (class indices), got {item!r}') from None
        if a == b or a < 0 or b < 0 or a in mapping or b in mapping:
            raise ValueError(f'{option}: {item!r} must pair two different non-negative classes, each at most once')
        mapping[a], mapping[b] = b, a
    return mapping


def default_scales(modality: str) -> tuple:
    check_modality(modality)
    return RGB_SCALES if modality == 'RGB' else FLOW_SCALES


def default_norm(modality: str) -> Tuple[tuple, tuple]:
    """(mean, std) applied to pixels / 255: RGB ImageNet, Flow 0.5/0.226, RGBDiff raw [0, 1]."""
    check_modality(modality)
    if modality == 'RGB':
        return IMAGENET_MEAN, IMAGENET_STD
    if modality == 'Flow':
        return FLOW_MEAN, FLOW_STD
    return (0.0,), (1.0,)


def crop_pairs(W: int, H: int, input_size: int, scales: Sequence[float], max_distort: int = 1) -> List[Tuple[int, int]]:
    """TSM's candidate (w, h) crop sizes: sizes from the shorter side, snapped to input_size within 3 px,
    pairs whose scale indices differ by at most max_distort (outer loop over heights)."""
    base = min(W, H)
    sizes = [int(base * s) for s in scales]
    sizes = [input_size if abs(s - input_size) < 3 else s for s in sizes]
    return [(sizes[j], sizes[i]) for i in range(len(sizes)) for j in range(len(sizes))
            if abs(i - j) <= max_distort]


def fixed_offsets(W: int, H: int, cw: int, ch: int, more_fix_crop: bool = True) -> List[Tuple[int, int]]:
    """TSM's fill_fix_offset: 5 (corners, centre) or 13 positions on a quarter grid, in TSM's order."""
    ws, hs = (W - cw) // 4, (H - ch) // 4
    offsets = [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)]
    if more_fix_crop:
        offsets += [(0, 2 * hs), (4 * ws, 2 * hs), (2 * ws, 4 * hs), (2 * ws, 0),
                    (ws, hs), (3 * ws, hs), (ws, 3 * hs), (3 * ws, 3 * hs)]
    return offsets


def draw_train_params(rng: np.random.Generator) -> np.ndarray:
    """The only random draw of a training transform: 3 uniforms (crop size, position, flip).

    Always the same count, so every modality consumes a shared generator identically.
    """
    return rng.random(3)


def multiscale_crop_box(W: int, H: int, input_size: int, scales: Sequence[float], u: Sequence[float]) -> Box:
    """Crop box of GroupMultiScaleCrop for draws u (from draw_train_params): uniform choice of the
    (w, h) pair with u[0], of the 13 fixed offsets with u[1]."""
    pairs = crop_pairs(W, H, input_size, scales)
    cw, ch = pairs[min(int(u[0] * len(pairs)), len(pairs) - 1)]
    cw, ch = min(cw, W), min(ch, H)
    offsets = fixed_offsets(W, H, cw, ch)
    x, y = offsets[min(int(u[1] * len(offsets)), len(offsets) - 1)]
    return x, y, cw, ch


def scaled_size(W: int, H: int, size: int) -> Tuple[int, int]:
    """torchvision Resize(int): shorter side -> size, longer side truncated. Returns (w, h)."""
    if W <= H:
        return size, int(size * H / W)
    return int(size * W / H), size


def center_crop_box(W: int, H: int, crop: int) -> Box:
    """torchvision CenterCrop (Python round, i.e. half to even)."""
    cw, ch = min(crop, W), min(crop, H)
    return int(round((W - cw) / 2.0)), int(round((H - ch) / 2.0)), cw, ch


def eval_crop_boxes(W: int, H: int, crop: int, test_crops: int) -> List[Box]:
    """Boxes (on the already scaled frame) of the test crops, in TSM's order; 10 crops are the 5
    boxes, each used twice (normal, flipped)."""
    if test_crops not in TEST_CROPS:
        raise ValueError(f'test_crops must be one of {TEST_CROPS}, got {test_crops}')
    if test_crops == 1:
        return [center_crop_box(W, H, crop)]
    cw, ch = min(crop, W), min(crop, H)
    ws, hs = (W - cw) // 4, (H - ch) // 4
    if test_crops == 3:
        # GroupFullResSample: left, right, centre along the longer side.
        if W >= H:
            offsets = [(0, 2 * hs), (4 * ws, 2 * hs), (2 * ws, 2 * hs)]
        else:
            offsets = [(2 * ws, 0), (2 * ws, 4 * hs), (2 * ws, 2 * hs)]
    else:
        offsets = fixed_offsets(W, H, cw, ch, more_fix_crop=False)   # UL, UR, LL, LR, centre
    return [(x, y, cw, ch) for x, y in offsets]


def _crop_resize(frames: torch.Tensor, box: Box, size: Optional[Tuple[int, int]], antialias: bool) -> torch.Tensor:
    """(F, H, W, C) uint8 -> (F, C, h, w) uint8 (channels-last strides); size is (w, h) or None (no resize).

    Resizing runs on uint8 like PIL (rounded to integers); with antialias=True torch's uint8 bilinear
    reproduces PIL's BILINEAR resize to within 1 grey level. Pixels stay uint8 until _finish, so flips
    move 1 byte per value and the float clip is written once.
    """
    x, y, w, h = box
    clip = frames[:, y:y + h, x:x + w, :].permute(0, 3, 1, 2)   # channels-last view, no copy
    if size is not None and (size[0] != w or size[1] != h):
        clip = F.interpolate(clip, size=(size[1], size[0]), mode='bilinear', align_corners=False,
                             antialias=antialias)
    return clip


TRANSFORM_OUTPUTS = ('float', 'uint8')


def normalization_constants(mean, std, div, channels):
    """(mean, 1 / std) as float32 (1, channels, 1, 1) in uint8 pixel units: per-frame values tiled over
    the channels (TSM GroupNormalize); div=True means mean/std are given for pixels / 255."""
    if channels % len(mean) or channels % len(std):
        raise ValueError(f'{channels} channels is not a multiple of {len(mean)} mean / {len(std)} std values')
    scale = 255.0 if div else 1.0
    mean = (torch.as_tensor(mean, dtype=torch.float32) * scale).repeat(channels // len(mean))
    std = (torch.as_tensor(std, dtype=torch.float32) * scale).repeat(channels // len(std))
    return mean.view(1, channels, 1, 1), (1.0 / std).view(1, channels, 1, 1)


def normalize_uint8(x, mean, inv_std, roll=False):
    """uint8 (B, C, h, w) -> float32 (float(v) - mean) * inv_std on x's device, the arithmetic of the
    float transform bit for bit; roll reverses each frame's 3 channels (RGB -> BGR) first. Keeps x's
    memory format (channels_last in, channels_last out)."""
    if roll:
        b, c, h, w = x.shape
        x = x.view(b, c // 3, 3, h, w).flip(2).view(b, c, h, w)
    return x.float().sub_(mean).mul_(inv_std)


class ClipTransform:
    """transform(frames, rng) -> (V, F, C, h, w). Build with build_transform."""

    def __init__(self, train, modality, input_size, scale_size, flip, scales, test_crops, full_res,
                 mean, std, div, roll, antialias, flip_pairs=None, color_jitter=0.0, grayscale=0.0,
                 random_erasing=0.0, output='float'):
        if output not in TRANSFORM_OUTPUTS:
            raise ValueError(f'output must be one of {TRANSFORM_OUTPUTS}, got {output!r}')
        if output == 'uint8' and random_erasing > 0:
            raise ValueError('random erasing fills normalised zeros, which no uint8 pixel represents: '
                             "use output='float' with random_erasing")
        self.output = output
        self.train = train
        self.modality = modality
        self.input_size = int(input_size)
        self.scale_size = int(scale_size)
        self.flip = flip
        self.scales = tuple(scales)
        self.test_crops = test_crops
        self.crop_size = self.scale_size if full_res else self.input_size
        self.num_crops = 1 if train else test_crops
        self.is_flow = modality == 'Flow'
        self.div = div
        self.roll = roll
        self.antialias = antialias
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)
        self.flip_pairs = dict(flip_pairs or {})
        self.color_jitter = float(color_jitter)
        self.grayscale = float(grayscale)
        self.random_erasing = float(random_erasing)
        self.extras = train and (self.color_jitter > 0 or self.grayscale > 0 or self.random_erasing > 0)

    def draw(self, rng: Optional[np.random.Generator]):
        """Random parameters of one sample (None at test time): the 3 geometry uniforms, or TrainParams
        when colour jitter / grayscale / erasing are on. The draws depend on the options only (not on
        the modality), so every modality consuming the same generator draws the same."""
        if not self.train:
            return None
        if rng is None:
            raise ValueError('a training transform needs rng (np.random.Generator)')
        geometry = draw_train_params(rng)
        if not self.extras:
            return geometry
        colour = draw_colour(rng, self.color_jitter) if self.color_jitter > 0 else None
        gray = bool(rng.random() < self.grayscale) if self.grayscale > 0 else False
        erase = (draw_erase_box(rng, self.random_erasing, self.input_size, self.input_size)
                 if self.random_erasing > 0 else None)
        return TrainParams(geometry, colour, gray, erase)

    def flipped(self, params) -> bool:
        """Whether a training clip drawn with params is mirrored."""
        geometry = params.geometry if isinstance(params, TrainParams) else params
        return bool(self.train and self.flip and geometry[2] < 0.5)

    def label_for(self, label: int, params) -> int:
        """The clip's label: swapped through flip_pairs when the clip is mirrored."""
        return self.flip_pairs.get(label, label) if self.flip_pairs and self.flipped(params) else label

    def _colour(self, clip, params):
        # uint8 (F, 3, h, w): TorchVision's functional ops, one set of factors for every frame.
        if self.is_flow or clip.shape[1] != 3:
            return clip
        if params.colour is not None:
            order, *factors = params.colour
            ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
            for i in order:
                clip = ops[i](clip, factors[i])
        if params.gray:
            clip = TF.rgb_to_grayscale(clip, num_output_channels=3)
        return clip

    def __call__(self, frames: torch.Tensor, rng: Optional[np.random.Generator] = None) -> torch.Tensor:
        return self.apply(frames, self.draw(rng))

    def _flip(self, clip):
        # uint8 (F, C, h, w); 255 - v is exact in uint8, so the result equals flipping the float clip.
        clip = clip.flip(-1)
        if self.is_flow:
            clip[:, 0] = 255 - clip[:, 0]   # flipping reverses horizontal motion: invert x only
        return clip

    def _finish(self, clip):
        # uint8 (F, C, h, w) in [0, 255] -> normalised float, contiguous (F, C, h, w); mean/std tile over
        # the channels (TSM GroupNormalize). (float(v) - mean) * inv_std, with one allocation.
        # output='uint8': a contiguous uint8 clip; the model normalises it on the device (TSN.forward).
        if self.output == 'uint8':
            return clip.contiguous()
        if self.roll:
            clip = clip.flip(1)   # RGB -> BGR (BN-Inception)
        mean, inv_std = normalization_constants(self.mean, self.std, self.div, clip.shape[1])
        out = torch.empty(clip.shape, dtype=torch.float32)
        torch.sub(clip, mean, out=out)   # uint8 is promoted to float32 before the subtraction
        return out.mul_(inv_std)

    def apply(self, frames: torch.Tensor, params) -> torch.Tensor:
        if frames.dtype != torch.uint8 or frames.dim() != 4:
            raise ValueError(f'frames must be a uint8 tensor (F, H, W, C), got {frames.dtype} {tuple(frames.shape)}')
        H, W = frames.shape[1:3]
        if self.train:
            geometry = params.geometry if isinstance(params, TrainParams) else params
            box = multiscale_crop_box(W, H, self.input_size, self.scales, geometry)
            clip = _crop_resize(frames, box, (self.input_size, self.input_size), self.antialias)
            if self.flipped(params):
                clip = self._flip(clip)
            if not isinstance(params, TrainParams):
                return self._finish(clip).unsqueeze(0)
            out = self._finish(self._colour(clip, params))
            if params.erase is not None:
                x, y, w, h = params.erase
                out[:, :, y:y + h, x:x + w] = 0
            return out.unsqueeze(0)
        sw, sh = scaled_size(W, H, self.scale_size)
        full = _crop_resize(frames, (0, 0, W, H), (sw, sh), self.antialias)   # (F, C, sh, sw)
        views = []
        for x, y, w, h in eval_crop_boxes(sw, sh, self.crop_size, self.test_crops):
            clip = full[:, :, y:y + h, x:x + w]
            views.append(self._finish(clip))
            if self.test_crops == 10:
                views.append(self._finish(self._flip(clip)))
        return torch.stack(views)


def build_transform(train: bool, modality: str, *, input_size: int = 224, scale_size: int = 256,
                    flip: bool = True, scales: Optional[Sequence[float]] = None, test_crops: int = 1,
                    full_res: bool = False, mean: Optional[Sequence[float]] = None,
                    std: Optional[Sequence[float]] = None, div: bool = True, roll: bool = False,
                    antialias: bool = True, flip_pairs: Optional[Dict[int, int]] = None,
                    color_jitter: float = 0.0, grayscale: float = 0.0,
                    random_erasing: float = 0.0, output: str = 'float') -> ClipTransform:
    """Train: multi-scale crop (scales default RGB [1,.875,.75,.66], Flow/RGBDiff [1,.875,.75]) +
    optional flip. Eval: shorter side to scale_size, then test_crops (1, 3, 5, 10) crops of input_size
    (scale_size with full_res). mean/std apply to pixels / 255 (div=False: raw 0-255, as BN-Inception);
    roll=True reverses RGB to BGR. Training only: flip_pairs (label swaps of a mirrored clip, see
    parse_flip_pairs), probabilities of colour jitter, grayscale and random erasing (0 = off).
    output='uint8' skips the normalisation (and roll): the clip stays uint8 (4x less DataLoader traffic)
    and the model normalises it on its device (TSN.forward)."""
    check_modality(modality)
    if test_crops not in TEST_CROPS:
        raise ValueError(f'test_crops must be one of {TEST_CROPS}, got {test_crops}')
    if train and test_crops != 1:
        raise ValueError('test_crops applies to evaluation transforms only')
    for name, p in (('color_jitter', color_jitter), ('grayscale', grayscale), ('random_erasing', random_erasing)):
        if not 0 <= p <= 1:
            raise ValueError(f'{name} is a probability in [0, 1], got {p}')
    default_mean, default_std = default_norm(modality)
    return ClipTransform(train, modality, input_size, scale_size, flip,
                         default_scales(modality) if scales is None else scales, test_crops, full_res,
                         default_mean if mean is None else mean, default_std if std is None else std,
                         div, roll, antialias, flip_pairs=flip_pairs, color_jitter=color_jitter,
                         grayscale=grayscale, random_erasing=random_erasing, output=output)
