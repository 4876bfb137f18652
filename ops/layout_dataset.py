"""The dataset of the Layout modality: VideoDataSet over the box files of ops/layout.py.

Apart from ops/layout.py because it builds on ops.dataset, whose start-up list check reads box files
through ops/layout.py.
"""
from archs.stlt import MAX_BOXES
from ops.dataset import VideoDataSet
from ops.layout import BOX_TMPL, BoxFile, box_path
from ops.readers import ReaderConfig


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
