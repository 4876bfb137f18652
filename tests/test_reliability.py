"""Reliability pieces that need no training run: strict lists, read-failure bookkeeping, DataLoader
workers under a process-group signal, the choice of a common mutual-learning checkpoint, metrics rows
after a resume, the resume config check and check_data's empty / unpaired lists."""
import json
import os
import signal
import subprocess
import sys

import pytest

from ops import resume, run_metrics
from ops.dataset import VideoDataSet, parse_list
from ops.readers import ReaderConfig
from ops.sampling import SamplingConfig
from scripts import check_data
from conftest import REPO



def test_duplicate_video_in_a_list_names_both_lines(tmp_path, write_list):
    path = write_list(tmp_path / "l.txt", ["a 5 0", "# comment", "b 5 1", "a 6 0"])
    with pytest.raises(ValueError, match=r"l\.txt:4: video 'a' is listed again \(first at line 1\).*--val_list"):
        parse_list(path, "frames", "--val_list")
    assert [r.path for r in parse_list(path, "frames", allow_duplicates=True)] == ["a", "b", "a"]


def _truncate(path, keep=100):
    with open(path, "rb") as f:
        head = f.read(keep)
    with open(path, "wb") as f:
        f.write(head)


def test_read_failures_are_counted_with_the_first_videos_and_reset(frames_dataset):
    d = frames_dataset
    for k in range(1, 13):   # every frame of v1 is a truncated JPEG
        _truncate(os.path.join(d["root"], "v1", f"img_{k:05d}.jpg"))
    ds = VideoDataSet(d["root"], d["rgb_list"], sampling=SamplingConfig(2, "val"), seed=0)
    _, _, got = ds[1]
    assert got != 1                                        # replaced by a readable video
    report = ds.failure_report()
    assert report["read_failures"] >= 1 and report["failed_videos"][0] == "v1"
    state = ds.failure_state()
    ds.reset_failures()
    assert ds.failure_report() == {"read_failures": 0, "failed_videos": []}
    ds.reset_failures(state)                               # a mid-epoch resume puts the epoch's count back
    assert ds.failure_report() == report and state[1][0] == 1
    strict = VideoDataSet(d["root"], d["rgb_list"], sampling=SamplingConfig(2, "val"),
                          reading=ReaderConfig(strict=True))
    with pytest.raises(RuntimeError, match=r"read failure \(strict data\): .*v1.img_000\d\d\.jpg"):
        strict[1]


_GROUP_SIGNAL = """
import os, signal, sys
import torch
from torch.utils.data import DataLoader, Dataset
from ops.dataset import worker_init_fn

class SignalsItsGroup(Dataset):
    # item 1 signals the whole process group, as a terminal, scancel or SLURM pre-emption does
    def __len__(self):
        return 4

    def __getitem__(self, i):
        if i == 1:
            os.killpg(os.getpgid(0), signal.SIGTERM)
            os.killpg(os.getpgid(0), signal.SIGINT)
        return torch.tensor(i)

got = []
for s in (signal.SIGTERM, signal.SIGINT):
    signal.signal(s, lambda signum, frame: got.append(signum))
loader = DataLoader(SignalsItsGroup(), batch_size=1, num_workers=1, worker_init_fn=worker_init_fn)
print([int(x) for x in loader], sorted(got))
"""


@pytest.mark.slow
def test_loader_workers_ignore_process_group_signals(tmp_path):
    script = tmp_path / "group_signal.py"
    script.write_text(_GROUP_SIGNAL)
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    # its own session: the signals must not reach pytest's process group
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120,
                          start_new_session=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the worker survived both signals; the main process received both
    assert proc.stdout.strip() == f"[0, 1, 2, 3] [{int(signal.SIGINT)}, {int(signal.SIGTERM)}]"


def _held(*saves):
    """{save: (save, epoch, step, committed)} for saves given as (save, committed)."""
    return {s: (s, s, 0, c) for s, c in saves}


def test_common_checkpoint_of_mutual_ranks():
    choose = resume.choose_common_checkpoint
    assert choose({"RGB": _held((4, 3), (3, 2)), "Flow": _held((4, 3), (3, 2))}) == 4
    # Flow died between its peers' write of save 4 and its own: everyone resumes at save 3.
    assert choose({"RGB": _held((4, 3), (3, 2)), "Flow": _held((3, 2))}) == 3
    # Flow died before its first write: RGB's first file was never committed, so a fresh start.
    assert choose({"RGB": _held((1, 0)), "Flow": {}}) == 0
    assert choose({"RGB": {}, "Flow": {}}) == 0
    with pytest.raises(SystemExit, match=r"no common checkpoint set.*RGB: epoch 6 step 0 \(save 6\), epoch 5 "
                                         r"step 0 \(save 5\); Flow: epoch 2 step 0 \(save 2\)"):
        choose({"RGB": _held((6, 5), (5, 4)), "Flow": _held((2, 1))})
    with pytest.raises(SystemExit, match="Flow: no checkpoint"):
        choose({"RGB": _held((6, 5), (5, 4)), "Flow": {}})


