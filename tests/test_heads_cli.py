"""Multi-head labels end to end on the toy set: a second label head derived from the toy label (noun =
the shape pair, label // 2; verb = the direction, label % 2), a two-head Flow teacher distilled into a
two-head RGB student through main.py, its evaluation outputs per head, and the refusals."""
import csv
import json
import os

import numpy as np
import pytest

from conftest import load_script
from ops.scores import load_scores
from opts import parse_args, parse_test_args

HEADS = "verb:2,noun:4"
TINY = ["--arch", "resnet18", "--num_segments", "4", "--input_size", "32", "--batch-size", "8", "-j", "0",
        "--no_progress", "--epochs", "1", "--max_steps_per_epoch", "2", "--heads", HEADS]

test_models = load_script("test_models.py", "eval_entry_point_heads")


def two_head_lists(data_root, folder):
    """train_{RGB,Flow}.txt / val_*.txt with `path num_frames verb noun`, from the toy lists."""
    for split in ("train", "val"):
        for name, src in (("RGB", "rgb"), ("Flow", "flow")):
            with open(os.path.join(data_root, "toy", f"{split}_{src}.txt")) as f:
                rows = [line.split() for line in f if line.strip()]
            with open(folder / f"{split}_{name}.txt", "w") as f:
                f.writelines(f"{p} {n} {int(y) % 2} {int(y) // 2}\n" for p, n, y in rows)
    return [f"--train_list={folder}/train_{{modality}}.txt", f"--val_list={folder}/val_{{modality}}.txt"]


def train(run_cli, data_root, tmp, modality, *extra, check=True):
    return run_cli(["main.py", "toy", modality, "--data_root", data_root, "--root_model", str(tmp / "ckpt"),
                    "--root_log", str(tmp / "log"), *TINY, *extra], cwd=tmp, check=check)


def checkpoint(tmp, part):
    (d,) = [p for p in (tmp / "ckpt").iterdir() if part in p.name]
    return str(d / "ckpt.pth.tar")


