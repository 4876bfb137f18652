"""Distillation through main.py on the tiny toy set: frozen RGB + Flow teachers, view-aligned inputs,
precomputed teacher scores, and DDP."""
import json
import os
import sys

import pytest
import torch

from ops.checkpoint import load_checkpoint
from conftest import REPO, launch_ranks, wait_ranks

TINY = ["--arch", "resnet18", "--num_segments", "4", "--input_size", "32", "--batch-size", "8", "-j", "0",
        "--no_progress", "--epochs", "1", "--max_steps_per_epoch", "2", "--dump_step_logits"]


@pytest.fixture(scope="module")
def teachers(tmp_path_factory, tiny_checkpoint):
    d = tmp_path_factory.mktemp("teachers")
    return tiny_checkpoint(d / "rgb.pth.tar", "RGB", 0), tiny_checkpoint(d / "flow.pth.tar", "Flow", 1)


def _run_dir(tmp):
    (d,) = [p for p in (tmp / "ckpt").iterdir()]
    return d


def _train(data_root, tmp, *extra):
    return ["main.py", "toy", "RGB", "--data_root", data_root, "--root_model", str(tmp / "ckpt"),
            "--root_log", str(tmp / "log"), *TINY, *extra]


@pytest.mark.slow
def test_distill_from_rgb_and_flow_teachers(teachers, tiny_toy, run_cli, tmp_path):
    rgb, flow = teachers
    run_cli(_train(tiny_toy, tmp_path, "--shift", "--distill_from", f"{rgb},{flow}", "--teacher_weights",
                   "1,3", "--distill_temperature", "2", "--gt_weight", "0.5"), cwd=tmp_path)
    d = _run_dir(tmp_path)
    assert d.name.endswith("_distill")
    ckpt = load_checkpoint(str(d / "ckpt.pth.tar"))
    assert not any(k.startswith("teachers") for k in ckpt["state_dict"])         # teachers stay outside
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert "distill" in rows[0] and "ce" in rows[0]
    # the recorded loss is gt_weight * CE + tau^2 * KL against the 1:3 weighted teacher logits
    (step,) = torch.load(d / "steps_rank0_epoch0.pt")[:1]
    assert step["loss"] == pytest.approx(0.5 * step["ce"] + step["distill"], rel=1e-5)


@pytest.mark.slow
def test_softmin_dataset_weighting_and_teacher_scores(teachers, tiny_toy, run_cli, tmp_path):
    rgb, flow = teachers
    out = run_cli(_train(tiny_toy, tmp_path / "a", "--distill_from", f"{rgb},{flow}", "--teacher_weighting",
                         "softmin_dataset"), cwd=tmp_path).stderr
    assert "softmin_dataset teacher weights" in out
    # two-step recipe: teacher logits on the TRAIN list, then distil from the score file
    scores = tmp_path / "teacher.npz"
    run_cli(["test_models.py", "toy", "--weights", rgb, "--data_root", tiny_toy, "--test_list",
             os.path.join(tiny_toy, "toy", "train_rgb.txt"), "--save_scores", str(scores), "--no_progress",
             "-j", "0"], cwd=tmp_path)
    run_cli(_train(tiny_toy, tmp_path / "b", "--teacher_scores", str(scores)), cwd=tmp_path)
    rows = [json.loads(line) for line in (_run_dir(tmp_path / "b") / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["distill"] >= 0


@pytest.mark.slow
def test_distillation_under_ddp(teachers, tiny_toy, tmp_path):
    rgb, flow = teachers
    argv = [sys.executable, os.path.join(REPO, "main.py"), *_train(tiny_toy, tmp_path, "--distill_from",
                                                                 f"{rgb},{flow}")[1:]]
    wait_ranks(launch_ranks(argv, 2, tmp_path), 300)
    d = _run_dir(tmp_path)
    assert json.loads((d / "args.json").read_text())["per_rank_batch"] == 4
