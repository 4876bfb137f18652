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
"""
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ops.dataset_config import check_modality

TEST_CROPS = (1, 3, 5, 10)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FLOW_MEAN = (0.5,)
FLOW_STD = (0.226,)
RGB_SCALES = (1, .875, .75, .66)
FLOW_SCALES = (1, .875, .75)

Box = Tuple[int, int, int, int]   # (x, y, w, h) in pixels of the input frame


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
                 mean, std, div, roll, antialias, output='float'):
        if output not in TRANSFORM_OUTPUTS:
            raise ValueError(f'output must be one of {TRANSFORM_OUTPUTS}, got {output!r}')
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

    def draw(self, rng: Optional[np.random.Generator]):
        """Random parameters of one sample (None at test time)."""
        if not self.train:
            return None
        if rng is None:
            raise ValueError('a training transform needs rng (np.random.Generator)')
        return draw_train_params(rng)

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
            box = multiscale_crop_box(W, H, self.input_size, self.scales, params)
            clip = _crop_resize(frames, box, (self.input_size, self.input_size), self.antialias)
            if self.flip and params[2] < 0.5:
                clip = self._flip(clip)
            return self._finish(clip).unsqueeze(0)
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
                    antialias: bool = True, output: str = 'float') -> ClipTransform:
    """Train: multi-scale crop (scales default RGB [1,.875,.75,.66], Flow/RGBDiff [1,.875,.75]) +
    optional flip. Eval: shorter side to scale_size, then test_crops (1, 3, 5, 10) crops of input_size
    (scale_size with full_res). mean/std apply to pixels / 255 (div=False: raw 0-255, as BN-Inception);
    roll=True reverses RGB to BGR. output='uint8' skips the normalisation (and roll): the clip stays uint8
    (4x less DataLoader traffic) and the model normalises it on its device (TSN.forward)."""
    check_modality(modality)
    if test_crops not in TEST_CROPS:
        raise ValueError(f'test_crops must be one of {TEST_CROPS}, got {test_crops}')
    if train and test_crops != 1:
        raise ValueError('test_crops applies to evaluation transforms only')
    default_mean, default_std = default_norm(modality)
    return ClipTransform(train, modality, input_size, scale_size, flip,
                         default_scales(modality) if scales is None else scales, test_crops, full_res,
                         default_mean if mean is None else mean, default_std if std is None else std,
                         div, roll, antialias, output)