@pytest.mark.slow
def test_two_head_flow_teacher_distils_into_two_head_student_and_evaluates_per_head(
        tiny_toy, run_cli, tmp_path, tiny_checkpoint, capsys):
    lists = two_head_lists(tiny_toy, tmp_path)
    train(run_cli, tiny_toy, tmp_path, "Flow", *lists, "--suffix", "teacher")
    teacher = checkpoint(tmp_path, "teacher")
    train(run_cli, tiny_toy, tmp_path, "RGB", *lists, "--distill_from", teacher, "--gt_weight", "1",
          "--teacher_weighting", "softmin_dataset",
          "--label_smoothing", "0.1", "--suffix", "student")
    student = checkpoint(tmp_path, "student")
    rows = [json.loads(line) for line in open(os.path.join(os.path.dirname(student), "metrics.jsonl"))]
    for key in ("top1", "verb_top1", "verb_top5", "noun_top1", "noun_top5", "distill"):
        assert key in rows[0], key
    val = rows[-1]
    assert val["split"] == "val" and val["top1"] <= min(val["verb_top1"], val["noun_top1"])

    # evaluation rebuilds the two heads from the checkpoint and reads the 4-column list
    out = tmp_path / "eval"
    argv = ["toy", "--weights", student, "--data_root", tiny_toy, "--device", "cpu", "-j", "0", "--no_progress",
            "--save_scores", str(out / "s.npz"), "--csv_file", str(out / "pred.csv")]
    capsys.readouterr()
    res = test_models.main(parse_test_args(argv))
    printed = capsys.readouterr().out
    assert "verb Prec@1" in printed and "noun Prec@1" in printed and "action (all heads right) Prec@1" in printed
    scores = load_scores(str(out / "s.npz"))
    assert scores["heads"] == (("verb", 2), ("noun", 4)) and scores["scores"].shape == (16, 1, 6)
    labels = scores["labels"]
    video = scores["scores"].mean(1)
    verb_right = video[:, :2].argmax(1) == labels[:, 0]
    noun_right = video[:, 2:].argmax(1) == labels[:, 1]
    assert res["heads"]["verb"]["top1"] == pytest.approx(100 * verb_right.mean())
    assert res["action_top1"] == pytest.approx(100 * (verb_right & noun_right).mean())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["action_top1"] == res["action_top1"] and set(summary["heads"]) == {"verb", "noun"}
    for name, size in (("verb", 2), ("noun", 4)):
        assert np.load(out / f"confusion_{name}.npy").shape == (size, size)
        assert (out / f"confusion_{name}.png").is_file()
        with open(out / f"per_class_{name}.csv") as f:
            assert len(list(csv.reader(f))) == size + 1
        assert len((out / f"pred_{name}.csv").read_text().splitlines()) == 16
    assert not (out / "per_class.csv").exists()

    # the score file through scripts/ensemble_scores.py: the same per-head metrics
    again = load_script("scripts/ensemble_scores.py", "ensemble_scores_heads").main([str(out / "s.npz")])
    assert again["heads"]["noun"]["top1"] == pytest.approx(res["heads"]["noun"]["top1"])
    assert again["action_top1"] == pytest.approx(res["action_top1"])

    # an ensemble with a single-label model is refused, naming both
    single = tiny_checkpoint(tmp_path / "single.pth.tar", "RGB", 0)
    with pytest.raises(SystemExit, match="heads verb:2,noun:4 .* one head|one head.*verb:2,noun:4"):
        test_models.main(parse_test_args(["toy", "--weights", f"{student},{single}", "--data_root", tiny_toy,
                                          "--device", "cpu", "-j", "0", "--no_progress",
                                          "--output_dir", str(tmp_path / "ens")]))
    # export: one output per model, so a multi-head model is refused clearly
    export = load_script("scripts/export.py", "export_heads")
    with pytest.raises(SystemExit, match="multi-head model .heads verb:2,noun:4."):
        export.main(["--weights", student, "--format", "onnx", "--output", str(tmp_path / "m.onnx")])

    # a single-label teacher for a two-head student is refused before training, naming both
    proc = train(run_cli, tiny_toy, tmp_path, "RGB", *lists, "--distill_from", single, "--suffix", "bad",
                 check=False)
    assert proc.returncode != 0
    assert "the RGB teacher has heads one head but the student has verb:2,noun:4" in proc.stderr


def test_heads_options_are_checked_at_parse_time(tiny_toy, capsys):
    base = ["toy", "RGB", "--data_root", tiny_toy]
    args = parse_args(base + ["--heads", HEADS, "--head_weights", "1,2"])
    assert args.head_layout == [["verb", 2], ["noun", 4]] and args.head_weights == [1.0, 2.0]
    assert parse_args(base).head_layout is None
    for extra, message in [(["--heads", "verb:2"], "at least two heads"),
                           (["--head_weights", "1,2"], "--head_weights 1,2 needs multi-head labels"),
                           (["--heads", HEADS, "--head_weights", "1"], "1 weights for the 2 heads"),
                           (["--heads", HEADS, "--num_class", "6"], "replace --num_class"),
                           (["--heads", HEADS, "--flip", "on", "--flip_pairs", "0:1"], "--flip_pairs swaps single")]:
        with pytest.raises(SystemExit):
            parse_args(base + extra)
        assert message in capsys.readouterr().err


def test_resume_refuses_a_checkpoint_with_other_heads():
    from ops.resume import check_resume_config
    config = {"heads": [["verb", 2], ["noun", 4]], "num_class": 6}
    check_resume_config({"config": dict(config)}, config, "c.pth")
    with pytest.raises(SystemExit, match=r"--heads \(label heads\): the checkpoint has \[\['verb', 3\], "
                                         r"\['noun', 3\]\], this command \[\['verb', 2\], \['noun', 4\]\]"):
        check_resume_config({"config": {"heads": [["verb", 3], ["noun", 3]], "num_class": 6}}, config, "c")
    with pytest.raises(SystemExit, match="the checkpoint has None"):
        check_resume_config({"config": {"num_class": 6}}, config, "c")
