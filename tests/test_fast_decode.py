"""The JPEG fast path (OpenCV's libjpeg-turbo) returns exactly PIL's pixels, and everything it cannot
decode exactly goes to PIL: truncated files raise, EXIF orientation is ignored as PIL ignores it."""
import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from ops import video_io
from ops.video_io import FrameReadError, decode_image_bytes, load_image


def _natural(h, w, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 0.7 + y * 0.3) % 256, (y * 0.9) % 256, (x * 0.2 + 50 * np.sin(y / 10)) % 256], -1)
    return np.clip(img + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def _pil_reference(data, mode):
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert(mode))


def _assert_opencv_decoded(data, mode, got):
    """The fast path took these bytes: a complete JPEG, and the pixels are OpenCV's own decode of them (a colour
    JPEG read as 'L' goes to PIL by design)."""
    assert video_io._complete_jpeg(data)
    flags = (cv2.IMREAD_COLOR_RGB if mode == 'RGB' else cv2.IMREAD_UNCHANGED) | cv2.IMREAD_IGNORE_ORIENTATION
    np.testing.assert_array_equal(got, cv2.imdecode(np.frombuffer(data, np.uint8), flags))


def _jpeg_pil(arr, **kw):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, 'JPEG', **kw)
    return buf.getvalue()


@pytest.mark.parametrize('size', [(256, 340), (128, 171), (37, 53)])
@pytest.mark.parametrize('writer', ['pil-420', 'pil-444', 'opencv', 'pil-progressive'])
def test_colour_jpeg_pixels_equal_pil(size, writer):
    arr = _natural(*size)
    if writer == 'opencv':
        data = cv2.imencode('.jpg', arr[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    elif writer == 'pil-progressive':
        data = _jpeg_pil(arr, quality=85, progressive=True)
    else:
        data = _jpeg_pil(arr, quality=90, subsampling=0 if writer == 'pil-444' else 2)
    for mode in ('RGB', 'L'):
        got = decode_image_bytes(data, mode=mode)
        np.testing.assert_array_equal(got, _pil_reference(data, mode))
    _assert_opencv_decoded(data, 'RGB', decode_image_bytes(data))


def test_greyscale_jpeg_as_flow_and_as_rgb_equal_pil():
    data = _jpeg_pil(_natural(64, 80)[..., 0], quality=90)
    for mode in ('L', 'RGB'):
        np.testing.assert_array_equal(decode_image_bytes(data, mode=mode), _pil_reference(data, mode))
        _assert_opencv_decoded(data, mode, decode_image_bytes(data, mode=mode))


def test_exif_orientation_is_ignored_like_pil(tmp_path):
    arr = _natural(40, 60)
    exif = Image.Exif()
    exif[0x0112] = 6   # "rotate 90 CW to display"
    data = _jpeg_pil(arr, quality=90, exif=exif.tobytes())
    path = tmp_path / 'rotated.jpg'
    path.write_bytes(data)
    got = load_image(str(path))
    assert got.shape == (40, 60, 3)
    np.testing.assert_array_equal(got, _pil_reference(data, 'RGB'))
    _assert_opencv_decoded(data, 'RGB', got)


def test_truncated_jpeg_raises_naming_the_file(tmp_path):
    data = _jpeg_pil(_natural(64, 80), quality=90)
    path = tmp_path / 'cut.jpg'
    path.write_bytes(data[:len(data) // 2])
    assert not video_io._complete_jpeg(data[:len(data) // 2])   # no EOI: PIL decodes it, and raises
    with pytest.raises(FrameReadError, match='cut.jpg'):
        load_image(str(path))
    with pytest.raises(FrameReadError, match='missing.jpg'):
        load_image(str(tmp_path / 'missing.jpg'))


def test_zero_padded_jpeg_and_png_decode(tmp_path):
    arr = _natural(32, 48)
    data = _jpeg_pil(arr, quality=90) + b'\x00' * 16
    np.testing.assert_array_equal(decode_image_bytes(data), _pil_reference(data, 'RGB'))
    _assert_opencv_decoded(data, 'RGB', decode_image_bytes(data))
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, 'PNG')
    np.testing.assert_array_equal(decode_image_bytes(buf.getvalue()), arr)


def test_dataset_read_returns_frames_in_requested_order_with_repeats(frames_dataset):
    from ops.dataset import VideoDataSet
    from ops.sampling import SamplingConfig
    ds = VideoDataSet(frames_dataset['root'], frames_dataset['rgb_list'], modality='RGB',
                      sampling=SamplingConfig(2, 'val'), seed=0)
    record = ds.records[0]
    n, handle = ds.open(record)
    once = ds.read(record, handle, n, [[1, 3]])
    repeated = ds.read(record, handle, n, [[3, 1, 3, n + 5]])   # clamped past the end
    assert torch.equal(repeated[0], once[1]) and torch.equal(repeated[1], once[0])
    assert torch.equal(repeated[2], once[1])
    last = ds.read(record, handle, n, [[n]])
    assert torch.equal(repeated[3], last[0])
