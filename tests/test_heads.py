"""Multi-head labels (ops/heads.py): list parsing, the loss, per-head and action metrics, the classifier
and its checkpoint keys, score files and fusion, and the refusals (hand-computed values throughout)."""
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ops.checkpoint import load_weights
from ops.dataset import VideoDataSet, parse_list
from ops.dataset_config import data_record, resolve_dataset
from ops.distill import TeacherScores, distill_loss, kd_loss
from ops.heads import (action_topk_correct, check_same_heads, correct_counts, head_metrics, parse_head_weights,
                       parse_heads, per_head, split_heads)
from ops.mixing import mix_batch
from ops.models import TSN
from ops.sampling import SamplingConfig
from ops.scores import fused_scores, load_scores, metrics, save_scores

HEADS = (('verb', 2), ('noun', 3))


def test_parse_heads_and_weights():
    assert parse_heads('verb:97, noun:300') == (('verb', 97), ('noun', 300))
    for bad, message in [('verb', 'name:classes'), ('verb:97', 'at least two heads'),
                         ('verb:2,verb:3', 'repeated'), ('verb:0,noun:3', '>= 1 class'), ('1v:2,n:3', 'identifiers')]:
        with pytest.raises(ValueError, match=message):
            parse_heads(bad)
    assert parse_head_weights(None, HEADS) == (1.0, 1.0)
    assert parse_head_weights('1,3', HEADS) == (1.0, 3.0)
    with pytest.raises(ValueError, match='3 weights for the 2 heads verb:2,noun:3'):
        parse_head_weights('1,2,3', HEADS)
    with pytest.raises(ValueError, match='not all 0'):
        parse_head_weights('0,0', HEADS)


def test_parse_list_with_heads_names_file_line_and_head(tmp_path):
    good = tmp_path / 'good.txt'
    good.write_text('# comment\nvid_a 10 1 2\nvid_b 12 0 0\n')
    records = parse_list(str(good), 'frames', heads=HEADS)
    assert [(r.path, r.num_frames, r.label) for r in records] == [('vid_a', 10, (1, 2)), ('vid_b', 12, (0, 0))]
    video = tmp_path / 'video.txt'
    video.write_text('a.mp4 1 2\n')
    assert parse_list(str(video), 'video', heads=HEADS)[0].label == (1, 2)
    # single-head parsing is unchanged
    single = tmp_path / 'single.txt'
    single.write_text('vid_a 10 1\n')
    assert parse_list(str(single), 'frames')[0].label == 1
    few = tmp_path / 'few.txt'
    few.write_text('vid_a 10 1 2\nvid_b 12 1\n')
    with pytest.raises(ValueError, match=r'few.txt:2: 3 columns instead of 4; expected "path num_frames verb noun"'):
        parse_list(str(few), 'frames', heads=HEADS)
    out = tmp_path / 'out.txt'
    out.write_text('vid_a 10 1 3\n')
    with pytest.raises(ValueError, match=r"out.txt:1: head 'noun' has 3 classes, label 3 is out of range"):
        parse_list(str(out), 'frames', heads=HEADS)


def test_registry_heads_and_data_record():
    info = resolve_dataset('epic100', 'RGB', data_root='/d')
    assert info.heads == (('verb', 97), ('noun', 300)) and info.num_class == 397 and info.categories is None
    assert info.train_list == '/d/EPIC-KITCHENS-100/lists/train_rgb.txt'
    assert resolve_dataset('epic55', 'RGB').heads == (('verb', 125), ('noun', 352))
    toy = resolve_dataset('toy', 'RGB', heads=parse_heads('verb:2,noun:4'))
    assert toy.num_class == 6 and toy.categories is None
    assert data_record(toy)['heads'] == [['verb', 2], ['noun', 4]]
    assert 'heads' not in data_record(resolve_dataset('toy', 'RGB'))
    with pytest.raises(ValueError, match='replace --num_class'):
        resolve_dataset('epic100', 'RGB', num_class=397)


