"""The Audio modality through the entry points on the tiny toy set (real wav files and mp4 audio tracks):
training, a test_models ensemble with RGB, a teacher (checkpoint and cached scores), predict.py, and a
mutual-learning rank."""
import json
import os
import sys

import numpy as np
import pytest

from ops.checkpoint import load_checkpoint
from ops.scores import load_scores
from conftest import REPO, launch_ranks, wait_ranks

TINY = ["--arch", "resnet18", "--num_segments", "4", "--input_size", "32", "--batch-size", "8", "-j", "0",
        "--no_progress", "--epochs", "1", "--max_steps_per_epoch", "2"]


def _train(data_root, tmp, modality, *extra):
    return ["main.py", "toy", modality, "--data_root", data_root, "--root_model", str(tmp / "ckpt"),
            "--root_log", str(tmp / "log"), *TINY, *extra]


@pytest.fixture(scope="module")
def audio_ckpt(tiny_toy, tmp_path_factory):
    """An Audio model trained by main.py (2 steps) on the toy wav files -> its checkpoint path."""
    import subprocess
    tmp = tmp_path_factory.mktemp("audio_run")
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "main.py"), *_train(tiny_toy, tmp, "Audio")[1:]],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (run,) = (tmp / "ckpt").iterdir()
    return str(run / "ckpt.pth.tar")


@pytest.mark.slow
def test_audio_checkpoint_ensembles_with_rgb(audio_ckpt, tiny_toy, tiny_checkpoint, run_cli, tmp_path):
    ckpt = load_checkpoint(audio_ckpt)
    assert ckpt["config"]["modality"] == "Audio"
    audio = ckpt["data"]["audio"]   # the spectrogram settings travel with the checkpoint
    assert (audio["sample_rate"], audio["n_fft"], audio["win_length"], audio["hop_length"], audio["fps"]) == \
        (24000, 1024, 160, 80, 12)
    assert ckpt["data"]["root_path"].endswith(os.path.join("toy", "audio"))
    rgb = tiny_checkpoint(tmp_path / "rgb.pth.tar", "RGB", 0)
    out = run_cli(["test_models.py", "toy", "--weights", f"{rgb},{audio_ckpt}", "--data_root", tiny_toy,
                   "--test_crops", "3", "--save_scores", str(tmp_path / "s.npz"), "--no_progress"], cwd=tmp_path)
    assert "[Audio" in out.stdout and "[RGB" in out.stdout
    scores = load_scores(str(tmp_path / "s.1.npz"))                 # one file per model: .1 = Audio
    # 16 val videos x 3 views (the crops: the same spectrograms, aligned with the RGB views)
    assert scores["scores"].shape[:2] == (16, 3) and np.isfinite(scores["scores"]).all()
    assert np.allclose(scores["scores"][:, 0], scores["scores"][:, 2])


@pytest.mark.slow
def test_audio_teacher_checkpoint_and_cached_scores(audio_ckpt, tiny_toy, tiny_checkpoint, run_cli, tmp_path):
    flow = tiny_checkpoint(tmp_path / "flow.pth.tar", "Flow", 1)
    run_cli(_train(tiny_toy, tmp_path / "a", "RGB", "--shift", "--distill_from", f"{flow},{audio_ckpt}"),
            cwd=tmp_path)
    (run,) = (tmp_path / "a" / "ckpt").iterdir()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "distill" in rows[0] and np.isfinite(rows[0]["distill"])
    scores = tmp_path / "audio_train.npz"
    run_cli(["test_models.py", "toy", "--weights", audio_ckpt, "--data_root", tiny_toy, "--test_list",
             os.path.join(tiny_toy, "toy", "train_rgb.txt"), "--save_scores", str(scores), "--no_progress"],
            cwd=tmp_path)
    run_cli(_train(tiny_toy, tmp_path / "b", "RGB", "--teacher_scores", str(scores)), cwd=tmp_path)


@pytest.mark.slow
def test_predict_on_an_mp4_soundtrack(audio_ckpt, tiny_toy, run_cli, tmp_path):
    from ops.toy import write_video
    video = os.path.join(tiny_toy, "toy", "videos", "000001.mp4")
    silent = str(tmp_path / "silent.mp4")
    write_video(silent, np.zeros((10, 32, 32, 3), np.uint8))
    out = run_cli(["predict.py", "--weights", audio_ckpt, video, "--output", str(tmp_path / "p.json"),
                   "--device", "cpu", "-j", "0", "--no_progress"], cwd=tmp_path)
    (entry,) = json.load(open(tmp_path / "p.json"))["videos"]
    assert entry["video"] == video and len(entry["top"]) >= 1
    assert out.stdout.startswith(f"{video}: ")
    proc = run_cli(["predict.py", "--weights", audio_ckpt, silent, "--device", "cpu", "-j", "0", "--no_progress"],
                   cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "silent.mp4" in proc.stderr and "no audio" in proc.stderr


@pytest.mark.slow
def test_rgb_audio_mutual_learning(tiny_toy, tmp_path):
    argv = [sys.executable, os.path.join(REPO, "main.py"), *_train(tiny_toy, tmp_path, "RGB,Audio")[1:],
            "--check_alignment", "--dist_timeout", "60"]
    wait_ranks(launch_ranks(argv, 2, tmp_path, "tcp", env={"PYTHONUNBUFFERED": "1"}), timeout=300)
    runs = {p.name[-3:]: p for p in (tmp_path / "ckpt").iterdir()}      # rank suffix -> run folder
    assert runs["ML0"].name.startswith("TSM_toy_RGB_") and runs["ML1"].name.startswith("TSM_toy_Audio_")
    assert load_checkpoint(str(runs["ML1"] / "ckpt.pth.tar"))["config"]["modality"] == "Audio"
