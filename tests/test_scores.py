"""ops/scores.py: per-video scores, fusion, metrics and score files."""
import numpy as np
import pytest

from ops.scores import (align_to, fuse, fused_scores, load_scores, metrics, save_scores, video_scores,
                        write_confusion_png, write_per_class, write_tsm_csv)


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
    from PIL import Image
    write_confusion_png(cm, tmp_path / "confusion.png", ["a", "b", "c"])
    with Image.open(tmp_path / "confusion.png") as img:
        assert img.size[0] > 3 * 24 and img.size[1] > 3 * 24     # three 24-pixel cells plus the labels
