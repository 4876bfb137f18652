"""ops/scores.py: per-video scores, fusion, metrics, calibration, score files and report figures."""
import os

import numpy as np
import pytest

from ops.scores import (ECE_BINS, align_to, calibration, confusion_figure, format_metrics, fuse, fused_scores,
                        load_scores, metrics, reliability_figure, report_path, save_scores, score_probabilities,
                        timeline_figure, video_scores, write_confusion_png, write_per_class, write_reliability_png,
                        write_report, write_timeline_png, write_tsm_csv)


def test_video_scores_average_logits_then_softmax():
    # Two views of one video: mean of logits then softmax differs from the mean of softmaxes.
    views = np.array([[[4.0, 0.0], [0.0, 2.0]]])                      # (N=1, V=2, C=2)
    np.testing.assert_allclose(video_scores(views), [[2.0, 1.0]])
    mean_then_softmax = np.exp([2.0, 1.0]) / np.exp([2.0, 1.0]).sum()
    np.testing.assert_allclose(video_scores(views, softmax=True)[0], mean_then_softmax, rtol=1e-6)
    softmax_then_mean = (np.exp([4.0, 0.0]) / np.exp([4.0, 0.0]).sum()
                         + np.exp([0.0, 2.0]) / np.exp([0.0, 2.0]).sum()) / 2
    assert not np.allclose(mean_then_softmax, softmax_then_mean)


def test_fuse_is_the_coefficient_weighted_sum():
    a, b = np.array([[1.0, 2.0]]), np.array([[3.0, -1.0]])
    np.testing.assert_allclose(fuse([a, b], [1.0, 0.5]), [[2.5, 1.5]])   # not divided by the model count
    np.testing.assert_allclose(fuse([a], [2.0]), 2 * a)
    with pytest.raises(ValueError, match="2 score sets but 1 coefficients"):
        fuse([a, b], [1.0])
    with pytest.raises(ValueError):
        fuse([], [])


def test_fused_scores_aggregate_each_model_then_weight():
    # Models with 2 and 3 views of the same 2 videos: per-model video scores, then the weighted sum.
    views_a = np.array([[[4.0, 0.0], [0.0, 2.0]], [[1.0, 1.0], [3.0, 0.0]]])
    views_b = np.array([[[0.0, 1.0], [2.0, 2.0], [1.0, 0.0]], [[0.0, 0.0], [1.0, 3.0], [2.0, 1.0]]])
    for flags in ({}, {'softmax': True}, {'view_softmax': True}):
        want = 1.0 * video_scores(views_a, **flags) + 0.5 * video_scores(views_b, **flags)
        np.testing.assert_allclose(fused_scores([views_a, views_b], [1.0, 0.5], **flags), want)
    np.testing.assert_allclose(fused_scores([views_a], [1.0]), [[2.0, 1.0], [2.0, 0.5]])
    with pytest.raises(ValueError, match='exclusive'):
        fused_scores([views_a], [1.0], softmax=True, view_softmax=True)


def test_metrics_by_hand():
    # 4 videos, 6 classes. Ranking of each row, best first:
    scores = np.array([[9, 8, 7, 6, 5, 4],     # label 0: top-1 hit
                       [9, 8, 7, 6, 5, 4],     # label 4: 5th best -> top-5 hit only
                       [1, 9, 2, 3, 4, 5],     # label 1: top-1 hit
                       [9, 8, 7, 6, 5, 4]],    # label 5: 6th best -> miss
                      dtype=np.float32)
    labels = np.array([0, 4, 1, 5])
    res, cm = metrics(scores, labels, 6)
    assert res["top1"] == pytest.approx(50.0)
    assert res["top5"] == pytest.approx(75.0)
    assert res["num_videos"] == 4
    # classes present: 0 (1/1), 1 (1/1), 4 (0/1), 5 (0/1) -> mean 50 %; absent classes do not count
    assert res["mean_class_acc"] == pytest.approx(50.0)
    expected = np.zeros((6, 6), dtype=np.int64)
    expected[0, 0] = expected[4, 0] = expected[1, 1] = expected[5, 0] = 1
    np.testing.assert_array_equal(cm, expected)
    assert cm.sum() == 4