def test_multi_head_batches_collate_to_B_by_H(tmp_path, write_rgb_jpegs):
    for i in range(2):
        write_rgb_jpegs(tmp_path / f'v{i}', 6, video_index=i)
    (tmp_path / 'list.txt').write_text('v0 6 1 2\nv1 6 0 1\n')
    ds = VideoDataSet(str(tmp_path), str(tmp_path / 'list.txt'), sampling=SamplingConfig(2, 'val'),
                      records=parse_list(str(tmp_path / 'list.txt'), 'frames', heads=HEADS),
                      transform=None)
    labels = torch.utils.data.default_collate([ds[0], ds[1]])[1]
    assert labels.tolist() == [[1, 2], [0, 1]]


def test_loss_is_the_mean_over_heads_of_the_weighted_cross_entropies():
    # verb logits [0, ln 3] with label 1: CE = -log(3/4); noun logits [0, 0, 0] with label 0: CE = log 3
    logits = torch.tensor([[0.0, math.log(3.0), 0.0, 0.0, 0.0]])
    labels = torch.tensor([[1, 0]])
    verb, noun = math.log(4 / 3), math.log(3)
    assert per_head(F.cross_entropy, HEADS)(logits, labels).item() == pytest.approx((verb + noun) / 2)
    # the paper's code: sum_h w_h CE_h / (number of heads of weight > 0)
    assert per_head(F.cross_entropy, HEADS, (1, 3))(logits, labels).item() == pytest.approx((verb + 3 * noun) / 2)
    # a head of weight 0 is left out
    assert per_head(F.cross_entropy, HEADS, (0, 2))(logits, labels).item() == pytest.approx(2 * noun)


def test_smoothing_and_mixing_are_per_head():
    labels = torch.tensor([[1, 0], [0, 2]])
    clips = torch.zeros(2, 3, 4, 4)
    _, targets = mix_batch(clips, labels, 5, seed=0, epoch=0, step=0, smoothing=0.2, heads=HEADS)
    # verb (2 classes): on 1 - 0.2 + 0.1, off 0.1; noun (3 classes): on 1 - 0.2 + 0.2/3, off 0.2/3
    on2, on3, off3 = 0.9, 0.8 + 0.2 / 3, 0.2 / 3
    expected = torch.tensor([[0.1, on2, on3, off3, off3], [on2, 0.1, off3, off3, on3]])
    torch.testing.assert_close(targets, expected)
    _, mixed = mix_batch(clips, labels, 5, seed=0, epoch=0, step=0, mixup=1.0, heads=HEADS)
    torch.testing.assert_close(mixed[:, :2].sum(1), torch.ones(2))     # every head's targets sum to 1
    torch.testing.assert_close(mixed[:, 2:].sum(1), torch.ones(2))
    # soft targets through the multi-head loss: each head's soft-target CE, averaged
    logits = torch.randn(2, 5)
    loss = per_head(F.cross_entropy, HEADS)(logits, targets)
    by_hand = (-(targets[:, :2] * logits[:, :2].log_softmax(1)).sum(1).mean()
               - (targets[:, 2:] * logits[:, 2:].log_softmax(1)).sum(1).mean()) / 2
    torch.testing.assert_close(loss, by_hand)


def test_distillation_and_mutual_terms_are_per_head():
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 5), torch.randn(4, 5)
    labels = torch.tensor([[0, 1], [1, 2], [1, 0], [0, 0]])
    kd = per_head(kd_loss, HEADS)(student, teacher, temperature=2.0)
    by_hand = (kd_loss(student[:, :2], teacher[:, :2], 2.0) + kd_loss(student[:, 2:], teacher[:, 2:], 2.0)) / 2
    torch.testing.assert_close(kd, by_hand)
    # one softmax over all 5 columns would be another number
    assert not torch.isclose(kd, kd_loss(student, teacher, 2.0))
    # main.py's student loss with --head_weights 1,3: the CE weighted per head, the KL a plain mean over
    # heads (the paper's DistillationCriterion), then gt_weight * CE + distill_weight * KL
    total, ce, kd_term = distill_loss(student, teacher, labels, temperature=2.0, gt_weight=0.5, distill_weight=2.0,
                                      ce_fn=per_head(F.cross_entropy, HEADS, (1, 3)),
                                      kd_fn=per_head(kd_loss, HEADS, (1, 1)))
    ce_v, ce_n = (F.cross_entropy(s, y) for s, y in zip(split_heads(student, HEADS), labels.T))
    torch.testing.assert_close(ce, (ce_v + 3 * ce_n) / 2)
    torch.testing.assert_close(kd_term, kd)
    torch.testing.assert_close(total, 0.5 * (ce_v + 3 * ce_n) / 2 + 2.0 * kd)


