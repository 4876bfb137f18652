"""Online TSM demo: classify a video file, a camera or a stream frame by frame with cached shift buffers.

    python scripts/online_demo.py --weights ckpt.best.pth.tar --video clip.mp4 --output annotated.mp4
    python scripts/online_demo.py --weights ckpt.best.pth.tar --camera 0 --every 2
    python scripts/online_demo.py --weights ckpt.best.pth.tar --url rtsp://host/stream --max_frames 300
    python scripts/online_demo.py --weights ckpt.best.pth.tar --video clip.mp4 --export exported/

The checkpoint must be a uni-directional TSM (main.py --shift --shift_direction uni). Each processed frame
is resized (shorter side to --scale_size) and centre-cropped like the test transform, then runs one
``step`` of the streaming model (ops/online.py). As in TSM's online demo, the shown class is the argmax of
the logits summed over the last --history processed frames (TSM: 12); its probability is the softmax of
their mean. TSM's gesture-specific post-processing (masking classes, a change needs two agreeing frames)
is not applied. One line per processed frame goes to stdout:

    frame 12: <label> p=0.873 (4.1 ms)

Runs headless; --output writes every input frame with the current prediction and latency drawn on it.
--export DIR writes step.pt2 (torch.export) and step.onnx with the state as explicit inputs/outputs and
prints the max abs difference to eager on the processed frames (onnxruntime; at most 16 frames).
"""
import argparse
import logging
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops.online import export_parity, export_step, load_uni_model, state_nbytes, to_streaming  # noqa: E402
from ops.temporal_shift import SHIFT_DIRECTIONS  # noqa: E402
from ops.transforms import build_transform  # noqa: E402
from ops.utils import HelpFormatter  # noqa: E402

logger = logging.getLogger('online_demo')
EXPORT_FRAMES = 16
MIN_OUTPUT_WIDTH = 256


def get_parser():
    p = argparse.ArgumentParser(prog='online_demo.py', description=__doc__.split('\n\n')[0],
                                formatter_class=HelpFormatter)
    p.add_argument('--weights', required=True, help='checkpoint of a uni-directional TSM')
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--video', help='video file (PyAV)')
    src.add_argument('--camera', type=int, help='camera index (OpenCV)')
    src.add_argument('--url', help='network stream, e.g. rtsp://... (PyAV)')
    p.add_argument('--output', default=None, help='annotated video to write (mp4, H.264)')
    p.add_argument('--history', type=int, default=12, help='processed frames whose logits are summed')
    p.add_argument('--every', type=int, default=1, help='process every k-th frame (others show the last result)')
    p.add_argument('--max_frames', type=int, default=0, help='stop after N input frames (0: until the end)')
    p.add_argument('--category_file', default=None, help='class names, one per line (default: class indices)')
    p.add_argument('--scale_size', type=int, default=None,
                   help='shorter side before the centre crop (default: the model\'s, 256/224 x crop)')
    p.add_argument('--shift_direction', default=None, choices=SHIFT_DIRECTIONS,
                   help='released TSM files only (ours record it)')
    p.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    p.add_argument('--dtype', default='fp32', choices=('fp32', 'bf16'))
    p.add_argument('--export', default=None, metavar='DIR', help='export step.pt2 / step.onnx and check parity')
    return p


def parse_args(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.history < 1 or args.every < 1 or args.max_frames < 0:
        parser.error('--history and --every must be >= 1, --max_frames >= 0')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: CUDA is not available')
    if not os.path.isfile(args.weights):
        parser.error(f'--weights: no such file {args.weights!r}')
    if args.video is not None and not os.path.isfile(args.video):
        parser.error(f'--video: no such file {args.video!r}')
    if args.export and args.dtype != 'fp32':
        parser.error('--export checks parity in fp32; drop --dtype bf16')
    return args


# ---------------------------------------------------------------------------------------------- sources
def pyav_frames(path):
    """RGB uint8 (H, W, 3) frames of a file or network stream, and its frame rate."""
    import av
    try:
        container = av.open(path)
        stream = container.streams.video[0]
    except Exception as exc:  # PyAV raises its own error types (av.FFmpegError, IndexError: no video)
        raise SystemExit(f'cannot open video {path!r}: {exc}') from None
    rate = float(stream.average_rate or 25)

    def frames():
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format='rgb24')
        finally:
            container.close()
    return frames(), rate


def camera_frames(index):
    import cv2
    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        cap.release()
        raise SystemExit(f'--camera {index}: cannot open camera {index} (no such device, or it is busy)')
    rate = cap.get(cv2.CAP_PROP_FPS) or 25.0

    def frames():
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    return
                yield bgr[:, :, ::-1].copy()
        finally:
            cap.release()
    return frames(), rate


