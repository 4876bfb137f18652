"""Decode the soundtracks of a video tree into .wav files (mono, 16-bit) for the Audio modality.

    python scripts/extract_audio.py --video_dir data/mydata/videos --out_dir data/mydata/audio --workers 4
    python scripts/extract_audio.py --video_list train_video.txt --video_dir videos --out_dir audio \
        --list_out audio/train_list.txt

Each video <rel>/<name>.<ext> becomes <out_dir>/<rel>/<name>.wav (what main.py's Audio modality reads with
--data_format frames --root_path <out_dir> and the default --audio_tmpl '{}.wav'): its first audio track
decoded with PyAV, averaged to mono and resampled in torch to --sample_rate (ops.audio.resample). The file
is written under a temporary name and renamed when complete, then a marker <name>.wav.done (JSON: the
settings, the sample and video frame counts, the source) records it, so an interrupted run resumes and a
rerun with other settings refuses unless --overwrite. A video without an audio track is reported as failed
and left out of the list. The list has `<vid> <num_frames> [label]` lines with the VIDEO's frame count
(the Audio list is the RGB frames list; check it with scripts/check_data.py --modality Audio).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import logging  # noqa: E402

from ops.audio import load_waveform, write_wav  # noqa: E402
from ops.utils import HelpFormatter  # noqa: E402
from ops.video_io import video_info  # noqa: E402
from scripts.extract_frames import (add_extraction_outputs, add_video_inputs, extract_and_list,  # noqa: E402
                                    read_done, refuse_unfit, settings_conflicts, video_items,
                                    write_done)

AUDIO_SETTINGS = ('sample_rate',)


def _marker(job):
    # (folder, marker name) of a wav's done-marker, as read_done / write_done take them
    return os.path.dirname(job['wav']), os.path.basename(job['wav']) + '.done'


def extract_one(job):
    """One video's soundtrack -> its .wav. Returns (vid, video frames, error or None, None)."""
    src, wav, vid = job['src'], job['wav'], job['vid']
    settings = {key: job[key] for key in AUDIO_SETTINGS}
    folder, marker = _marker(job)
    info = read_done(folder, marker)
    if info is not None and os.path.isfile(wav) and not settings_conflicts([folder], settings, marker):
        return vid, int(info['num_frames']), None, None
    tmp = f'{wav}.{os.getpid()}.tmp.wav'
    try:
        if not os.path.isfile(src):
            raise FileNotFoundError(f'no such file: {src}')
        num_frames = video_info(src).num_frames
        waveform = load_waveform(src, job['sample_rate'])
        os.makedirs(folder, exist_ok=True)
        write_wav(tmp, waveform.numpy(), job['sample_rate'])
        os.replace(tmp, wav)
    except Exception as err:   # any decoder/IO failure of one video is reported, not fatal for the run
        if os.path.exists(tmp):
            os.remove(tmp)
        return vid, 0, f'{src}: {type(err).__name__}: {err}', None
    write_done(folder, dict(settings, num_frames=num_frames, num_samples=len(waveform), source=src), marker)
    return vid, num_frames, None, None


def get_args_parser():
    p = argparse.ArgumentParser(
        description='Decode video soundtracks into mono .wav files (resumable, parallel) and write a frames list.',
        formatter_class=HelpFormatter)
    add_video_inputs(p)
    add_extraction_outputs(p, 'root of the .wav files', 'audio_list.txt', 'files')
    p.add_argument('--sample_rate', type=int, default=24000, help='Hz of the written files (the Audio default)')
    return p


def main(argv=None):
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.sample_rate < 1:
        parser.error(f'--sample_rate must be >= 1, got {args.sample_rate}')
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
    items = video_items(parser, args)
    base = args.video_dir or ''
    settings = dict(sample_rate=args.sample_rate)
    jobs = [dict(settings, src=os.path.join(base, rel), wav=os.path.join(args.out_dir, vid + '.wav'), vid=vid,
                 folder=os.path.join(args.out_dir, vid)) for vid, rel, _ in items]
    conflicts = [line for job in jobs for line in settings_conflicts([_marker(job)[0]], settings, _marker(job)[1])]
    refuse_unfit(jobs, conflicts, args.overwrite, 'files')
    return extract_and_list(args, extract_one, jobs, [(vid, label) for vid, _, label in items], 'audio',
                            lambda n: f'{n} soundtracks extracted into {args.out_dir}')


if __name__ == '__main__':
    sys.exit(main())
