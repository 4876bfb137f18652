"""ILA's text head (archs/ila_text.py): tokenizer, text encoder, prompt generator, integration transformer,
cosine logits, caching, CLIP text weights, TSN integration, zero-shot class lists, class-name files."""
import json
import logging
import math

import pytest
import torch

from archs.ila import CLIP_CONFIGS, ILA_ARCHS, CLIPVisionTransformer, TemporalTransformer
from archs.ila_text import (TEXT_CONFIGS, CLIPTextTransformer, CrossAttention, ILATextHead, VideoSpecificPrompt,
                            cosine_logits, tokenize)
from ops.dataset_config import parse_class_names, read_class_names
from ops.models import TSN, has_text_head, with_class_names

TINY_TEXT = TEXT_CONFIGS['vit_tiny']
NAMES = ['open door', 'close door', 'jump']


@pytest.fixture(autouse=True)
def _quiet_random_init_warning(caplog):
    caplog.set_level(logging.ERROR, logger='archs.ila')


def text_tsn(names=NAMES, **kw):
    return TSN(len(names), 3, 'RGB', base_model='ila_vit_tiny', dropout=0.5, input_size=32, pretrain='none',
               backbone_kwargs=dict(head='text', class_names=list(names), **kw))


def test_tokenizer_is_clips_bpe_and_refuses_names_that_do_not_fit():
    tokens = tokenize(['abseiling', 'Air  drumming'], 77)
    # <start>=49406, <end>=49407 (CLIP's vocabulary); lower case and collapsed white space as CLIP's cleaning
    assert tokens[0, :5].tolist() == [49406, 596, 567, 3299, 49407] and not tokens[0, 5:].any()
    assert torch.equal(tokens[1], tokenize(['air drumming'], 77)[0])
    with pytest.raises(ValueError, match=r"class name 1 'a b c d' is 6 tokens long.*at most 5"):
        tokenize(['x', 'a b c d'], 5)


def test_text_encoder_reads_the_end_token_causally():
    torch.manual_seed(0)
    enc = CLIPTextTransformer(**{**TINY_TEXT, 'layers': 0}, output_dim=4).eval()
    tokens = tokenize(['jump'], 77)
    end = int(tokens.argmax())
    # No blocks: the feature is LN(token + position embedding at the end token) @ projection.
    expected = enc.ln_final(enc.token_embedding.weight[49407] + enc.positional_embedding[end]) @ enc.text_projection
    torch.testing.assert_close(enc(tokens)[0], expected)
    # Causal blocks: tokens after the end token do not change the feature.
    enc = CLIPTextTransformer(**TINY_TEXT, output_dim=4).eval()
    padded = tokens.clone()
    padded[0, end + 1:] = 7
    with torch.no_grad():
        torch.testing.assert_close(enc(padded), enc(tokens))


def test_cross_attention_and_prompt_generator_by_hand():
    att = CrossAttention(2, 1)
    with torch.no_grad():
        for lin in (att.q_proj, att.k_proj, att.v_proj, att.proj):
            lin.weight.copy_(torch.eye(2))
        att.proj.bias.zero_()
    # q = (1, 0) on keys (1, 0), (0, 1): weights softmax(2^-0.5 * (1, 0)) = (0.66976, 0.33024)
    out = att(torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]))
    torch.testing.assert_close(out, torch.tensor([[[0.66976, 0.33024]]]), atol=1e-5, rtol=0)

    gen = VideoSpecificPrompt(4, layers=1, alpha=0.1)
    layer = gen.decoder[0]
    with torch.no_grad():
        for lin in (layer.cross_attn.q_proj, layer.cross_attn.k_proj, layer.cross_attn.v_proj, layer.cross_attn.proj):
            lin.weight.copy_(torch.eye(4))
        layer.mlp[-1].weight.zero_()            # MLP adds its (zero) bias only
    # One visual token: attention weight 1, so text + LN(v); LN((1,2,3,4)) = (-1.3416, -0.4472, 0.4472, 1.3416)
    out = gen(torch.tensor([[[1.0, 0, 0, 0]]]), torch.tensor([[[1.0, 2, 3, 4]]]))
    torch.testing.assert_close(out, 0.1 * torch.tensor([[[1 - 1.34164, -0.44721, 0.44721, 1.34164]]]),
                               atol=1e-4, rtol=0)
    assert gen.alpha.shape == (4,) and torch.all(gen.alpha == 0.1)