# ---------------------------------------------------------------------------------------------- output
class Annotator:
    """Writes frames with a white band below them holding the prediction and the latency (H.264 mp4);
    frames narrower than MIN_OUTPUT_WIDTH are enlarged (nearest neighbour) so the text fits."""

    def __init__(self, path, rate):
        import av
        self.container = av.open(path, mode='w')
        self.stream = self.container.add_stream('libx264', rate=max(1, round(rate)))
        self.stream.pix_fmt = 'yuv420p'
        self.size = None

    def write(self, rgb, lines):
        import av
        from PIL import Image, ImageDraw
        image = Image.fromarray(rgb)
        if image.width < MIN_OUTPUT_WIDTH:     # small inputs are enlarged so the text fits
            k = -(-MIN_OUTPUT_WIDTH // image.width)
            image = image.resize((image.width * k, image.height * k), Image.NEAREST)
        w, h = image.size
        band = 14 * len(lines) + 4
        canvas = Image.new('RGB', (w + w % 2, h + band + (h + band) % 2), 'white')
        canvas.paste(image, (0, 0))
        draw = ImageDraw.Draw(canvas)
        for i, line in enumerate(lines):
            draw.text((4, h + 2 + 14 * i), line, fill='black')
        if self.size is None:
            self.size = canvas.size
            self.stream.width, self.stream.height = self.size
        frame = av.VideoFrame.from_ndarray(np.asarray(canvas), format='rgb24')
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self):
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


# ---------------------------------------------------------------------------------------------- main
def class_names(path, num_class):
    if path is None:
        return [f'class {i}' for i in range(num_class)]
    with open(path) as f:
        names = [line.rstrip('\n') for line in f if line.strip()]
    if len(names) != num_class:
        raise SystemExit(f'--category_file {path}: {len(names)} names but the model has {num_class} classes')
    return names


def main(args):
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    try:
        model = load_uni_model(args.weights, shift_direction=args.shift_direction)
    except (OSError, RuntimeError, ValueError) as exc:
        raise SystemExit(f'--weights {exc}') from None
    names = class_names(args.category_file, model.num_class)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == 'bf16' else torch.float32
    stream = to_streaming(model).to(device=device, dtype=dtype)
    transform = build_transform(False, 'RGB', input_size=model.crop_size,
                                scale_size=args.scale_size or model.scale_size, test_crops=1,
                                **model.normalization())
    if args.camera is not None:
        frames, rate = camera_frames(args.camera)
    else:
        frames, rate = pyav_frames(args.video or args.url)
    writer = None
    if args.output:
        try:   # an unwritable path fails here, named, not after the whole stream was processed
            os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
            writer = Annotator(args.output, rate)
        except OSError as exc:
            raise SystemExit(f'--output {args.output}: cannot write it ({exc.strerror or exc})') from None

    state, history, latencies, processed = None, [], [], []
    lines = ['waiting for the first frame']
    n = 0
    with torch.no_grad():
        for n, rgb in enumerate(frames, start=1):
            if (n - 1) % args.every == 0:
                t0 = time.perf_counter()
                x = transform(torch.from_numpy(rgb).unsqueeze(0))[0]          # (1, 3, h, w)
                x = x.to(device=device, dtype=dtype)
                logits, state = stream(x, state)
                logits = logits.float()
                if device.type == 'cuda':
                    torch.cuda.synchronize()
                ms = (time.perf_counter() - t0) * 1e3
                latencies.append(ms)
                history = (history + [logits[0].cpu()])[-args.history:]
                mean = torch.stack(history).mean(0)
                k = int(mean.argmax())
                prob = float(torch.softmax(mean, 0)[k])
                lines = [names[k], f'p={prob:.3f}  {ms:.1f} ms/frame']
                print(f'frame {n}: {names[k]} p={prob:.3f} ({ms:.1f} ms)', flush=True)
                if args.export and len(processed) < EXPORT_FRAMES:
                    processed.append(x.cpu())
            if writer is not None:
                writer.write(rgb, lines)
            if args.max_frames and n >= args.max_frames:
                break
    if writer is not None:
        writer.close()
    if not latencies:
        raise SystemExit('no frame was read from the source')
    print(f'{n} frames read, {len(latencies)} processed; step latency median '
          f'{statistics.median(latencies):.1f} ms (first frame {latencies[0]:.1f} ms); state '
          f'{state_nbytes(state) / 1024:.1f} KiB in {len(state)} tensors', flush=True)
    if args.export:
        export(stream.cpu(), torch.stack(processed, 1), args.export)


def export(stream, clip, out_dir):
    """clip: (1, T, 3, h, w) of processed frames -> step.pt2 / step.onnx in out_dir, parity printed."""
    os.makedirs(out_dir, exist_ok=True)
    h, w = clip.shape[-2:]
    onnx_path = os.path.join(out_dir, 'step.onnx')
    program = export_step(stream, h, w, batch=1, onnx_path=onnx_path)
    torch.export.save(program, os.path.join(out_dir, 'step.pt2'))
    diffs = export_parity(stream, clip, program=program, onnx_path=onnx_path)
    for backend, d in diffs.items():
        print(f'export parity ({backend}, {clip.shape[1]} frames): max abs diff logits {d["logits"]:.3g}, '
              f'state {d["state"]:.3g}', flush=True)


if __name__ == '__main__':
    main(parse_args())