def test_metrics_mean_class_accuracy_weights_classes_equally():
    scores = np.eye(2, dtype=np.float32)[[0, 0, 0, 0, 0]]             # always predicts class 0
    res, _ = metrics(scores, np.array([0, 0, 0, 0, 1]), 2)
    assert res["top1"] == pytest.approx(80.0)
    assert res["mean_class_acc"] == pytest.approx(50.0)


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 6, 5)).astype(np.float32)
    path = str(tmp_path / "sub" / "s.npz")
    save_scores(path, ["a/1", "b", "c"], [4, 0, 2], logits, "8 frames x 3 crops x 2 clips (twice)")
    s = load_scores(path)
    assert s["video_ids"] == ["a/1", "b", "c"]
    np.testing.assert_array_equal(s["labels"], [4, 0, 2])
    np.testing.assert_array_equal(s["scores"], logits)
    assert s["protocol"] == "8 frames x 3 crops x 2 clips (twice)"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["s.npz"]   # no temp file left


def test_load_scores_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_scores(str(tmp_path / "nope.npz"))
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(ValueError, match="other.npz: not a score file"):
        load_scores(str(other))
    flat = tmp_path / "flat.npz"
    np.savez(flat, scores=np.zeros((2, 3)), labels=np.zeros(2), video_ids=np.array(["a", "b"]),
             protocol=np.array("p"))
    with pytest.raises(ValueError, match="videos, views, classes"):
        load_scores(str(flat))


def test_align_to_reorders_and_rejects_other_sets():
    values = np.array([10, 20, 30])
    np.testing.assert_array_equal(align_to(["c", "a", "b"], ["a", "b", "c"], values, "x"), [30, 10, 20])
    with pytest.raises(ValueError, match=r"flow.npz: video ids differ \(missing \['d'\]"):
        align_to(["a", "b", "d"], ["a", "b", "c"], values, "flow.npz")
    with pytest.raises(ValueError, match=r"extra \['c'\]"):
        align_to(["a", "b"], ["a", "b", "c"], values, "x")
    with pytest.raises(ValueError, match="repeated"):
        align_to(["a", "a", "b"], ["a", "b", "b"], values, "x")
    with pytest.raises(ValueError, match="repeated"):
        align_to(["a", "a"], ["a", "b"], values[:2], "x")


def test_writers_per_class_csv_tsm_csv_and_confusion_png(tmp_path):
    cm = np.array([[2, 1, 0], [0, 0, 0], [1, 0, 3]])          # rows: true class, columns: predicted
    write_per_class(cm, tmp_path / "per_class.csv", ["a", "b", "c"])
    assert (tmp_path / "per_class.csv").read_text().splitlines() == [
        "class,name,count,top1", "0,a,3,66.67", "1,b,0,", "2,c,4,75.00"]
    write_per_class(cm, tmp_path / "unnamed.csv", None)
    assert (tmp_path / "unnamed.csv").read_text().splitlines()[1] == "0,0,3,66.67"
    scores = np.array([[0.1, 0.2, 0.9, 0.0, 0.3, 0.4], [0.8, 0.1, 0.0, 0.5, 0.6, 0.7]])
    names = list("abcdef")
    write_tsm_csv(tmp_path / "pred.csv", ["v0", "v1"], scores, names, top5_indices=False)
    assert (tmp_path / "pred.csv").read_text().splitlines() == ["v0;c", "v1;a"]
    write_tsm_csv(tmp_path / "pred.csv", ["v0", "v1"], scores, None, top5_indices=False)
    assert (tmp_path / "pred.csv").read_text().splitlines() == ["v0;2", "v1;0"]
    write_tsm_csv(tmp_path / "top5.csv", ["v0", "v1"], scores, names, top5_indices=True)
    assert (tmp_path / "top5.csv").read_text().splitlines() == ["v0;2;5;4;1;0", "v1;0;5;4;3;1"]


