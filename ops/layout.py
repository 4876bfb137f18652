"""The Layout modality: per-video box files (Something-Else annotation format) read as STLT input.

A box file holds one video::

    {"width": 427, "height": 240,                     # frame size: coordinates are divided by it
     "frames": [{"name": "12345/0001.jpg",            # frame file name: its last number is the frame number
                 "labels": [{"box2d": {"x1": 10, "y1": 20, "x2": 50, "y2": 80},
                             "category": "hand", "standard_category": "hand", "gt_annotation": "hand 0",
                             "score": 0.9}]},         # score optional (1.0: an annotated box)
                ...]}

"frames" is a Something-Else per-video entry as released (``{video_id: [frames]}``); the frame size is ours
(Something-Else keeps it in the frames). Frames missing from the file have no boxes. A box whose
standard_category is "hand" (or, without one, whose category contains "hand", the multimodal-distillation
rule) is a hand, any other an object (archs.stlt.LAYOUT_CATEGORIES).

A sampled clip is a float tensor (T, 6, N, 1) per view: for each of N box slots (category index, score,
x1, y1, x2, y2); coordinates are fixed as the reference's ``fix_box`` (integers, ordered, inside the frame,
never empty) and divided by the frame size; empty slots are padding (category 0, score 0, box
(0, 0, 1e-9, 1e-9), the reference's values). Frames are sampled as for RGB (ops/sampling.py), so an aligned
Layout clip describes the frames the RGB clip shows; boxes are not cropped or flipped with the RGB views.
"""
import json
import logging
import math
import os
import re

import numpy as np
import torch

from archs.stlt import BOX_FIELDS, LAYOUT_CATEGORIES, MAX_BOXES
from ops.dataset import VideoDataSet
from ops.readers import ReaderConfig
from ops.video_io import VIDEO_EXTENSIONS, FrameReadError

logger = logging.getLogger(__name__)

BOX_TMPL = '{}.json'      # box file of a video: template formatted with the list's video path
PAD_BOX = (0.0, 0.0, 1e-9, 1e-9)
_NUMBER = re.compile(r'(\d+)(?!.*\d)')     # the last run of digits


def box_path(root, video_path, box_tmpl=BOX_TMPL):
    """Box file of a listed video: the template formatted with its path, a video file's extension removed
    (so `12345`, `12345.mp4` and `12345.webm` all read `<root>/12345.json`)."""
    stem, ext = os.path.splitext(video_path)
    return os.path.join(root, box_tmpl.format(stem if ext.lower() in VIDEO_EXTENSIONS else video_path))


def fix_box(box, width, height):
    """The reference's box repair: integer coordinates >= 0, x1 <= x2 and y1 <= y2, inside the frame
    (at most size - 1), and never zero-width or zero-height. box (x1, y1, x2, y2) -> list of 4 ints."""
    x1, y1, x2, y2 = (max(0, int(v)) for v in box)
    x1, x2 = min(x1, x2), max(x1, x2)
    y1, y2 = min(y1, y2), max(y1, y2)
    x1, x2 = min(x1, width - 1), min(x2, width - 1)
    y1, y2 = min(y1, height - 1), min(y2, height - 1)
    if x1 == x2 == 0:
        x2 = 1
    if y1 == y2 == 0:
        y2 = 1
    if x1 == x2:
        x1 -= 1
    if y1 == y2:
        y1 -= 1
    return [x1, y1, x2, y2]


def category_index(label):
    """A label's STLT category: 'hand' by standard_category (or the category text without one), else 'object'."""
    standard = label.get('standard_category')
    is_hand = standard == 'hand' if isinstance(standard, str) else 'hand' in label['category']
    return LAYOUT_CATEGORIES.index('hand' if is_hand else 'object')