def test_integration_transformer_residual_mean():
    mit = TemporalTransformer(64, 3)
    with torch.no_grad():
        for block in mit.resblocks:        # blocks that add nothing: out = mean_t(x + pos + x)
            block.attn.out_proj.weight.zero_()
            block.mlp.c_proj.weight.zero_()
    x = torch.randn(2, 3, 64)
    torch.testing.assert_close(mit(x), (2 * x + mit.positional_embedding).mean(1))
    assert mit.resblocks[0].attn.num_heads == 1      # ILA: embed_dim // 64 heads


def test_cosine_logits_with_scale():
    video = torch.tensor([[3.0, 4.0]])
    text = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    logits = cosine_logits(video, text, torch.tensor(math.log(100.0)))
    torch.testing.assert_close(logits, torch.tensor([[60.0, 80.0, -60.0]]))
    # per-video text features (B, K, D) give the same for identical rows
    torch.testing.assert_close(cosine_logits(video, text.unsqueeze(0), torch.tensor(math.log(100.0))), logits)


def test_text_features_cached_per_class_list_and_weights():
    head = ILATextHead(NAMES, visual_width=32, output_dim=16, text_config=TINY_TEXT)
    assert not any(p.requires_grad for p in head.parameters())      # ILA trains none of it
    assert head.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    calls = []
    head.text.register_forward_hook(lambda *_: calls.append(1))
    first = head.text_features()
    assert head.text_features() is first and len(calls) == 1
    head.set_class_names(['a', 'b'])
    assert head.text_features().shape == (2, 16) and len(calls) == 2
    state = {k: v + 1 if v.is_floating_point() else v for k, v in head.state_dict().items()}
    head.load_state_dict(state)                                       # new weights: recomputed
    assert head.text_features() is not first and len(calls) == 3


def full_clip_state(visual, text):
    state = {f'visual.{k}': v for k, v in visual.state_dict().items()}
    state.update(text.state_dict())
    state['logit_scale'] = torch.tensor(math.log(100.0))
    return state


def test_text_tower_loaded_from_the_clip_file_and_image_only_file_refused(tmp_path):
    torch.manual_seed(1)
    visual = CLIPVisionTransformer(**CLIP_CONFIGS['vit_tiny'])
    text = CLIPTextTransformer(**TINY_TEXT, output_dim=16).eval()
    torch.save(full_clip_state(visual, text), tmp_path / 'clip.pt')
    model = ILA_ARCHS['ila_vit_tiny'](3, clip_weights=tmp_path / 'clip.pt', head='text', class_names=NAMES)
    with torch.no_grad():
        torch.testing.assert_close(model.text_head.text_features(), text(tokenize(NAMES, 77)))
    assert model.text_head.logit_scale.item() == pytest.approx(math.log(100.0))
    torch.save(visual.state_dict(), tmp_path / 'visual_only.pt')
    with pytest.raises(ValueError, match=r"no CLIP text tower: missing \['token_embedding.weight', "
                                         r"'positional_embedding', .*'logit_scale', 'transformer.resblocks.\*'\]"):
        ILA_ARCHS['ila_vit_tiny'](3, clip_weights=tmp_path / 'visual_only.pt', head='text', class_names=NAMES)
    # the linear head does not need the text tower
    ILA_ARCHS['ila_vit_tiny'](3, clip_weights=tmp_path / 'visual_only.pt')


def test_tsn_text_head_zero_shot_rebuild():
    torch.manual_seed(2)
    model = text_tsn().eval()
    assert model.new_fc is None and not model.has_linear_head and model.num_class == 3
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all('.ila.' in n or n.startswith('base_model.temporal.') for n in trainable)
    groups = model.get_optim_policies(lr=8e-6, weight_decay=3e-3)
    assert {g['name'] for g in groups} == {'align', 'align_no_decay', 'skip', 'skip_no_decay', 'temporal',
                                           'temporal_no_decay'}
    config = model.config()
    assert has_text_head(config) and config['backbone_kwargs']['class_names'] == NAMES
    x = torch.randn(2, 9, 32, 32)
    with torch.no_grad():
        logits = model(x)
        other = TSN.from_config(with_class_names(config, ['walk', 'open door']))
        other.load_state_dict(model.state_dict())                   # the weights do not depend on the names
        torch.testing.assert_close(other.eval()(x)[:, 1], logits[:, 0])
        model.set_class_names(['walk', 'open door'])
        torch.testing.assert_close(model(x), other(x))
    assert model.num_class == 2 and model.config()['backbone_kwargs']['class_names'] == ['walk', 'open door']
    linear = TSN(3, 3, 'RGB', base_model='ila_vit_tiny', dropout=0.5, input_size=32, pretrain='none')
    with pytest.raises(ValueError, match='linear classifier over 3 trained classes'):
        with_class_names(linear.config(), ['a', 'b'])
    with pytest.raises(ValueError, match='text head'):
        linear.set_class_names(['a', 'b'])
    with pytest.raises(ValueError, match='num_class 4 but the backbone classifies over 3'):
        TSN(4, 3, 'RGB', base_model='ila_vit_tiny', input_size=32, pretrain='none',
            backbone_kwargs=dict(head='text', class_names=NAMES))


