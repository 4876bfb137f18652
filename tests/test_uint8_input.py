"""Loaders hand uint8 clips to the model, which normalises them on its device: the result is the float
transform's output bit for bit, for every modality and for BNInception's BGR 0-255 input."""
import numpy as np
import pytest
import torch

from ops.dataset import VideoDataSet
from ops.models import TSN
from ops.sampling import SamplingConfig
from ops.transforms import build_transform


@pytest.mark.parametrize('modality,arch', [('RGB', 'resnet18'), ('Flow', 'resnet18'), ('RGBDiff', 'resnet18'),
                                           ('RGB', 'BNInception'), ('Flow', 'mobilenetv2')])
@pytest.mark.parametrize('train', [True, False])
def test_model_normalises_uint8_like_the_float_transform(modality, arch, train):
    model = TSN(4, 2, modality, base_model=arch, pretrain='none', input_size=32)
    channels = {'RGB': 3, 'Flow': 2, 'RGBDiff': 3}[modality]
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2 * model.frames_per_segment, 40, 48,
                                                                        channels), dtype=np.uint8))
    kw = dict(input_size=32, scale_size=36, test_crops=1 if train else 3, **model.normalization())
    as_float = build_transform(train, modality, **kw)
    as_uint8 = build_transform(train, modality, output='uint8', **kw)
    params = as_float.draw(np.random.default_rng(1))
    ref = as_float.apply(frames, params)
    raw = as_uint8.apply(frames, params)
    assert raw.dtype == torch.uint8 and raw.is_contiguous() and raw.shape == ref.shape
    V, F, C, h, w = raw.shape
    got = model.normalize_input(raw.reshape(V, F * C, h, w))
    assert torch.equal(got, ref.reshape(V, F * C, h, w))   # bit for bit
    # channels_last in, channels_last out, same values
    cl = model.normalize_input(raw.reshape(V, F * C, h, w).contiguous(memory_format=torch.channels_last))
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(cl, got)


def test_bninception_roll_and_scale_are_applied_on_the_model_side():
    model = TSN(4, 1, 'RGB', base_model='BNInception', pretrain='none', input_size=32)
    norm = model.normalization()
    assert norm['roll'] and not norm['div']
    x = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    x[:, 0] = 200   # R
    out = model.normalize_input(x)
    # BGR order, 0-255 units: channel 2 (R) holds 200 - mean[2]; channels 0, 1 hold -mean[0], -mean[1]
    mean, std = norm['mean'], norm['std']
    assert out[0, 2, 0, 0].item() == pytest.approx((200 - mean[2]) / std[2])
    assert out[0, 0, 0, 0].item() == pytest.approx(-mean[0] / std[0])


def test_model_output_is_identical_from_uint8_and_float_loaders(frames_dataset):
    torch.manual_seed(0)
    model = TSN(3, 2, 'RGB', base_model='resnet18', pretrain='none', input_size=16).eval()
    outs = []
    for output in ('float', 'uint8'):
        transform = build_transform(False, 'RGB', input_size=16, scale_size=20, **model.normalization(),
                                    output=output)
        ds = VideoDataSet(frames_dataset['root'], frames_dataset['rgb_list'], modality='RGB',
                          sampling=SamplingConfig(2, 'val'), transform=transform, seed=0)
        clip, _, _ = ds[1]
        assert clip.dtype == (torch.uint8 if output == 'uint8' else torch.float32)
        with torch.no_grad():
            outs.append(model(clip.unsqueeze(0)))
    assert torch.equal(outs[0], outs[1])


def test_unknown_transform_output_is_refused():
    with pytest.raises(ValueError, match="output must be one of"):
        build_transform(True, 'RGB', output='fp16')