def test_top5_is_left_out_with_five_classes_or_fewer():
    # 3 classes: every label is among the 5 best, so top-5 would be 100 % whatever the scores
    scores = np.array([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    res, _ = metrics(scores, np.array([0, 0]), 3)
    assert "top5" not in res and res["top1"] == pytest.approx(50.0)
    assert format_metrics(res) == "Prec@1 50.00%  mean class accuracy 50.00%"
    res5, _ = metrics(np.eye(5), np.arange(5), 5)
    assert "top5" not in res5
    res6, _ = metrics(np.eye(6), np.arange(6), 6)
    assert res6["top5"] == pytest.approx(100.0)
    assert format_metrics(dict(res6, ece=1.234)) == \
        "Prec@1 100.00%  Prec@5 100.00%  mean class accuracy 100.00%  ECE 1.23%"


# six videos, three classes: confidence (largest probability), correct?, bin of (b/15, (b+1)/15]
CALIBRATION_CASE = (
    [[0.9, 0.05, 0.05], [0.95, 0.05, 0.0], [0.2, 0.5, 0.3], [0.1, 0.4, 0.5], [0.6, 0.2, 0.2],
     [1 / 3, 1 / 3, 1 / 3]],
    [0, 1, 1, 0, 0, 2])
# 0.9 right -> bin 13; 0.95 wrong -> 14; 0.5 right and 0.5 wrong -> 7; 0.6 right -> 8 (0.6 = 9/15 is the
# closed right edge of bin 8); 1/3 with a tie, argmax class 0, wrong -> 4 (1/3 = 5/15, right edge of bin 4)


def test_expected_calibration_error_by_hand():
    probs, labels = CALIBRATION_CASE
    cal = calibration(probs, labels)
    assert cal["bins"] == ECE_BINS == 15
    expected_count = np.zeros(15, dtype=np.int64)
    expected_count[[4, 7, 8, 13, 14]] = [1, 2, 1, 1, 1]
    np.testing.assert_array_equal(cal["count"], expected_count)
    filled = expected_count > 0
    np.testing.assert_allclose(cal["accuracy"][filled], [0.0, 0.5, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(cal["confidence"][filled], [1 / 3, 0.5, 0.6, 0.9, 0.95])
    assert np.isnan(cal["accuracy"][~filled]).all()
    # sum over bins of |B|/N * |accuracy - confidence|, in percent: the bin of 0.5 has no gap
    assert cal["ece"] == pytest.approx(100 * (1 / 3 + 0.4 + 0.1 + 0.95) / 6)
    perfect = calibration([[1.0, 0.0], [0.0, 1.0]], [0, 1])
    assert perfect["ece"] == 0.0 and perfect["count"][-1] == 2
    assert calibration(np.zeros((0, 4)), np.zeros(0))["ece"] == 0.0


def test_ece_matches_the_reference_loop_on_random_logits():
    # multimodal-distillation's src/utils/calibration.py, written out: softmax of the (view-averaged) logits,
    # a mask conf > lower & conf <= upper per bin, |mean conf - accuracy| * fraction in bin, x 100
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(500, 7)) * rng.uniform(0.2, 4.0, size=(500, 1))
    labels = rng.integers(0, 7, 500)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    conf, correct = probs.max(1), probs.argmax(1) == labels
    edges = np.linspace(0, 1, 16)
    ece = 0.0
    for lower, upper in zip(edges[:-1], edges[1:]):
        inside = (conf > lower) & (conf <= upper)
        if inside.any():
            ece += abs(conf[inside].mean() - correct[inside].mean()) * inside.mean()
    assert calibration(probs, labels)["ece"] == pytest.approx(100 * ece, rel=1e-12)
    assert calibration(score_probabilities(logits, [1.0], False), labels)["ece"] == pytest.approx(100 * ece)


def test_calibration_refuses_logits_and_mismatched_labels():
    with pytest.raises(ValueError, match="not logits"):
        calibration([[2.0, -1.0]], [0])
    with pytest.raises(ValueError, match="N labels"):
        calibration([[0.5, 0.5]], [0, 1])


def test_score_probabilities_softmax_of_logits_or_weighted_mean_of_probabilities():
    fused = np.array([[1.0, 2.0, 0.0]])
    e = np.exp(fused[0])
    np.testing.assert_allclose(score_probabilities(fused, [1.0, 0.5], False)[0], e / e.sum())
    # --softmax / --view_softmax: 1 * p_a + 0.5 * p_b, divided by the coefficients' sum
    p_a, p_b = np.array([0.2, 0.8]), np.array([0.6, 0.4])
    np.testing.assert_allclose(score_probabilities([p_a + 0.5 * p_b], [1.0, 0.5], True)[0], [1 / 3, 2 / 3])


def test_report_paths_per_label_head():
    assert report_path("out", "confusion.png") == os.path.join("out", "confusion.png")
    assert report_path("out", "reliability.png", "verb") == os.path.join("out", "reliability_verb.png")
    assert report_path("out", "per_class.csv", "noun") == os.path.join("out", "per_class_noun.csv")


def _tick_texts(labels):
    return [t.get_text() for t in labels]


def test_confusion_figure_has_names_counts_colour_bar_and_title():
    cm = np.array([[2, 1, 0], [0, 0, 0], [1, 0, 13]])
    names = ["Pushing something from left to right", "Pushing something from right to left", "open"]
    fig = confusion_figure(cm, names, "toy: rgb.pth.tar\n8 frames x 1 crop x 1 clip (uniform), 224 px, 17 videos")
    ax, bar = fig.axes
    shown = _tick_texts(ax.get_xticklabels())
    assert shown == _tick_texts(ax.get_yticklabels())
    # long names are cut in the middle to 28 characters, so names that differ at the end stay distinct
    assert shown == ["Pushing somet\u2026 left to right", "Pushing somet\u2026 right to left", "open"]
    assert len(shown[0]) == 28
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert sorted(t.get_text() for t in ax.texts) == ["1", "1", "13", "2"]     # non-empty cells only
    assert bar.get_ylabel() == "fraction of the true class's videos"
    np.testing.assert_allclose(ax.images[0].get_array(), [[2 / 3, 1 / 3, 0], [0, 0, 0], [1 / 14, 0, 13 / 14]])
    title = fig._suptitle.get_text()
    assert "toy: rgb.pth.tar" in title and "(uniform), 224 px, 17 videos" in title
    unnamed = confusion_figure(cm)
    assert _tick_texts(unnamed.axes[0].get_xticklabels()) == ["0", "1", "2"] and unnamed._suptitle is None


def test_confusion_figure_scales_and_thins_labels_for_many_classes(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    names = [f"class number {i}" for i in range(400)]
    big = rng.integers(0, 3, size=(400, 400))
    fig = confusion_figure(big, names, "k400-like")
    ax = fig.axes[0]
    shown = _tick_texts(ax.get_xticklabels())
    assert len(shown) == 80 and shown[:2] == ["0 class number 0", "5 class number 5"]   # every 5th, indexed
    assert not ax.texts                                        # 4-pixel cells: no counts
    forty = confusion_figure(rng.integers(0, 3, size=(40, 40)), names[:40]).axes[0]
    assert len(forty.get_xticklabels()) == 40 and len(forty.texts) == np.count_nonzero(forty.images[0].get_array())
    sizes = {}
    for c in (3, 400):
        write_confusion_png(big[:c, :c], tmp_path / f"cm{c}.png", names[:c], "title")
        with Image.open(tmp_path / f"cm{c}.png") as img:
            sizes[c] = img.size
    assert 300 < sizes[3][0] < 1000 and 300 < sizes[3][1] < 1000
    assert 1500 < sizes[400][0] <= 2200 and 1500 < sizes[400][1] <= 2200   # grows with the classes, capped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm3.png", "cm400.png"]   # no temp files left


def test_reliability_figure_and_report_files(tmp_path):
    from PIL import Image
    probs, labels = CALIBRATION_CASE
    cal = calibration(probs, labels)
    fig = reliability_figure(cal, "toy: rgb.pth.tar")
    ax, counts = fig.axes
    bars = ax.containers[0]                                    # accuracy per non-empty bin
    np.testing.assert_allclose([b.get_height() for b in bars], [0.0, 0.5, 1.0, 1.0, 0.0])
    np.testing.assert_allclose([b.get_x() + b.get_width() / 2 for b in bars], (np.array([4, 7, 8, 13, 14]) + 0.5) / 15)
    assert [t.get_text() for t in counts.texts] == ["1", "2", "1", "1", "1"]
    assert ax.get_legend().get_title().get_text() == f"ECE {cal['ece']:.2f}%  (15 bins)"
    assert fig._suptitle.get_text() == "toy: rgb.pth.tar"
    write_reliability_png(cal, tmp_path / "r.png")
    with Image.open(tmp_path / "r.png") as img:
        assert img.size[0] > 400 and img.size[1] > 400
    cm = np.array([[1, 1], [0, 2]])
    paths = write_report(str(tmp_path), cm, ["a", "b"], "title", head="verb")
    assert [os.path.basename(p) for p in paths] == ["confusion_verb.npy", "confusion_verb.png", "per_class_verb.csv"]
    paths = write_report(str(tmp_path), cm, ["a", "b"], "title", cal=cal)
    assert [os.path.basename(p) for p in paths] == ["confusion.npy", "confusion.png", "per_class.csv",
                                                     "reliability.png"]
    np.testing.assert_array_equal(np.load(paths[0]), cm)
    assert all(os.path.getsize(p) > 0 for p in paths)


def _window(start, end, top, fps=None):
    w = dict(start_frame=start, end_frame=end, top=[dict(**{"class": c, "name": n, "prob": p}) for c, n, p in top])
    if fps:
        w.update(start_s=(start - 1) / fps, end_s=end / fps)
    return w


def test_timeline_figure_draws_top_classes_over_time_with_gaps_outside_the_top_k(tmp_path):
    from PIL import Image
    long_name = "Pushing something from left to right across the table"
    report = [
        {"video": "/data/a.mp4", "fps": 10.0, "windows": [
            _window(1, 20, [(3, "open door", 0.7), (5, long_name, 0.2)], fps=10.0),
            _window(11, 30, [(5, long_name, 0.6), (3, "open door", 0.3)], fps=10.0),
            _window(21, 40, [(5, long_name, 0.9), (7, "close door", 0.05)], fps=10.0)]},
        {"video": "/data/short.mp4", "top": []},                     # no windows: no panel
        {"video": "/frames/b", "windows": [_window(1, 16, [(2, "c2", 0.5)]), _window(17, 32, [(2, "c2", 0.8)])]},
    ]
    fig = timeline_figure(report)
    first, second = fig.axes
    assert first.get_title(loc="left") == "a.mp4" and second.get_title(loc="left") == "b"
    # the class that is top-1 in most windows first; a class never top-1 (close door) is not drawn
    assert [t.get_text() for t in first.get_legend().get_texts()] == ["Pushing somet\u2026ross the table", "open door"]
    pushing, door = first.get_lines()
    np.testing.assert_allclose(pushing.get_xdata(), [1.0, 2.0, 3.0])          # window centres in seconds
    np.testing.assert_allclose(pushing.get_ydata(), [0.2, 0.6, 0.9])
    np.testing.assert_allclose(door.get_ydata(), [0.7, 0.3, np.nan])          # outside the top-k: a gap
    assert first.get_xlabel() == "window centre, s" and second.get_xlabel() == "window centre, frame"
    np.testing.assert_allclose(second.get_lines()[0].get_xdata(), [8.5, 24.5])
    write_timeline_png(report, tmp_path / "t.png")
    with Image.open(tmp_path / "t.png") as img:
        assert img.size == (800, 540)                                      # 8 in x (0.6 + 2 panels x 2.4 in)