def test_class_name_files_and_lists_strict(tmp_path):
    good = tmp_path / 'good.txt'
    good.write_text('open door\n  close door \n\n')
    assert read_class_names(str(good)) == ['open door', 'close door']
    gap = tmp_path / 'gap.txt'
    gap.write_text('a\n\nb\n')
    with pytest.raises(ValueError, match=r'gap.txt:2: empty class name'):
        read_class_names(str(gap))
    twice = tmp_path / 'twice.txt'
    twice.write_text('a\nb\na\n')
    with pytest.raises(ValueError, match=r"twice.txt:3: class name 'a' repeats line 1"):
        read_class_names(str(twice))
    assert parse_class_names(' open door, close door') == ['open door', 'close door']
    with pytest.raises(ValueError, match='name 2 of 3 is empty'):
        parse_class_names('a,,b')
    with pytest.raises(ValueError, match="name 3 'a' repeats name 1"):
        parse_class_names('a,b,a')
    with pytest.raises(ValueError, match='needs class_names'):
        ILA_ARCHS['ila_vit_tiny'](3, head='text', class_names=[])


def test_train_options_need_class_names(tiny_toy, tmp_path, capsys):
    from opts import parse_args
    base = ['toy', 'RGB', '--data_root', tiny_toy, '--arch', 'ila_vit_tiny', '--ila_head', 'text']
    args = parse_args(base)
    assert args.ila_class_names[:2] == ['moving_right', 'moving_left']
    assert parse_args(['toy', 'RGB', '--data_root', tiny_toy, '--arch', 'ila_vit_tiny']).ila_class_names is None
    with pytest.raises(SystemExit):
        parse_args(base + ['--num_class', '8'])
    assert "--ila_head text encodes the class names" in capsys.readouterr().err
    names = tmp_path / 'names.txt'
    names.write_text('a\nb\n\nc\n')
    with pytest.raises(SystemExit):
        parse_args(base + ['--category_file', str(names)])
    assert 'names.txt:3: empty class name' in capsys.readouterr().err


@pytest.mark.slow
def test_toy_text_head_trains_evaluates_predicts_other_names_and_exports(tiny_toy, run_cli, tmp_path):
    """Smoke test of the whole path on a random-weight tiny CLIP (no accuracy expected)."""
    run_cli(["main.py", "toy", "RGB", "--data_root", tiny_toy, "--root_model", str(tmp_path / "ckpt"),
             "--root_log", str(tmp_path / "log"), "--arch", "ila_vit_tiny", "--ila_head", "text",
             "--num_segments", "3", "--input_size", "32", "--batch-size", "8", "-j", "0", "--no_progress",
             "--epochs", "1", "--max_steps_per_epoch", "2", "--amp", "off", "--no-channels_last"], cwd=tmp_path)
    (d,) = list((tmp_path / "ckpt").iterdir())
    weights = str(d / "ckpt.best.pth.tar")
    val = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if '"val"' in line]
    run_cli(["test_models.py", "toy", "--weights", weights, "--data_root", tiny_toy, "--no_progress", "-j", "0",
             "--output_dir", str(tmp_path / "ev")], cwd=tmp_path)
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["top1"] == pytest.approx(val[-1]["top1"], abs=1e-6)   # same model rebuilt
    video = sorted((tmp_path.parent / tiny_toy).glob("toy/videos/*.mp4"))[0]
    run_cli(["predict.py", "--weights", weights, str(video), "--class_names", "open door,close door,jump",
             "--top_k", "3", "-j", "0", "--no_progress", "--output", str(tmp_path / "p.json")], cwd=tmp_path)
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["class_names_from"] == "--class_names"
    assert sorted(t["name"] for t in report["videos"][0]["top"]) == ["close door", "jump", "open door"]
    out = run_cli(["scripts/export.py", "--weights", weights, "--format", "onnx", "--output", str(tmp_path / "m.onnx"),
                   "--class_names", "open door,close door", "--max_clips", "2", "--check", str(video)],
                  cwd=tmp_path).stdout
    assert "-> OK" in out
    import onnx
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(meta["class_names"]) == ["open door", "close door"]
