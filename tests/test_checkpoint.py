"""Checkpoint save/load, the weight loader and TSM key compatibility."""
import argparse
import os
import random
import re
from pathlib import Path

import pytest
import torch

from ops.checkpoint import (config_from_tsm_filename, load_checkpoint, load_weights, model_config_from_checkpoint,
                            save_checkpoint)
from ops.distill import load_teachers
from ops.models import TSN
from ops.temporal_modules import TemporalConfig

GOLDEN = Path(__file__).parent / 'golden'
T = 2
H = 32


def _make(modality='RGB', num_class=5, **kw):
    kw.setdefault('base_model', 'resnet18')
    kw.setdefault('pretrain', 'none')
    return TSN(num_class, T, modality, **kw)


def _x(model, seed=0):
    torch.manual_seed(seed)
    return torch.rand(2, model.input_channels, H, H)


def _golden(name):
    lines = [ln.split(' ') for ln in (GOLDEN / name).read_text().splitlines() if not ln.startswith('#')]
    return [(k, s) for k, s in lines]


def _keys_with_shapes(model):
    return [(f'module.{k}', ','.join(map(str, v.shape)) or '()') for k, v in model.state_dict().items()]


@pytest.mark.parametrize('arch, golden', [('resnet50', 'tsm_resnet50_blockres_174.txt'),
                                          ('resnet101', 'tsm_resnet101_blockres_174.txt')])
def test_golden_keys(arch, golden):
    model = TSN(174, 8, 'RGB', base_model=arch, pretrain='none',
                temporal=TemporalConfig('tsm', shift_div=8, shift_place='blockres'))
    assert _keys_with_shapes(model) == _golden(golden)


def test_golden_keys_of_swin3d_t():
    with torch.device('meta'):                      # keys and shapes only
        model = TSN(174, 8, 'RGB', base_model='swin3d_t', pretrain='none')
    assert _keys_with_shapes(model) == _golden('swin3d_t_174.txt')


def test_ila_config_of_earlier_versions_still_loads(tmp_path, caplog):
    """Before backbone_kwargs, ILA's options were top-level TSN keywords of the saved config."""
    caplog.set_level('ERROR', logger='archs.ila')
    model = _make(base_model='ila_vit_tiny', input_size=H, dropout=0.5,
                  backbone_kwargs=dict(pair_net='ssv2')).eval()
    old = {k: v for k, v in model.config().items() if k != 'backbone_kwargs'}
    old.update(clip_weights=str(tmp_path / 'gone' / 'clip.pt'), trust_jit_checkpoint=False,
               finetune_backbone=True, ila_pair_net='ssv2')
    path = tmp_path / 'ila.pth.tar'
    save_checkpoint({'epoch': 1, 'arch': 'ila_vit_tiny', 'state_dict': model.state_dict(), 'config': old}, path)
    cfg = model_config_from_checkpoint(load_checkpoint(path))
    # The CLIP file is not read again (the weights are in the state dict); the rest moved into backbone_kwargs.
    assert cfg['backbone_kwargs'] == dict(trust_jit_checkpoint=False, finetune_backbone=True, pair_net='ssv2')
    assert not {'clip_weights', 'trust_jit_checkpoint', 'finetune_backbone', 'ila_pair_net'} & set(cfg)
    rebuilt = TSN.from_config(cfg).eval()
    load_weights(rebuilt, load_checkpoint(path)['state_dict'], strict=True)
    x = _x(model)
    assert torch.equal(rebuilt(x), model(x))
    (teacher,) = load_teachers([str(path)]).teachers       # distillation builds it the same way
    assert torch.allclose(teacher.eval()(x), model(x), atol=1e-6)


