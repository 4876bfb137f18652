"""Helpers shared by scripts/benchmark.py and scripts/vs_reference.py: the environment record, table or
JSON output, and the synthetic data tree every loading case reads.

Both scripts import this module by its package path (``scripts.bench_common``, the repository root on
sys.path), so it is loaded once, under one name.
"""
import datetime
import json
import os

import numpy as np
import torch


def load_average():
    return round(os.getloadavg()[0], 2)



def device_name(device):
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    try:
        with open('/proc/cpuinfo') as f:
            model = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), 'cpu')
    except OSError:
        model = 'cpu'
    return f'{model} ({torch.get_num_threads()} threads)'


def environment(device):
    return {'device': device_name(device), 'torch': torch.__version__,
            'date': datetime.datetime.now().isoformat(timespec='seconds'), 'threads': torch.get_num_threads(),
            'load_before': load_average()}



def print_table(rows, columns, title=None):
    """rows: list of dicts; columns: list of (key, header, format)."""
    if title:
        print(title)
    cells = [[header for _, header, _ in columns]]
    for row in rows:
        cells.append([('-' if row.get(key) is None else fmt.format(row[key])) for key, _, fmt in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for i, r in enumerate(cells):
        print('  '.join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            print('  '.join('-' * w for w in widths))


def emit(args, result, rows, columns, title):
    result.setdefault('env', {})['load_after'] = load_average()
    if args.json:
        print(json.dumps(result))
        return result
    env = result['env']
    print(f"# {env['device']} | torch {env['torch']} | {env['date']} | load {env['load_before']} -> "
          f"{env['load_after']}")
    print_table(rows, columns, title)
    return result



def _synthetic_frames(rng, num_frames, width, height):
    """uint8 (n, H, W, 3): a smooth random background with a moving disc and mild noise, so JPEG sizes
    and decode costs resemble real 340x256 video frames rather than pure noise."""
    import cv2
    bg = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (width, height),
                    interpolation=cv2.INTER_CUBIC).astype(np.int16)
    yy, xx = np.mgrid[0:height, 0:width]
    colour = rng.integers(0, 256, 3)
    frames = []
    for t in range(num_frames):
        cx, cy = width * (0.2 + 0.6 * t / max(1, num_frames - 1)), height / 2
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < (height / 6) ** 2
        img = bg + rng.integers(-6, 7, bg.shape)
        img[mask] = colour
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(frames)


def _write_box_file(path, rng, num_frames, width, height, boxes_per_frame=4):
    """A Layout box file (Something-Else format) with two hands and two objects on every frame."""
    frames = []
    for i in range(num_frames):
        corners = rng.uniform(0, 1, (boxes_per_frame, 2, 2)) * [width, height]
        labels = [{'box2d': dict(zip(('x1', 'y1', 'x2', 'y2'), map(float, np.concatenate([c.min(0), c.max(0)])))),
                   'category': 'hand' if k < 2 else f'object {k}', 'standard_category': 'hand' if k < 2 else '0000',
                   'gt_annotation': f'object {k}'} for k, c in enumerate(corners)]
        frames.append({'name': f'img_{i + 1:05d}.jpg', 'labels': labels})
    with open(path, 'w') as f:
        json.dump({'width': width, 'height': height, 'frames': frames}, f)


def make_data_tree(root, num_videos, num_frames, width, height, seed=0):
    """Write frames, x/y flow JPEGs, mp4s, HDF5 stores and list files under root; returns the paths."""
    import cv2
    import h5py
    from ops.audio import write_wav
    from ops.hdf5_store import write_audio, write_flow_frames, write_video_frames
    from ops.toy import VIDEO_FPS, soundtrack, write_video
    rng = np.random.default_rng(seed)
    quality = [cv2.IMWRITE_JPEG_QUALITY, 90]
    paths = {k: os.path.join(root, k) for k in ('frames', 'flow', 'videos', 'audio', 'videos_audio', 'boxes')}
    for p in paths.values():
        os.makedirs(p, exist_ok=True)
    rgb_h5, flow_h5, audio_h5 = (os.path.join(root, f'{k}.h5') for k in ('rgb', 'flow', 'audio'))
    rgb_lines, flow_lines, video_lines = [], [], []
    with h5py.File(rgb_h5, 'w') as rgb_store, h5py.File(flow_h5, 'w') as flow_store:
        for v in range(num_videos):
            vid = f'v{v:03d}'
            clip = _synthetic_frames(rng, num_frames, width, height)
            rgb_bytes, fx_bytes, fy_bytes = [], [], []
            os.makedirs(os.path.join(paths['frames'], vid))
            os.makedirs(os.path.join(paths['flow'], vid))
            for i, frame in enumerate(clip):
                ok, buf = cv2.imencode('.jpg', frame[..., ::-1], quality)
                rgb_bytes.append(buf.tobytes())
                with open(os.path.join(paths['frames'], vid, f'img_{i + 1:05d}.jpg'), 'wb') as f:
                    f.write(rgb_bytes[-1])
            for i in range(num_frames - 1):   # grayscale flow: the frame difference, offset to 128
                diff = clip[i + 1].astype(np.int16) - clip[i].astype(np.int16)
                for axis, store in ((0, fx_bytes), (1, fy_bytes)):
                    plane = np.clip(128 + diff[..., axis], 0, 255).astype(np.uint8)
                    ok, buf = cv2.imencode('.jpg', plane, quality)
                    store.append(buf.tobytes())
                    name = f'flow_{"xy"[axis]}_{i + 1:05d}.jpg'
                    with open(os.path.join(paths['flow'], vid, name), 'wb') as f:
                        f.write(store[-1])
            write_video(os.path.join(paths['videos'], vid + '.mp4'), clip)
            write_video_frames(rgb_store, vid, rgb_bytes)
            write_flow_frames(flow_store, vid, fx_bytes, fy_bytes)
            sound = {rate: soundtrack(0, num_frames, np.random.default_rng([seed, v]), rate=rate)
                     for rate in (24000, 48000)}
            write_wav(os.path.join(paths['audio'], vid + '.wav'), sound[24000], 24000)
            write_video(os.path.join(paths['videos_audio'], vid + '.mp4'), clip, audio=sound[48000], audio_rate=48000)
            with h5py.File(audio_h5, 'a') as audio_store:
                write_audio(audio_store, vid, sound[24000], 24000)
            _write_box_file(os.path.join(paths['boxes'], vid + '.json'), rng, num_frames, width, height)
            rgb_lines.append(f'{vid} {num_frames} 0')
            flow_lines.append(f'{vid} {num_frames - 1} 0')
            video_lines.append(f'{vid}.mp4 0')
    lists = {}
    for name, lines in (('rgb', rgb_lines), ('flow', flow_lines), ('video', video_lines)):
        lists[name] = os.path.join(root, f'{name}.txt')
        with open(lists[name], 'w') as f:
            f.write('\n'.join(lines) + '\n')
    return dict(paths, rgb_h5=rgb_h5, flow_h5=flow_h5, audio_h5=audio_h5, fps=VIDEO_FPS, lists=lists)



def data_case(case, tree, num_segments, input_size):
    """VideoDataSet keyword arguments of a benchmark case."""
    from ops.readers import ReaderConfig
    from ops.sampling import SamplingConfig
    modality = {'rgb': 'RGB', 'flow': 'Flow', 'rgbdiff': 'RGBDiff', 'audio': 'Audio',
                'layout': 'Layout'}[case.split('-')[0]]
    fmt = case.split('-')[1]
    kw = dict(modality=modality, seed=0)
    if modality == 'Audio':
        root = {'video': tree['videos_audio'], 'frames': tree['audio'], 'hdf5': tree['audio_h5']}[fmt]
        kw.update(root_path=root, list_file=tree['lists']['video' if fmt == 'video' else 'rgb'], data_format=fmt,
                  video_backend='pyav', audio=dict(fps=None if fmt == 'video' else tree['fps']))
    elif modality == 'Layout':
        kw.update(root_path=tree['boxes'], list_file=tree['lists']['rgb'], data_format='frames', image_tmpl='{}.json')
    elif fmt == 'frames':
        root = tree['flow'] if modality == 'Flow' else tree['frames']
        kw.update(root_path=root, list_file=tree['lists']['flow' if modality == 'Flow' else 'rgb'],
                  data_format='frames', image_tmpl='flow_{}_{:05d}.jpg' if modality == 'Flow' else 'img_{:05d}.jpg')
    elif fmt == 'hdf5':
        kw.update(root_path=tree['flow_h5' if modality == 'Flow' else 'rgb_h5'],
                  list_file=tree['lists']['flow' if modality == 'Flow' else 'rgb'], data_format='hdf5')
    else:
        kw.update(root_path=tree['videos'], list_file=tree['lists']['video'], data_format='video',
                  video_backend=case.split('-')[2])
    reading = {k: kw.pop(k) for k in ('data_format', 'image_tmpl', 'video_backend', 'audio') if k in kw}
    return dict(kw, sampling=SamplingConfig(num_segments=num_segments, mode='train'),
                reading=ReaderConfig(strict=True, **reading))
