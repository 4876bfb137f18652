"""test_models.py (and scripts/ensemble_scores.py) on the generated toy dataset with tiny random checkpoints.

Most runs call test_models.main in-process (the CLI's own code path, minus the interpreter start); error
exits, the score-file script and distributed evaluation also run as real processes.
"""
import csv
import dataclasses
import json
import os
import sys

import numpy as np
import pytest
import torch

from ops.dataset import VideoDataSet
from ops.scores import load_scores
from opts import parse_test_args
from conftest import REPO, launch_ranks, load_script, wait_ranks

NUM_CLASS = 8
T = 4


test_models = load_script("test_models.py", "eval_entry_point")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, tiny_checkpoint):
    """TSM RGB, TSM Flow and TSN (no shift) RGB checkpoints: resnet18, T=4, input 32, 8 classes."""
    d = tmp_path_factory.mktemp("eval_ckpts")
    return {"rgb": tiny_checkpoint(d / "rgb.pth.tar", "RGB", 0, random_bn_stats=True),
            "flow": tiny_checkpoint(d / "flow.pth.tar", "Flow", 1, random_bn_stats=True),
            "tsn": tiny_checkpoint(d / "tsn.pth.tar", "RGB", 2, shift=False, random_bn_stats=True)}


@pytest.fixture(autouse=True)
def one_thread():
    # In-process runs share the 2-core test machine; one thread is also what run_cli gives a subprocess.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def evaluate(tiny_toy, tmp_path):
    """evaluate(weights, *flags, name='s') -> (result dict, score file dict) of an in-process run."""
    def run(weights, *flags, name="s"):
        out = str(tmp_path / f"{name}.npz")
        argv = ["toy", "--weights", weights, "--data_root", tiny_toy, "--device", "cpu", "-j", "0",
                "--no_progress", "--save_scores", out, *flags]
        res = test_models.main(parse_test_args(argv))
        return res, (load_scores(out) if os.path.isfile(out) else None)
    return run