def test_save_load_round_trip_identical_outputs(tmp_path):
    model = _make(temporal=TemporalConfig('tsm', non_local=True)).eval()
    with torch.no_grad():  # make the NL blocks non-trivial so they are really tested
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.weight.fill_(0.5)
    opt = torch.optim.SGD(model.get_optim_policies(), lr=0.1, momentum=0.9)
    model(_x(model)).sum().backward()
    opt.step()
    path = tmp_path / 'run' / 'ckpt.pth.tar'
    save_checkpoint({'epoch': 3, 'arch': 'resnet18', 'state_dict': model.state_dict(),
                     'optimizer': opt.state_dict(), 'best_prec1': 12.5, 'config': model.config()}, path)
    assert os.listdir(path.parent) == ['ckpt.pth.tar']  # no temp file left behind
    ckpt = load_checkpoint(path)
    assert set(ckpt) == {'epoch', 'arch', 'state_dict', 'optimizer', 'best_prec1', 'config'}
    rebuilt = TSN.from_config(model_config_from_checkpoint(ckpt)).eval()
    report = load_weights(rebuilt, ckpt['state_dict'])
    assert report['missing'] == [] and report['unexpected'] == []
    x = _x(model, seed=1)
    assert torch.equal(rebuilt(x), model(x))
    save_checkpoint({'epoch': 4}, path)  # overwrite in place
    assert load_checkpoint(path) == {'epoch': 4}


class _Payload:
    pass


@pytest.mark.parametrize('obj', [_Payload(), argparse.Namespace(lr=0.1)])
def test_pickled_object_checkpoint_is_refused(tmp_path, obj):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'args': obj}, path)
    with pytest.raises(ValueError, match='refusing to load .*evil.pth'):
        load_checkpoint(path)
    with pytest.raises(TypeError, match='Namespace|_Payload'):
        save_checkpoint({'args': obj}, tmp_path / 'out.pth')
    assert not (tmp_path / 'out.pth').exists()


def test_missing_and_corrupt_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match='absent.pth'):
        load_checkpoint(tmp_path / 'absent.pth')
    bad = tmp_path / 'garbage.pth'
    bad.write_bytes(b'not a checkpoint at all')
    with pytest.raises((RuntimeError, ValueError), match='garbage.pth'):
        load_checkpoint(bad)


def _assert_same_weights(src_model, dst_model):
    from ops.checkpoint import canonical_key
    src = {canonical_key(k): v for k, v in src_model.state_dict().items()}
    for k, v in dst_model.state_dict().items():
        if '.nl.' not in k:
            assert torch.equal(v, src[canonical_key(k)]), k


@pytest.mark.parametrize('src_kw, dst_kw', [
    ({}, dict(module='tsm')),                                    # TSN -> TSM blockres
    (dict(module='tsm'), {}),                                    # TSM -> TSN
    (dict(module='tsm'), dict(module='tsm', shift_place='block')),
    (dict(module='tsm', shift_place='block'), dict(module='tsm', temporal_pool=True)),
])
def test_tsn_and_tsm_checkpoints_load_into_each_other(src_kw, dst_kw):
    src = _make(temporal=TemporalConfig(**src_kw))
    dst = _make(temporal=TemporalConfig(**dst_kw))
    sd = {f'module.{k}': v for k, v in src.state_dict().items()}  # DataParallel prefix as in TSM files
    report = load_weights(dst, sd)
    assert report['unexpected'] == [] and report['missing'] == []
    _assert_same_weights(src, dst)


def test_non_local_modules_need_explicit_permission():
    src, dst = _make(temporal=TemporalConfig('tsm')), _make(temporal=TemporalConfig('tsm', non_local=True))
    with pytest.raises(RuntimeError, match='nl'):
        load_weights(dst, src.state_dict())
    report = load_weights(dst, src.state_dict(), allow_new_modules=True)
    assert any('.nl.' in k for k in report['kept_init'])
    _assert_same_weights(src, dst)