class BoxFile:
    """A parsed box file: frame size and, per frame number, an array (boxes, 6) of encoded boxes."""

    def __init__(self, path):
        self.path = path
        if not os.path.isfile(path):
            raise FrameReadError(f'box file not found: {path}')
        try:
            with open(path) as f:
                data = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f'{path}: not valid JSON ({exc})') from None
        if not isinstance(data, dict):
            raise ValueError(f'{path}: expected an object with "width", "height" and "frames", '
                             f'got a JSON {type(data).__name__}')
        self.width, self.height = (self._size(data, key) for key in ('width', 'height'))
        frames = data.get('frames')
        if not isinstance(frames, list):
            raise ValueError(f'{path}: field "frames" must be a list of frames, got {_shown(frames)}')
        self.frames = {}
        for i, frame in enumerate(frames):
            number, boxes = self._frame(i, frame)
            if number in self.frames:
                raise ValueError(f'{path}: frames[{i}]: frame {number} ("name") appears twice')
            self.frames[number] = boxes

    @property
    def num_frames(self):
        """The highest frame number annotated (the video's length when a list gives none)."""
        return max(self.frames, default=0)

    def _size(self, data, key):
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 2:
            raise ValueError(f'{self.path}: field "{key}" (frame size in pixels) must be a number >= 2, '
                             f'got {_shown(value)}')
        return int(value)

    def _frame(self, i, frame):
        where = f'{self.path}: frames[{i}]'
        if not isinstance(frame, dict):
            raise ValueError(f'{where}: expected an object with "name" and "labels", got {_shown(frame)}')
        name = frame.get('name')
        match = _NUMBER.search(os.path.splitext(os.path.basename(name))[0]) if isinstance(name, str) else None
        if match is None:
            raise ValueError(f'{where}: field "name" must be a frame file name ending in its number '
                             f'(e.g. "12345/0001.jpg"), got {_shown(name)}')
        where = f'{where} ({name})'
        labels = frame.get('labels')
        if not isinstance(labels, list):
            raise ValueError(f'{where}: field "labels" must be a list of boxes, got {_shown(labels)}')
        rows = [self._label(where, j, label) for j, label in enumerate(labels)]
        return int(match.group(1)), np.array(rows, np.float32).reshape(len(rows), BOX_FIELDS)

    def _label(self, frame, j, label):
        where = f'{frame}: labels[{j}]'
        if not isinstance(label, dict):
            raise ValueError(f'{where}: expected an object with "box2d" and "category", got {_shown(label)}')
        if not isinstance(label.get('category'), str):
            raise ValueError(f'{where}: field "category" must be a string, got {_shown(label.get("category"))}')
        box = label.get('box2d')
        if not isinstance(box, dict):
            raise ValueError(f'{where}: field "box2d" must be an object with x1, y1, x2, y2, got {_shown(box)}')
        coords = []
        for key in ('x1', 'y1', 'x2', 'y2'):
            value = box.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f'{where}: field "box2d.{key}" must be a number, got {_shown(value)}')
            coords.append(value)
        score = label.get('score', 1.0)
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= 1:
            raise ValueError(f'{where}: field "score" must be a number in [0, 1], got {_shown(score)}')
        x1, y1, x2, y2 = fix_box(coords, self.width, self.height)
        w, h = self.width, self.height
        return category_index(label), score, x1 / w, y1 / h, x2 / w, y2 / h

    def encode(self, numbers, max_boxes):
        """Frame numbers -> float32 (len(numbers), 6, max_boxes, 1): the first max_boxes boxes of each frame
        in file order, the remaining slots padding."""
        out = np.zeros((len(numbers), max_boxes, BOX_FIELDS), np.float32)
        out[:, :, 2:6] = PAD_BOX
        for i, number in enumerate(numbers):
            boxes = self.frames.get(number)
            if boxes is not None and len(boxes):
                out[i, :min(len(boxes), max_boxes)] = boxes[:max_boxes]
        return torch.from_numpy(out).permute(0, 2, 1).unsqueeze(-1).contiguous()


def _shown(value):
    if value is None:
        return 'nothing (missing or null)'
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else repr(value)
    return text if len(text) <= 60 else text[:57] + '...'


class LayoutDataSet(VideoDataSet):
    """VideoDataSet over box files: same lists, sampling, seeds and read-failure recovery; a sample is
    (T*6, max_boxes, 1) in train/val mode, (K, T*6, max_boxes, 1) in test mode (K clips, no crops).

    ``reading.image_tmpl`` is the box-file template (BOX_TMPL); ``transform`` is not used (boxes keep the whole
    frame). A list with frame counts (the RGB frames list) samples the RGB frames' numbers; a video list
    (no counts) takes the highest annotated frame as the length. A missing box file is a read failure
    (replaced in training, an error in evaluation); a malformed one raises ValueError naming the file,
    the frame and the field."""

    def __init__(self, root_path, list_file, *, reading=ReaderConfig(image_tmpl=BOX_TMPL), max_boxes=MAX_BOXES,
                 **kwargs):
        if reading.data_format not in ('frames', 'video'):
            raise ValueError(f"Layout reads box files listed in a frames or video list, not data_format "
                             f"{reading.data_format!r}")
        kwargs['transform'] = None
        super().__init__(root_path, list_file, reading=reading, **kwargs)
        self.max_boxes = int(max_boxes)

    @property
    def num_views(self):
        return self.num_clips

    def open(self, record):
        """(num_frames, BoxFile or None): a video list has no counts, so its box file is read here."""
        if record.num_frames is not None:
            return record.num_frames, None
        boxes = BoxFile(box_path(self.root_path, record.path, self.reading.image_tmpl))
        return boxes.num_frames, boxes

    def read(self, record, handle, num_frames, clips):
        """Clip starts -> float32 (K*T, 6, max_boxes, 1), frame numbers clamped to num_frames as for RGB."""
        boxes = handle or BoxFile(box_path(self.root_path, record.path, self.reading.image_tmpl))
        first = self.reading.start_index - 1          # frame number 1 is the file's start_index-th frame name
        numbers = [min(start, num_frames) + first for clip in clips for start in clip]
        return boxes.encode(numbers, self.max_boxes)

    def to_output(self, frames, rng, params=None, transform=None):
        fields, n = frames.shape[1:3]
        if self.mode != 'test':
            return frames.reshape(-1, n, 1)
        return frames.reshape(self.num_clips, -1, n, 1)


def check_box_files(records, *, root, box_tmpl, list_file, option, sample=16):
    """Start-up check: the box files of up to `sample` evenly spaced videos exist and parse (ValueError
    naming the list, the video and the file, or the file, frame and field of a malformed one)."""
    step = max(1, len(records) // sample)
    for record in list(records)[::step][:sample]:
        try:
            BoxFile(box_path(root, record.path, box_tmpl))
        except FrameReadError as exc:
            raise ValueError(f'{list_file} ({option}): video {record.video_id}: {exc} (Layout root {root}, '
                             f'box template {box_tmpl!r})') from None