def test_metrics_rows_after_the_resumed_checkpoint_are_dropped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [(1, "train"), (1, "val"), (2, "train"), (2, "val"), (3, "train")]
    path.write_text("".join(json.dumps({"epoch": e, "split": s}) + "\n" for e, s in rows))
    run_metrics.drop_metrics_after(str(path), 2, val_pending=True)       # epoch 2's validation will run again
    assert [(r["epoch"], r["split"]) for r in map(json.loads, path.read_text().splitlines())] == rows[:3]
    run_metrics.drop_metrics_after(str(path), 1, val_pending=False)
    assert [(r["epoch"], r["split"]) for r in map(json.loads, path.read_text().splitlines())] == rows[:2]


def test_resume_of_another_model_names_option_and_both_values():
    saved = {"config": {"num_segments": 8, "base_model": "resnet50", "modality": "RGB", "num_class": 5,
                        "is_shift": False, "shift_div": 8}}
    same = dict(saved["config"], shift_div=4)          # shift_div is irrelevant without a shift
    resume.check_resume_config(saved, same, "c.pth")
    with pytest.raises(SystemExit, match=r"--resume c\.pth holds another model: --arch: the checkpoint has "
                                         r"'resnet50', this command 'resnet18'; --num_segments: the checkpoint "
                                         r"has 8, this command 4"):
        resume.check_resume_config(saved, dict(same, num_segments=4, base_model="resnet18"), "c.pth")


def test_resume_of_another_tin_fold_is_refused_and_irrelevant_without_tin():
    saved = {"config": {"base_model": "resnet50", "temporal_module": "tin", "tin_shift_div": 4}}
    with pytest.raises(SystemExit, match=r"--tin_shift_div: the checkpoint has 4, this command 2"):
        resume.check_resume_config(saved, dict(saved["config"], tin_shift_div=2), "c.pth")
    tsm = {"config": {"base_model": "resnet50", "temporal_module": "tsm", "tin_shift_div": 4}}
    resume.check_resume_config(tsm, dict(tsm["config"], tin_shift_div=2), "c.pth")


def test_check_data_reports_empty_and_unpaired_lists(tmp_path, write_list, frames_dataset, capsys):
    d = frames_dataset
    empty = write_list(tmp_path / "empty.txt", ["# nothing here"])
    common = ["--root_path", d["root"], "--num_class", "3", "--split", "train", "--val_list", d["rgb_list"]]
    assert check_data.main(["x", *common, "--train_list", empty]) == 1
    assert f"empty_list: {empty} (given by --train_list) lists no videos" in capsys.readouterr().out

    lists = {"RGB": (d["rgb_list"], parse_list(d["rgb_list"], "frames")),
             "Flow": (d["flow_list"], parse_list(d["flow_list"], "frames"))}
    assert check_data.check_pairing(lists, "train") == []                       # same ids, other order
    flow = write_list(tmp_path / "flow_bad.txt", ["v0 10 0", "v1 12 2"])
    lists["Flow"] = (flow, parse_list(flow, "frames"))
    problems = check_data.check_pairing(lists, "train")
    assert ("unpaired_video", f"train: 1 of 3 videos are missing from the Flow list {flow}: v2") in problems
    assert ("label_mismatch", f"train: video v1 has label 1 in the RGB list {d['rgb_list']}, 2 in the Flow "
                              f"list {flow}") in problems
    # counts: flow may have one step fewer than the frames, not more and not two fewer
    rgb = write_list(tmp_path / "rgb_counts.txt", ["v0 10 0", "v1 12 1", "v2 9 2"])
    flow = write_list(tmp_path / "flow_counts.txt", ["v0 9 0", "v1 13 1", "v2 7 2"])
    problems = check_data.check_pairing({"RGB": (rgb, parse_list(rgb, "frames")),
                                         "Flow": (flow, parse_list(flow, "frames"))}, "train")
    assert [p[1].split(" has ")[0] for p in problems if p[0] == "unpaired_count"] == ["train: video v1",
                                                                                    "train: video v2"]


def test_atomic_open_replaces_whole_files_or_nothing(tmp_path):
    from ops.utils import atomic_open
    path = tmp_path / "commit.json"
    with atomic_open(path) as f:
        f.write('{"save_seq": 1}')
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            f.write('{"save_seq": 2, "trunc')
            raise RuntimeError("killed mid-write")
    assert path.read_text() == '{"save_seq": 1}'
    assert os.listdir(tmp_path) == ["commit.json"]          # no temporary file left behind