def test_first_conv_converted_between_modalities():
    rgb = _make('RGB')
    flow = _make('Flow')
    report = load_weights(flow, rgb.state_dict())
    w = rgb.state_dict()['base_model.conv1.weight']
    assert torch.equal(flow.base_model.conv1.weight, w.mean(1, keepdim=True).expand(64, 10, 7, 7))
    assert report['first_conv']['from_modality'] == 'RGB' and report['first_conv']['to_shape'] == (64, 10, 7, 7)
    diff = _make('RGBDiff')
    report = load_weights(diff, flow.state_dict())  # Flow (10 ch) -> RGBDiff (15 ch)
    assert report['first_conv']['from_modality'] == 'Flow'
    # mean of 10 equal floats: equal up to rounding
    assert torch.allclose(diff.base_model.conv1.weight, w.mean(1, keepdim=True).expand(64, 15, 7, 7), atol=1e-7)
    # same channel count, different modality: converted only when the source modality is known
    diff1 = _make('RGBDiff', new_length=1)
    report = load_weights(diff1, rgb.state_dict(), src_modality='RGB')
    assert torch.equal(diff1.base_model.conv1.weight, w.mean(1, keepdim=True).expand(64, 3, 7, 7))


def test_head_dropped_or_renamed():
    src = _make(num_class=7)
    dst = _make(num_class=5)
    init = dst.new_fc.weight.clone()
    report = load_weights(dst, src.state_dict())
    assert report['head'].startswith('dropped') and torch.equal(dst.new_fc.weight, init)
    no_dropout = _make(num_class=7, dropout=0.0)
    report = load_weights(no_dropout, src.state_dict())
    assert report['head'] == 'renamed new_fc -> base_model.fc'
    assert torch.equal(no_dropout.base_model.fc.weight, src.new_fc.weight)


def test_missing_keys_raise_and_unexpected_are_reported():
    src = _make().state_dict()
    src.pop('base_model.layer2.0.conv2.weight')
    with pytest.raises(RuntimeError, match='layer2.0.conv2.weight'):
        load_weights(_make(), src)
    src = _make().state_dict()
    src['base_model.extra.weight'] = torch.zeros(1)
    src = {k: v for k, v in src.items() if not k.endswith('num_batches_tracked')}  # pre-0.4.1 file
    report = load_weights(_make(), src)
    assert report['unexpected'] == ['base_model.extra.weight']
    assert all(k.endswith('num_batches_tracked') for k in report['kept_init'])


def test_config_from_tsm_filenames():
    cfg = config_from_tsm_filename('/ckpts/TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth')
    assert cfg == {'modality': 'RGB', 'base_model': 'resnet50', 'consensus_type': 'avg', 'num_segments': 8,
                   'is_shift': True, 'temporal_pool': False, 'non_local': False, 'shift_div': 8,
                   'shift_place': 'blockres'}
    tsn = config_from_tsm_filename('TSM_kinetics_RGB_resnet50_avg_segment5_e50.pth')
    assert tsn['is_shift'] is False and tsn['num_segments'] == 5
    nl = config_from_tsm_filename('TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e100_dense_nl.pth')
    assert nl['non_local'] is True
    tp = config_from_tsm_filename('TSM_something_Flow_resnet101_shift4_block_tpool_avg_segment16_e45.pth')
    assert (tp['modality'], tp['shift_div'], tp['shift_place'], tp['temporal_pool']) == ('Flow', 4, 'block', True)
    with pytest.raises(ValueError, match='does not follow'):
        config_from_tsm_filename('my_model.pth')


def test_released_style_state_dict_rebuilds_from_keys_and_name(tmp_path):
    src = TSN(174, 8, 'Flow', base_model='resnet18', pretrain='none', temporal=TemporalConfig('tsm', shift_div=4))
    path = tmp_path / 'TSM_somethingv2_Flow_resnet18_shift4_blockres_avg_segment8_e45.pth'
    torch.save({f'module.{k}': v for k, v in src.state_dict().items()}, path)  # state dict only, no config
    ckpt = load_checkpoint(path)
    cfg = model_config_from_checkpoint(ckpt, path=path)
    assert (cfg['base_model'], cfg['num_class'], cfg['modality'], cfg['new_length']) == ('resnet18', 174, 'Flow', 5)
    assert (cfg['is_shift'], cfg['shift_div'], cfg['num_segments'], cfg['pretrain']) == (True, 4, 8, 'none')
    model = TSN.from_config(cfg)
    load_weights(model, ckpt)
    _assert_same_weights(src, model)
    override = model_config_from_checkpoint(ckpt, path=path, num_segments=16, arch='resnet18', shift_div=None)
    assert override['num_segments'] == 16 and override['shift_div'] == 4
    with pytest.raises(ValueError, match='num_segments'):
        model_config_from_checkpoint(ckpt, path=tmp_path / 'renamed.pth')
    assert model_config_from_checkpoint(ckpt, path=tmp_path / 'renamed.pth', num_segments=8)['num_class'] == 174