def _no_decoding(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("a video was decoded")
    monkeypatch.setattr(VideoDataSet, "read", fail)


# ---------------------------------------------------------------------- views per video
@pytest.mark.parametrize("flags,clips", [
    ([], 1),
    (["--twice_sample"], 2),
    (["--dense_sample", "--dense_number", "3"], 3),
    (["--random_sample", "--dense_number", "2"], 3),
    (["--random_sample", "--twice_sample", "--dense_number", "2"], 4),
    (["--random_clips", "3"], 3),
])
def test_sampling_modes_give_the_right_number_of_views(flags, clips, ckpts, evaluate):
    res, s = evaluate(ckpts["rgb"], "--max_num", "3", *flags)
    assert s["scores"].shape == (3, clips, NUM_CLASS)
    assert f"x {clips} clip" in s["protocol"]
    assert res["num_videos"] == 3


@pytest.mark.parametrize("crops", [3, 5, 10])
def test_crop_counts_give_the_right_number_of_views(crops, ckpts, evaluate):
    _, s = evaluate(ckpts["rgb"], "--max_num", "2", "--test_crops", str(crops))
    assert s["scores"].shape == (2, crops, NUM_CLASS)
    assert s["protocol"].startswith(f"4 frames x {crops} crops x 1 clip (uniform), 32 px")


def test_crops_times_clips_full_res_and_protocol_line(ckpts, evaluate, capsys):
    _, s = evaluate(ckpts["rgb"], "--max_num", "3", "--test_crops", "3", "--twice_sample", "--full_res")
    assert s["scores"].shape == (3, 6, NUM_CLASS)
    # full-res crops are scale_size = 32 * 256 // 224 = 36 pixels
    protocol = "4 frames x 3 crops x 2 clips (twice), 36 px full-res, 3 videos"
    assert s["protocol"] == protocol
    out = capsys.readouterr().out
    assert f"rgb.pth.tar [RGB, coeff 1]: {protocol}" in out
    assert "Overall Prec@1" in out and "Prec@5" in out and "mean class accuracy" in out
    assert "ms per video" in out


def test_views_are_crop_major_and_match_single_crop_runs(ckpts, evaluate):
    # TSM order: view = crop * clips + clip. Of the 3 crops along the long side the third is the centre
    # one, which on the square toy frames is the single centre crop.
    _, one = evaluate(ckpts["rgb"], "--max_num", "2", "--twice_sample", name="one")
    _, three = evaluate(ckpts["rgb"], "--max_num", "2", "--twice_sample", "--test_crops", "3", name="three")
    np.testing.assert_allclose(three["scores"][:, 4:6], one["scores"], atol=1e-5)


# ---------------------------------------------------------------------- invariance
def test_scores_do_not_depend_on_batch_size_or_views_per_batch(ckpts, evaluate):
    flags = ["--max_num", "5", "--test_crops", "3", "--twice_sample"]
    _, a = evaluate(ckpts["rgb"], *flags, "--batch_size", "1", "--max_views_per_batch", "1", name="a")
    _, b = evaluate(ckpts["rgb"], *flags, "--batch_size", "3", "--max_views_per_batch", "64", name="b")
    assert a["video_ids"] == b["video_ids"]
    assert np.abs(a["scores"]).max() > 0.1
    np.testing.assert_allclose(a["scores"], b["scores"], rtol=0, atol=1e-5)


def test_tsn_per_frame_equals_the_same_weights_as_a_segment_average_model(ckpts, evaluate, monkeypatch):
    flags = ["--max_num", "4", "--twice_sample", "--max_views_per_batch", "3"]
    _, per_frame = evaluate(ckpts["tsn"], *flags, name="frame")
    monkeypatch.setattr(test_models, "is_temporal", lambda config: True)   # T-segment model, avg consensus
    _, clip = evaluate(ckpts["tsn"], *flags, name="clip")
    np.testing.assert_allclose(per_frame["scores"], clip["scores"], rtol=0, atol=1e-5)


# ---------------------------------------------------------------------- ensembles and score files
def _softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_ensemble_equals_weighted_sum_of_single_model_scores(ckpts, evaluate, tmp_path, capsys):
    flags = ["--twice_sample", "--softmax"]
    _, rgb = evaluate(ckpts["rgb"], *flags, name="rgb")
    _, flow = evaluate(ckpts["flow"], *flags, name="flow")
    res, _ = evaluate(f"{ckpts['rgb']},{ckpts['flow']}", *flags, "--coeff", "1,0.5", name="ens")
    # one score file per model, each equal to the model's own run
    for i, single in enumerate((rgb, flow)):
        part = load_scores(str(tmp_path / f"ens.{i}.npz"))
        assert part["video_ids"] == single["video_ids"]
        np.testing.assert_allclose(part["scores"], single["scores"], atol=1e-6)
    assert flow["video_ids"] == rgb["video_ids"] and len(rgb["video_ids"]) == 16
    # softmax AFTER the view average, then the coefficient-weighted sum (no division by the count)
    fused = _softmax(rgb["scores"].mean(1)) + 0.5 * _softmax(flow["scores"].mean(1))
    top1 = 100.0 * np.mean(fused.argmax(1) == rgb["labels"])
    assert res["top1"] == pytest.approx(top1)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["coeff"] == [1.0, 0.5] and summary["softmax"] is True
    assert len(summary["protocol"]) == 2

    # the same score files through scripts/ensemble_scores.py give the same metrics
    capsys.readouterr()
    script = load_script("scripts/ensemble_scores.py", "ensemble_scores")
    again = script.main([str(tmp_path / "rgb.npz"), str(tmp_path / "flow.npz"), "--coeff", "1,0.5", "--softmax"])
    assert again["top1"] == pytest.approx(res["top1"])
    assert again["top5"] == pytest.approx(res["top5"])
    assert again["mean_class_acc"] == pytest.approx(res["mean_class_acc"])
    out = capsys.readouterr().out
    assert "rgb.npz (coeff 1): 4 frames x 1 crop x 2 clips (twice)" in out
    assert f"Overall Prec@1 {res['top1']:.2f}%" in out


def test_ensemble_of_lists_with_other_videos_is_refused(ckpts, evaluate, tiny_toy, tmp_path, monkeypatch):
    lines = open(os.path.join(tiny_toy, "toy", "val_flow.txt")).read().splitlines()
    short = tmp_path / "short_flow.txt"
    short.write_text("\n".join(lines[:-1]) + "\n")
    rgb_list = os.path.join(tiny_toy, "toy", "val_rgb.txt")
    _no_decoding(monkeypatch)
    with pytest.raises(SystemExit, match="other videos"):
        evaluate(f"{ckpts['rgb']},{ckpts['flow']}", "--test_list", f"{rgb_list},{short}")


def test_ensemble_with_max_num_takes_the_first_models_videos(ckpts, evaluate, tiny_toy, tmp_path):
    lines = open(os.path.join(tiny_toy, "toy", "val_flow.txt")).read().splitlines()
    reversed_list = tmp_path / "reversed_flow.txt"
    reversed_list.write_text("\n".join(lines[::-1]) + "\n")
    rgb_list = os.path.join(tiny_toy, "toy", "val_rgb.txt")
    res, _ = evaluate(f"{ckpts['rgb']},{ckpts['flow']}", "--test_list", f"{rgb_list},{reversed_list}",
                      "--max_num", "3", name="ens")
    assert res["num_videos"] == 3
    first = [line.split()[0] for line in open(rgb_list).read().splitlines()[:3]]
    assert load_scores(str(tmp_path / "ens.1.npz"))["video_ids"] == first


# ---------------------------------------------------------------------- outputs
def test_confusion_matrix_per_class_csv_png_and_tsm_csv(ckpts, evaluate, tmp_path, tiny_toy, capsys):
    csv_file = tmp_path / "pred.csv"
    res, s = evaluate(ckpts["rgb"], "--csv_file", str(csv_file))
    # every file written is named, with its absolute path
    out = capsys.readouterr().out
    listed = out[out.index("Wrote:\n") + 7:].split()
    assert listed == [str(tmp_path / n) for n in ("confusion.npy", "confusion.png", "per_class.csv",
                                                   "reliability.png", "s.npz", "pred.csv", "summary.json")]
    assert all(os.path.getsize(p) > 0 for p in listed)
    # ECE (15 bins) of the softmax of the view-averaged logits, as multimodal-distillation computes it
    logits = s["scores"].mean(1).astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    conf, right = probs.max(1), probs.argmax(1) == s["labels"]
    bins = np.ceil(conf * 15).astype(int)                        # bin b holds ((b-1)/15, b/15]
    ece = sum(abs(conf[bins == b].mean() - right[bins == b].mean()) * np.mean(bins == b) for b in set(bins))
    assert res["ece"] == pytest.approx(100 * ece)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ece"] == pytest.approx(res["ece"]) and summary["ece_bins"] == 15
    assert summary["top5"] == pytest.approx(res["top5"])          # 8 classes: top-5 is reported
    assert f"ECE {res['ece']:.2f}%" in out
    cm = np.load(tmp_path / "confusion.npy")
    assert cm.shape == (NUM_CLASS, NUM_CLASS) and cm.sum() == 16
    assert np.trace(cm) == round(res["top1"] * 16 / 100)
    with open(tmp_path / "per_class.csv") as f:
        rows = list(csv.DictReader(f))
    names = open(os.path.join(tiny_toy, "toy", "category.txt")).read().split()
    assert [r["name"] for r in rows] == names
    assert sum(int(r["count"]) for r in rows) == 16
    from PIL import Image
    with Image.open(tmp_path / "confusion.png") as img:
        assert img.size[0] > NUM_CLASS and img.size[1] > NUM_CLASS
    pred = s["scores"].mean(1).argmax(1)
    lines = csv_file.read_text().splitlines()
    assert lines == [f"{vid};{names[p]}" for vid, p in zip(s["video_ids"], pred)]


def test_csv_top5_format_for_a_dataset_with_that_trait(ckpts, evaluate, tmp_path, monkeypatch):
    resolve = test_models.dataset_spec

    def with_top5(*args, **kwargs):
        spec = resolve(*args, **kwargs)
        return dataclasses.replace(spec, csv_top5=True)
    monkeypatch.setattr(test_models, "dataset_spec", with_top5)
    csv_file = tmp_path / "pred.csv"
    _, s = evaluate(ckpts["rgb"], "--max_num", "4", "--csv_file", str(csv_file))
    order = np.argsort(-s["scores"].mean(1), axis=1)[:, :5]
    assert csv_file.read_text().splitlines() == [
        vid + ";" + ";".join(str(i) for i in top) for vid, top in zip(s["video_ids"], order)]


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("flags,message", [
    (["--test_segments", "4,4"], "--test_segments has 2 entries but --weights has 1"),
    (["--coeff", "1,2"], "--coeff has 2 entries"),
    (["--test_crops", "4"], "--test_crops"),
    (["--dense_sample", "--random_sample"], "exclusive"),
])
def test_bad_arguments_are_parser_errors(flags, message, ckpts, tiny_toy, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_test_args(["toy", "--weights", ckpts["rgb"], "--data_root", tiny_toy, *flags])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_weights_file_is_a_parser_error(tiny_toy, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_test_args(["toy", "--weights", str(tmp_path / "nope.pth.tar"), "--data_root", tiny_toy])
    assert exc.value.code == 2
    assert "nope.pth.tar" in capsys.readouterr().err


def test_unreadable_weights_class_and_modality_mismatch_stop_before_decoding(ckpts, evaluate, tiny_toy,
                                                                           tmp_path, monkeypatch):
    _no_decoding(monkeypatch)
    broken = tmp_path / "broken.pth.tar"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="broken.pth.tar"):
        evaluate(str(broken))
    with pytest.raises(SystemExit, match=r"checkpoint has 8 classes but dataset toy has 5 \(--num_class"):
        evaluate(ckpts["rgb"], "--num_class", "5")
    rgb_list = os.path.join(tiny_toy, "toy", "val_rgb.txt")
    with pytest.raises(SystemExit, match=r"Flow checkpoint\): .*val_rgb.txt \(--test_list\) does not match the "
                                         r"Flow files.*flow_x_\d+\.jpg"):
        evaluate(ckpts["flow"], "--test_list", rgb_list)
    with pytest.raises(SystemExit, match="list file not found"):
        evaluate(ckpts["rgb"], "--test_list", str(tmp_path / "missing.txt"))


@pytest.mark.slow
def test_class_mismatch_exits_non_zero_from_the_command_line(ckpts, tiny_toy, run_cli, tmp_path):
    proc = run_cli(["test_models.py", "toy", "--weights", ckpts["rgb"], "--data_root", tiny_toy,
                    "--num_class", "5", "--device", "cpu", "--no_progress"], cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "rgb.pth.tar: the checkpoint has 8 classes but dataset toy has 5" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------- distributed
@pytest.mark.slow
def test_two_process_evaluation_equals_one_process(ckpts, evaluate, tiny_toy, tmp_path):
    flags = ["--max_num", "5", "--twice_sample", "--batch_size", "2"]   # 5 videos: uneven shards
    single, s1 = evaluate(ckpts["rgb"], *flags, name="single")
    out = str(tmp_path / "dist" / "s.npz")
    argv = [sys.executable, os.path.join(REPO, "test_models.py"), "toy", "--weights", ckpts["rgb"],
            "--data_root", tiny_toy, "--device", "cpu", "-j", "0", "--no_progress", "--save_scores", out, *flags]
    outs = wait_ranks(launch_ranks(argv, 2, tmp_path), 180)
    assert "Overall Prec@1" in outs[0] and "Overall Prec@1" not in outs[1]
    s2 = load_scores(out)
    assert s2["video_ids"] == s1["video_ids"]
    np.testing.assert_array_equal(s2["labels"], s1["labels"])
    np.testing.assert_allclose(s2["scores"], s1["scores"], rtol=0, atol=1e-5)
    assert f"Overall Prec@1 {single['top1']:.2f}%" in outs[0]


def test_ensemble_scores_view_softmax_equals_test_models_fusion(tmp_path, capsys):
    # Saved score files of two models with 2 and 3 views, the second in another video order: the script
    # fuses them as test_models.py does (ops.scores.fused_scores) under each aggregation flag.
    from ops.scores import calibration, fused_scores, metrics, save_scores, score_probabilities
    rng = np.random.default_rng(0)
    ids, labels = [f"v{i}" for i in range(40)], rng.integers(0, 5, 40)
    a, b = 4 * rng.standard_normal((40, 2, 5)), 4 * rng.standard_normal((40, 3, 5))
    save_scores(str(tmp_path / "a.npz"), ids, labels, a, "a")
    save_scores(str(tmp_path / "b.npz"), ids[::-1], labels[::-1], b[::-1], "b")
    script = load_script("scripts/ensemble_scores.py", "ensemble_scores")
    results = {}
    for flag in ([], ["--softmax"], ["--view_softmax"]):
        got = script.main([str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--coeff", "1,0.5", *flag])
        fused = fused_scores([a, b], [1.0, 0.5], softmax=flag == ["--softmax"],
                             view_softmax=flag == ["--view_softmax"])
        want, _ = metrics(fused, labels, 5)
        want["ece"] = calibration(score_probabilities(fused, [1.0, 0.5], bool(flag)), labels)["ece"]
        assert got == pytest.approx(want)
        results[tuple(flag)] = got
    assert results[("--view_softmax",)] != results[()]      # the flag reaches the fusion
    out = capsys.readouterr().out
    assert "Prec@5" not in out and "top5" not in got         # 5 classes: top-5 is 100 % by construction
    assert f"ECE {got['ece']:.2f}%" in out
    with pytest.raises(SystemExit) as exc:
        script.main([str(tmp_path / "a.npz"), "--softmax", "--view_softmax"])
    assert exc.value.code == 2 and "exclusive" in capsys.readouterr().err


def test_ensemble_scores_script_rejects_mismatched_files(tmp_path, capsys):
    from ops.scores import save_scores
    logits = np.zeros((2, 1, 3), dtype=np.float32)
    save_scores(str(tmp_path / "a.npz"), ["v1", "v2"], [0, 1], logits, "p")
    save_scores(str(tmp_path / "b.npz"), ["v1", "v3"], [0, 1], logits, "p")
    save_scores(str(tmp_path / "c.npz"), ["v1", "v2"], [0, 1], np.zeros((2, 1, 4), np.float32), "p")
    script = load_script("scripts/ensemble_scores.py", "ensemble_scores")
    for argv, message in ([["a.npz", "a.npz", "--coeff", "1"], "--coeff has 1 values for 2 score files"],
                          [["a.npz", "b.npz"], "b.npz: video ids differ"],
                          [["a.npz", "c.npz"], "c.npz has 4 classes"],
                          [["a.npz", "missing.npz"], "score file not found"]):
        with pytest.raises(SystemExit) as exc:
            script.main([str(tmp_path / a) if a.endswith(".npz") else a for a in argv])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_bad_inputs_are_refused_before_decoding_and_named(ckpts, evaluate, tiny_toy, tmp_path, monkeypatch,
                                                          capsys):
    _no_decoding(monkeypatch)
    # --modality/--arch/--shift* describe released files without a config: refused on ours
    with pytest.raises(SystemExit, match=r"rgb\.pth\.tar: carries its own model configuration; --modality "
                                         r"'Flow' \(the checkpoint has 'RGB'\)"):
        evaluate(ckpts["rgb"], "--modality", "Flow")
    # a video listed twice: refused at start-up with the list file and both line numbers
    val = os.path.join(tiny_toy, "toy", "val_rgb.txt")
    lines = open(val).read().splitlines()
    dup = tmp_path / "dup.txt"
    dup.write_text("\n".join(lines + [lines[1]]) + "\n")
    with pytest.raises(SystemExit, match=rf"dup\.txt:{len(lines) + 1}: video '{lines[1].split()[0]}' is listed "
                                         r"again \(first at line 2\)"):
        evaluate(ckpts["rgb"], "--test_list", str(dup))
    # a file that is no checkpoint of ours, and one without weights
    bare = tmp_path / "bare.pth"
    torch.save({"epoch": 1}, bare)
    with pytest.raises(SystemExit, match=r"bare\.pth has no 'state_dict' entry"):
        evaluate(str(bare))
    with pytest.raises(SystemExit) as exc:
        parse_test_args(["toy", "--weights", ckpts["rgb"], "--twice_sample", "--dense_sample"])
    assert exc.value.code == 2 and "--twice_sample adds a shifted uniform clip" in capsys.readouterr().err