def test_per_head_and_action_accuracy_by_hand():
    # video 0: verb right, noun right; 1: verb right, noun wrong; 2: verb wrong, noun right
    logits = torch.tensor([[2.0, 0.0, 0.0, 3.0, 1.0],
                           [0.0, 1.0, 5.0, 0.0, 4.0],
                           [1.0, 0.0, 0.0, 0.0, 2.0]])
    labels = torch.tensor([[0, 1], [1, 2], [1, 2]])
    counts = correct_counts(logits, labels, HEADS)
    assert (counts['verb_top1'], counts['noun_top1'], counts['top1']) == (2, 2, 1)
    # top-5 of 2 and 3 classes is every class; the action top-5 ranks the 6 (verb, noun) pairs
    assert (counts['verb_top5'], counts['noun_top5']) == (3, 3)
    res, cms = head_metrics(logits.numpy(), labels.numpy(), HEADS, metrics)
    assert res['action_top1'] == res['top1'] == pytest.approx(100 / 3)
    assert res['heads']['verb']['top1'] == pytest.approx(200 / 3)
    # noun: true 1 -> 1, true 2 -> 0, true 2 -> 2
    assert cms['noun'].tolist() == [[0, 0, 0], [0, 1, 0], [1, 0, 1]]
    # single head: the old counts
    assert correct_counts(logits[:, :2], labels[:, 0], None) == {'top1': 2, 'top5': 3}


def test_action_top_k_equals_brute_force_over_all_pairs():
    torch.manual_seed(1)
    heads = (('verb', 6), ('noun', 7), ('hand', 3))
    logits = torch.randn(50, 16)
    labels = torch.stack([torch.randint(0, s, (50,)) for _, s in heads], 1)
    lp = [z.log_softmax(1) for z in split_heads(logits, heads)]
    combos = list(itertools.product(*(range(s) for _, s in heads)))
    joint = torch.stack([sum(lp[h][:, c[h]] for h in range(3)) for c in combos], 1)     # (50, 126)
    truth = torch.tensor([combos.index(tuple(y)) for y in labels.tolist()])
    order = joint.argsort(1, descending=True)
    for k in (1, 5):
        expected = int((order[:, :k] == truth[:, None]).any(1).sum())
        assert action_topk_correct(logits, labels, heads, (k,)) == [expected]


def test_classifier_keys_config_and_checkpoint_heads():
    model = TSN(5, 2, 'RGB', base_model='resnet18', pretrain='none', dropout=0.5, heads=HEADS)
    keys = [k for k in model.state_dict() if 'fc' in k]
    assert keys == ['new_fc.verb.weight', 'new_fc.verb.bias', 'new_fc.noun.weight', 'new_fc.noun.bias']
    assert model.config()['heads'] == [['verb', 2], ['noun', 3]]
    assert 'heads' not in TSN(5, 2, 'RGB', base_model='resnet18', pretrain='none').config()
    out = model(torch.randn(2, 6, 32, 32))
    assert out.shape == (2, 5)
    with pytest.raises(ValueError, match='not the total of the heads verb:2,noun:3'):
        TSN(6, 2, 'RGB', base_model='resnet18', pretrain='none', heads=HEADS)
    # the same heads without dropout: renamed to base_model.fc.<head>, same outputs
    plain = TSN(5, 2, 'RGB', base_model='resnet18', pretrain='none', dropout=0.0, heads=HEADS).eval()
    report = load_weights(plain, model.state_dict())
    assert report['head'] == 'renamed new_fc -> base_model.fc'
    x = torch.randn(1, 6, 32, 32)
    torch.testing.assert_close(plain(x), model.eval()(x))
    # other heads (or a single-label file): the source head is dropped, naming both layouts
    other = TSN(7, 2, 'RGB', base_model='resnet18', pretrain='none', dropout=0.5, heads=(('verb', 3), ('noun', 4)))
    report = load_weights(other, model.state_dict())
    assert report['head'] == 'dropped new_fc (heads verb:2,noun:3); new_fc (heads verb:3,noun:4) keeps its init'
    single = TSN(8, 2, 'RGB', base_model='resnet18', pretrain='none', dropout=0.5)
    assert load_weights(model, single.state_dict())['head'].startswith('dropped new_fc (heads one head)')