def test_non_strict_load_keeps_missing_at_init():
    src = _make().state_dict()
    src.pop('base_model.layer2.0.conv2.weight')
    dst = _make()
    report = load_weights(dst, src, strict=False)
    assert report['changed'] and report['kept_init'] == ['base_model.layer2.0.conv2.weight']
    assert load_weights(_make(), _make().state_dict())['changed'] is False


def test_every_unreadable_checkpoint_names_the_file_and_the_problem(tmp_path):
    from ops.checkpoint import load_checkpoint
    noise = tmp_path / 'noise.pth'
    noise.write_bytes(random.Random(0).randbytes(4096))   # fixed bytes: the outcome must not vary by run
    with pytest.raises(ValueError, match=r'noise\.pth is not a PyTorch checkpoint \(.*4096 bytes\)'):
        load_checkpoint(noise)
    with pytest.raises(IsADirectoryError, match=r'is a directory, not a checkpoint file'):
        load_checkpoint(tmp_path)
    good = tmp_path / 'good.pth'
    save_checkpoint({'epoch': 1, 'state_dict': {'w': torch.zeros(1000)}}, good)
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(good.read_bytes()[:600])
    with pytest.raises(RuntimeError, match=r'could not read checkpoint .*cut\.pth \(truncated or corrupt\?\)'):
        load_checkpoint(cut)
    bare = tmp_path / 'bare.pth'
    save_checkpoint({'epoch': 1, 'weights': {}}, bare)
    with pytest.raises(ValueError, match=r"bare\.pth has no 'state_dict' entry \(top-level keys: \['epoch', "
                                         r"'weights'\]\)"):
        load_checkpoint(bare, require=('state_dict',))



class _RunsCode:
    """Pickles as a call of os.system: what a malicious checkpoint carries."""

    def __reduce__(self):
        return (os.system, ('echo this must never run',))


def test_empty_and_code_carrying_checkpoints_are_named_with_the_reason(tmp_path):
    from ops.checkpoint import read_state_dict
    from ops.online import load_uni_model
    empty = tmp_path / 'empty.pth.tar'
    empty.write_bytes(b'')
    # Every loader goes through load_checkpoint: the file is named and said to be empty (it used to be a
    # bare IndexError from the first line of EOFError's empty text).
    for load in (load_checkpoint, read_state_dict, load_uni_model):
        with pytest.raises(ValueError, match=r'empty\.pth\.tar is empty \(0 bytes\)'):
            load(str(empty))
    # Pickled code and objects: the refused globals are named (found by reading the opcodes, not running
    # them), for torch's zip format, its legacy format and a bare pickle.
    zipped, legacy, bare = tmp_path / 'zip.pth', tmp_path / 'legacy.pth', tmp_path / 'bare.pkl'
    payload = {'state_dict': {'w': torch.zeros(2)}, 'hook': _RunsCode(), 'args': argparse.Namespace(lr=1)}
    torch.save(payload, zipped)
    torch.save(payload, legacy, _use_new_zipfile_serialization=False)
    import pickle
    bare.write_bytes(pickle.dumps({'hook': _RunsCode(), 'args': argparse.Namespace(lr=1)}, protocol=4))
    for path in (zipped, legacy, bare):
        with pytest.raises(ValueError, match=rf'refusing to load .*{path.name}: it contains pickled Python objects '
                                             r'that weights_only loading does not allow: argparse\.Namespace, '
                                             r'(posix|nt)\.system \(nothing was executed\)'):
            load_checkpoint(str(path))
    # Legacy files of tensors and plain types still load; random bytes are still "not a checkpoint".
    plain = tmp_path / 'plain_legacy.pth'
    torch.save({'state_dict': {'w': torch.ones(2)}}, plain, _use_new_zipfile_serialization=False)
    assert torch.equal(load_checkpoint(str(plain))['state_dict']['w'], torch.ones(2))


def test_resume_from_an_empty_checkpoint_names_it(tmp_path):
    from ops.resume import checkpoint_position, restore
    empty = tmp_path / 'ckpt.pth.tar'
    empty.write_bytes(b'')
    # restore() is what --resume PATH runs; checkpoint_position() what --resume auto reads each file with.
    for call in (lambda: restore(None, str(empty), None), lambda: checkpoint_position(str(empty))):
        with pytest.raises(SystemExit, match=rf'checkpoint {re.escape(str(empty))} is empty \(0 bytes\)'):
            call()


_WRITE_FOREVER = """
import sys, torch
from ops.checkpoint import save_checkpoint
state = {'state_dict': {'w': torch.zeros(8_000_000)}}   # 32 MB: a kill lands inside a write
print('writing', flush=True)
while True:
    save_checkpoint(state, sys.argv[1])
"""


@pytest.mark.slow
def test_kills_during_checkpoint_writes_leave_a_loadable_file_and_removable_temps(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from ops.checkpoint import remove_stale_temp_files
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = tmp_path / 'write.py'
    script.write_text(_WRITE_FOREVER)
    run = tmp_path / 'run'
    run.mkdir()
    target = run / 'ckpt.pth.tar'
    env = dict(os.environ, PYTHONPATH=repo, OMP_NUM_THREADS='1')
    for attempt in range(4):
        proc = subprocess.Popen([sys.executable, str(script), str(target)], env=env, stdout=subprocess.PIPE,
                                text=True)
        proc.stdout.readline()
        deadline = time.time() + 30
        while not target.exists() and time.time() < deadline:   # at least one complete file
            time.sleep(0.05)
        time.sleep(0.3 + 0.2 * attempt)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if any(name.endswith('.tmp') for name in os.listdir(run)):
            break
    (run / 'other.txt').write_text('kept')
    temps = [name for name in os.listdir(run) if name.endswith('.tmp')]
    assert temps, 'no kill landed inside a write'
    assert torch.equal(load_checkpoint(target)['state_dict']['w'], torch.zeros(8_000_000))
    removed = remove_stale_temp_files(str(run))
    assert sorted(os.path.basename(p) for p in removed) == sorted(temps)
    assert sorted(os.listdir(run)) == ['ckpt.pth.tar', 'other.txt']


def test_keep_previous_rotates_atomically(tmp_path):
    from ops.checkpoint import save_checkpoint_keep_previous
    cur, prev = tmp_path / 'ckpt.pth.tar', tmp_path / 'ckpt.prev.pth.tar'
    save_checkpoint_keep_previous({'epoch': 1}, str(cur), str(prev))
    assert load_checkpoint(cur) == {'epoch': 1} and not prev.exists()
    save_checkpoint_keep_previous({'epoch': 2}, str(cur), str(prev))
    assert load_checkpoint(cur) == {'epoch': 2} and load_checkpoint(prev) == {'epoch': 1}
    assert sorted(os.listdir(tmp_path)) == ['ckpt.prev.pth.tar', 'ckpt.pth.tar']


def test_a_full_disk_names_the_checkpoint_and_keeps_the_previous_one(tmp_path):
    import subprocess
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("mounting a 1 MB tmpfs needs root")
    try:
        path = str(mnt / "ckpt.pth.tar")
        save_checkpoint({"epoch": 1, "state_dict": {"w": torch.zeros(1000)}}, path)           # 4 kB: fits
        with pytest.raises(OSError, match="cannot write checkpoint " + re.escape(path) + ".*unchanged"):
            save_checkpoint({"epoch": 2, "state_dict": {"w": torch.zeros(1_000_000)}}, path)  # 4 MB: does not
        assert load_checkpoint(path)["epoch"] == 1
        assert os.listdir(mnt) == ["ckpt.pth.tar"]                                            # no temp left
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