def test_score_files_carry_heads_and_fuse_per_head(tmp_path):
    logits = np.array([[[0.0, 1.0, 2.0, 0.0, 0.0]], [[1.0, 0.0, 0.0, 0.0, 3.0]]], dtype=np.float32)
    labels = np.array([[1, 0], [0, 2]])
    save_scores(str(tmp_path / 's.npz'), ['a', 'b'], labels, logits, 'p', heads=HEADS)
    loaded = load_scores(str(tmp_path / 's.npz'))
    assert loaded['heads'] == HEADS and loaded['labels'].tolist() == labels.tolist()
    fused = fused_scores([logits], [1.0], softmax=True, heads=HEADS)
    np.testing.assert_allclose(fused[:, :2].sum(1), 1.0, rtol=1e-6)      # one softmax per head
    np.testing.assert_allclose(fused[0, 2:], np.exp([2, 0, 0]) / np.exp([2, 0, 0]).sum(), rtol=1e-6)
    save_scores(str(tmp_path / 'single.npz'), ['a'], [1], logits[:1], 'p')
    assert load_scores(str(tmp_path / 'single.npz'))['heads'] is None
    teacher = TeacherScores(str(tmp_path / 's.npz'))
    assert teacher.heads == HEADS
    torch.testing.assert_close(teacher.lookup(['b'], labels=torch.tensor([[0, 2]])), torch.tensor(logits[1]))
    with pytest.raises(ValueError, match=r"video 'b' has label \[0, 2\] there but \[0, 1\] in the data"):
        teacher.lookup(['a', 'b'], labels=torch.tensor([[1, 0], [0, 1]]))


def test_head_mismatch_is_refused_naming_both():
    check_same_heads(HEADS, [['verb', 2], ['noun', 3]], 'student', 'teacher')
    with pytest.raises(ValueError, match='the Flow teacher has heads verb:2,noun:4 but the student has verb:2,noun:3'):
        check_same_heads(HEADS, (('verb', 2), ('noun', 4)), 'the student', 'the Flow teacher')
    with pytest.raises(ValueError, match='has heads one head but the student has verb:2,noun:3'):
        check_same_heads(HEADS, None, 'the student', 'x')


def test_check_data_reads_multi_head_lists(tmp_path, write_list, frames_dataset, capsys):
    from scripts import check_data
    d = frames_dataset
    good = write_list(tmp_path / "two.txt", ["v0 10 0 1", "v1 12 1 0", "v2 9 1 2"])
    common = ["x", "--root_path", d["root"], "--split", "train", "--heads", "verb:2,noun:3", "--val_list", good]
    assert check_data.main([*common, "--train_list", good]) == 0
    assert "checked x RGB (frames): train 3 videos" in capsys.readouterr().out
    bad = write_list(tmp_path / "bad.txt", ["v0 10 0 1", "v1 12 1 3"])
    assert check_data.main([*common, "--train_list", bad]) == 1
    out = capsys.readouterr().out
    assert "malformed_list" in out and f"{bad}:2" in out and "noun" in out
    assert check_data.main(["x", "--root_path", d["root"], "--split", "train", "--num_class", "3",
                            "--train_list", good, "--val_list", good]) == 1   # without --heads: a column too many
    assert "malformed_list" in capsys.readouterr().out
