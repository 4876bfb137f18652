"""main.py end to end on the generated toy dataset: real files, real processes, real checkpoints."""
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from ops.checkpoint import load_checkpoint
from ops.dataset import parse_list
from ops.sampler import ShardSampler
from opts import parse_args

TINY = ["--arch", "resnet18", "--num_segments", "4", "--input_size", "32", "--batch-size", "8", "-j", "0",
        "--no_progress", "--seed", "3"]


def train_argv(data_root, tmp, *extra, modality="RGB"):
    return ["main.py", "toy", modality, "--data_root", data_root, "--root_model", str(tmp / "ckpt"),
            "--root_log", str(tmp / "log"), *TINY, *extra]


def run_dir(tmp, name_part="TSM_toy_RGB"):
    (d,) = [p for p in (tmp / "ckpt").iterdir() if p.name.startswith(name_part)]
    return d


@pytest.mark.parametrize("script", ["main.py", "test_models.py", "scripts/ensemble_scores.py",
                                    "scripts/show_sampling.py", "scripts/check_data.py", "scripts/model_info.py",
                                    "scripts/adversarial.py", "scripts/extract_audio.py"])
def test_help_of_every_entry_point(script, run_cli, tmp_path):
    out = run_cli([script, "--help"], cwd=tmp_path).stdout
    assert "usage:" in out
    if script == "main.py":
        for opt in ("--shift_div", "--lr_steps", "--npb", "--amp", "--resume", "--mutual_weight", "--dist_timeout"):
            assert opt in out


@pytest.mark.parametrize("extra,message", [
    (["--shift", "--temporal_pool", "--num_segments", "1"], "--temporal_pool"),
    (["--shift", "--arch", "BNInception"], "insertion rule"),
    (["--amp", "fp16", "--device", "cpu"], "fp16"),
    (["--sync_bn", "--device", "cpu"], "sync_bn"),
    (["--dense_sample", "--random_sample"], "exclusive"),
    (["--resume", "x.pth", "--tune_from", "y.pth"], "exclusive"),
    (["--lr_type", "step", "--lr_steps", "5", "2"], "increasing"),
    (["--min_lr_ratio", "1"], "--min_lr_ratio"),
    (["--warmup_start_ratio", "-0.1"], "--warmup_start_ratio"),
    (["--world_size", "2"], "--rank"),
    (["-ef", "0"], "--eval-freq must be >= 1"),
    (["--twice_sample", "--dense_sample"], "--twice_sample adds a shifted uniform clip"),
    (["--shift", "--arch", "mobilenetv2", "--shift_place", "block"], "insertion rule"),
    (["--shift", "--arch", "ila_vit_tiny"], "it models time itself"),
    (["--shift", "--temporal_pool", "--arch", "mobilenetv2"], "--temporal_pool is defined for ResNets"),
    (["--temporal_module", "msn", "--arch", "resnet152"], "its temporal modules: tsm, tin"),
    (["--teacher_weight_temperature", "0"], "--teacher_weight_temperature"),
    (["--allow_missing_audio", "--teacher_scores", "s.npz"], "--allow_missing_audio drops videos"),
])
def test_bad_argument_combinations_are_rejected(extra, message, tiny_toy, tmp_path, capsys):
    # In-process: parse_args is where main.py validates (the --help test above runs the real entry point).
    with pytest.raises(SystemExit) as exc:
        parse_args(train_argv(tiny_toy, tmp_path, *extra)[1:])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_arch_is_a_parser_error_before_any_run_directory(tiny_toy, tmp_path, capsys):
    # In-process as above: main.py runs main(parse_args()), so a parser error leaves before main() starts.
    with pytest.raises(SystemExit) as exc:
        parse_args(train_argv(tiny_toy, tmp_path, "--arch", "resnet5")[1:])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "invalid choice: 'resnet5'" in err and "ila_vit_b16" in err
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "log").exists()


def test_backbone_traits_decide_shift_and_recipe(tiny_toy, tmp_path):
    args = parse_args(train_argv(tiny_toy, tmp_path, "--shift", "--shift_place", "block", "--arch", "BNInception")[1:])
    assert args.temporal_module == "tsm"          # BNInception has a 'block' shift rule (README: online TSM)
    ila = parse_args(train_argv(tiny_toy, tmp_path, "--arch", "ila_vit_tiny")[1:])
    # The ILA recipe beats the toy registry's pretrain / partial BN / optimiser, not its weight decay.
    assert (ila.pretrain, ila.no_partialbn, ila.optimizer, ila.weight_decay) == ("none", True, "adamw", 1e-4)
    # A backbone's own resolution wins over a dataset's generic 224 crop (L/14@336 trains at 336, not at a
    # silently resized 224), but not over a dataset's other crop (the toy set's 64) or --input_size.
    custom = ["kinetics", "RGB", "--root_path", "r", "--train_list", "t", "--val_list", "v", "--num_class", "5",
              "--ila_head", "linear"]   # Kinetics' ILA default, the text head, needs class names
    sizes = {arch: parse_args(custom + ["--arch", arch]).input_size
             for arch in ("ila_vit_l14_336", "ila_vit_b16", "ila_vit_tiny", "resnet50")}
    assert sizes == {"ila_vit_l14_336": 336, "ila_vit_b16": 224, "ila_vit_tiny": 32, "resnet50": 224}
    assert parse_args(["toy", "RGB", "--arch", "ila_vit_l14_336", "--data_root", tiny_toy]).input_size == 64
    assert parse_args(custom + ["--arch", "ila_vit_l14_336", "--input_size", "224"]).input_size == 224


def test_unknown_modality_and_multi_modality_without_launcher(tiny_toy, tmp_path, capsys):
    for modality, message in (("Depth", "modality"), ("RGB,Flow", "one process per modality")):
        with pytest.raises(SystemExit) as exc:
            parse_args(train_argv(tiny_toy, tmp_path, modality=modality)[1:])
        assert exc.value.code == 2 and message in capsys.readouterr().err


def test_parsing_the_toy_quickstart_writes_nothing(tmp_path, monkeypatch):
    # The toy set is generated when the run starts (main.run), never while parsing: the registry knows its
    # classes and training defaults without its files.
    monkeypatch.chdir(tmp_path)
    args = parse_args(["toy", "RGB", "--shift"])                     # default --data_root data
    assert (args.arch, args.epochs, args.optimizer, args.input_size) == ("resnet18", 3, "adamw", 64)
    assert os.listdir(tmp_path) == []
    (tmp_path / "empty").mkdir()
    assert parse_args(["toy", "RGB", "--data_root", str(tmp_path / "empty")]).num_segments == 8
    assert os.listdir(tmp_path) == ["empty"] and os.listdir(tmp_path / "empty") == []


# `python main.py ARGS` with a smaller default toy set, generated in this process.
SMALL_TOY_MAIN = ("import runpy, sys; import ops.toy as t; "
                  "t.TOY_DEFAULTS.update(num_train=8, num_val=8, num_frames=6, size=16); "
                  "t._default_workers = lambda: 1; sys.argv[0] = sys.argv[1]; del sys.argv[1]; "
                  "runpy.run_path(sys.argv[0], run_name='__main__')")


@pytest.mark.slow
def test_the_run_generates_the_toy_set_in_an_empty_data_root(tmp_path):
    argv = train_argv("data", tmp_path, "--shift", "--epochs", "1", "--batch-size", "4")
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", SMALL_TOY_MAIN, os.path.join(REPO, "main.py"), *argv[1:]],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((tmp_path / "data" / "toy" / "toy_meta.json").read_text())
    assert (meta["num_train"], meta["size"]) == (8, 16)
    assert load_checkpoint(str(run_dir(tmp_path) / "ckpt.pth.tar"))["epoch"] == 1


@pytest.mark.slow
def test_tiny_training_run_writes_checkpoints_logs_and_tensorboard(tiny_toy, run_cli, tmp_path):
    run_cli(train_argv(tiny_toy, tmp_path, "--shift", "--epochs", "2"), cwd=tmp_path)
    d = run_dir(tmp_path)
    for f in ("ckpt.pth.tar", "ckpt.best.pth.tar", "args.json", "log.txt", "metrics.jsonl"):
        assert (d / f).is_file(), f
    ckpt = load_checkpoint(str(d / "ckpt.pth.tar"))
    assert ckpt["epoch"] == 2 and ckpt["arch"] == "resnet18"
    assert ckpt["config"]["is_shift"] and ckpt["config"]["num_segments"] == 4
    assert any(k.endswith("layer1.0.conv1.net.weight") for k in ckpt["state_dict"])
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["split"]) for r in rows] == [(1, "train"), (1, "val"), (2, "train"), (2, "val")]
    assert rows[-1]["top1_best"] == max(r["top1"] for r in rows if r["split"] == "val")
    args = json.loads((d / "args.json").read_text())
    assert args["lr"] == 2e-3 and args["optimizer"] == "adamw"      # the toy registry defaults
    events = [f for f in (tmp_path / "log" / d.name).iterdir() if f.name.startswith("events.")]
    assert events
    from tensorboardX.proto import event_pb2
    import struct
    tags = set()
    data = events[0].read_bytes()
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        ev = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
        tags |= {v.tag for v in ev.summary.value}
        pos += 12 + length + 4
    assert {"loss/train", "acc/train_top1", "acc/test_top1", "acc/test_top1_best", "lr"} <= tags


def _state(path):
    return load_checkpoint(path)["state_dict"]


def _toy_with_unreadable_first_video(tiny_toy, tmp_path):
    """A copy of the toy data whose first training video of epoch 0 (seed 3, batch 8) has only truncated
    JPEGs: it is replaced and counted as a read failure in the first step."""
    data = tmp_path / "data"
    shutil.copytree(tiny_toy, data)
    records = parse_list(str(data / "toy" / "train_rgb.txt"), "frames")
    sampler = ShardSampler(len(records), num_replicas=1, rank=0, batch_size=8, shuffle=True, drop_last=True, seed=3)
    sampler.set_epoch(0)
    video = data / "toy" / "frames" / records[next(iter(sampler))].path
    for jpeg in video.iterdir():
        jpeg.write_bytes(jpeg.read_bytes()[:100])
    return str(data)


@pytest.mark.slow
def test_sigterm_checkpoint_and_resume_equal_uninterrupted(tiny_toy, run_cli, tmp_path):
    tiny_toy = _toy_with_unreadable_first_video(tiny_toy, tmp_path)
    straight = tmp_path / "straight"
    run_cli(train_argv(tiny_toy, straight, "--shift", "--epochs", "2", "--eval-freq", "5"), cwd=tmp_path)
    ref = _state(str(run_dir(straight) / "ckpt.pth.tar"))

    cut = tmp_path / "cut"
    argv = train_argv(tiny_toy, cut, "--shift", "--epochs", "2", "--eval-freq", "5")
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, argv[0]), *argv[1:]], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:           # signal as soon as training starts: it stops at a step boundary
        seen.append(line)
        if "INFO main: run " in line:
            proc.send_signal(signal.SIGTERM)
            break
    out = "".join(seen) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 75, out
    mid = load_checkpoint(str(run_dir(cut) / "ckpt.pth.tar"))
    assert mid["step_in_epoch"] >= 1 or mid["epoch"] >= 1, out
    assert mid["epoch"] < 2, "the signal came after the run had finished"
    run_cli(argv + ["--resume", "auto"], cwd=tmp_path)
    final = _state(str(run_dir(cut) / "ckpt.pth.tar"))
    assert final.keys() == ref.keys()
    for k in ref:
        assert torch.equal(ref[k], final[k]), k
    # the resumed epoch reports its whole-epoch means (running meters in the checkpoint) and read failures
    # (the one before the signal included), once
    rows = {name: [json.loads(line) for line in (run_dir(d) / "metrics.jsonl").read_text().splitlines()]
            for name, d in (("straight", straight), ("cut", cut))}
    assert [(r["epoch"], r["split"]) for r in rows["cut"]] == [(r["epoch"], r["split"]) for r in rows["straight"]]
    for a, b in zip(rows["straight"], rows["cut"]):
        for key in ("loss", "top1", "ce"):
            if key in a:
                assert a[key] == pytest.approx(b[key], abs=1e-6), (key, a, b)
        assert (a.get("read_failures"), a.get("failed_videos")) == (b.get("read_failures"), b.get("failed_videos"))
    assert rows["cut"][0]["read_failures"] >= 1


@pytest.mark.slow
def test_nan_loss_stops_with_step_and_lr(tiny_toy, run_cli, tmp_path):
    proc = run_cli(train_argv(tiny_toy, tmp_path, "--lr", "1e30", "--optimizer", "sgd", "--gd", "0",
                              "--epochs", "2"), cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "non-finite loss" in proc.stderr and "lr" in proc.stderr and "step" in proc.stderr


@pytest.mark.slow
def test_tiny_ila_trains_through_main_and_evaluates_through_test_models(tiny_toy, run_cli, tmp_path):
    run_cli(["main.py", "toy", "RGB", "--data_root", tiny_toy, "--root_model", str(tmp_path / "ckpt"),
             "--root_log", str(tmp_path / "log"), "--arch", "ila_vit_tiny", "--num_segments", "4",
             "--input_size", "32", "--batch-size", "8", "-j", "0", "--no_progress", "--epochs", "1",
             "--max_steps_per_epoch", "2", "--lr", "4e-5", "--align_weight", "0.5"], cwd=tmp_path)
    (d,) = list((tmp_path / "ckpt").iterdir())
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert "align" in rows[0]                                   # the alignment loss was trained and logged
    out = run_cli(["test_models.py", "toy", "--weights", str(d / "ckpt.best.pth.tar"), "--data_root", tiny_toy,
                   "--test_crops", "3", "--random_clips", "2", "--no_progress", "-j", "0",
                   "--save_scores", str(tmp_path / "s.npz")], cwd=tmp_path).stdout
    assert "4 frames x 3 crops x 2 clips (random2)" in out
    import numpy as np
    with np.load(tmp_path / "s.npz") as z:
        assert z["scores"].shape == (16, 6, 8)


@pytest.mark.slow
@pytest.mark.parametrize("module", ["tin", "msn", "tdn"])
def test_tin_msn_tdn_train_through_main_and_evaluation_rebuilds_them(module, tiny_toy, run_cli, tmp_path):
    # fp32 both ways, so the evaluation CLI must reproduce the training validation exactly: that needs the
    # checkpoint config to rebuild the same module (and, for MSN, the same 5 frames per segment).
    tin_shift_div = 2 if module == "tin" else 4      # TIN: not the default, so evaluation must read it back
    run_cli(train_argv(tiny_toy, tmp_path, "--temporal_module", module, "--epochs", "1", "--tin_shift_div",
                       str(tin_shift_div), "--max_steps_per_epoch", "2", "--amp", "off", "--no-channels_last"),
            cwd=tmp_path)
    d = run_dir(tmp_path)
    assert f"_{module}_" in d.name
    ckpt = load_checkpoint(str(d / "ckpt.best.pth.tar"))
    assert (ckpt["config"]["temporal_module"], ckpt["config"]["tin_shift_div"]) == (module, tin_shift_div)
    val = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if '"val"' in line]
    run_cli(["test_models.py", "toy", "--weights", str(d / "ckpt.best.pth.tar"), "--data_root", tiny_toy,
             "--no_progress", "-j", "0", "--output_dir", str(tmp_path / "ev")], cwd=tmp_path)
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["protocol"][0].startswith("4 frames x 1 crop x 1 clip (uniform)")
    assert summary["top1"] == pytest.approx(val[-1]["top1"], abs=1e-6)


def _start_in_own_group(argv, cwd):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, os.path.join(REPO, argv[0]), *argv[1:]], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


@pytest.mark.slow
def test_sigterm_to_the_process_group_with_loader_workers_checkpoints_and_exits_75(tiny_toy, run_cli, tmp_path):
    # How a terminal, scancel and SLURM pre-emption signal a job: every process of the group, workers too.
    argv = train_argv(tiny_toy, tmp_path, "--epochs", "2", "--eval-freq", "5", "-j", "2")
    proc = _start_in_own_group(argv, tmp_path)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "INFO main: run " in line:
            os.killpg(proc.pid, signal.SIGTERM)
            break
    out = "".join(seen) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 75, out[-4000:]
    assert "signal SIGTERM: checkpoint written" in out and "exited unexpectedly" not in out
    mid = load_checkpoint(str(run_dir(tmp_path) / "ckpt.pth.tar"))
    assert mid["epoch"] < 2 and (mid["step_in_epoch"] >= 1 or mid["epoch"] >= 1)
    run_cli(argv + ["--resume", "auto"], cwd=tmp_path)
    assert load_checkpoint(str(run_dir(tmp_path) / "ckpt.pth.tar"))["epoch"] == 2


def _truncate_frames(folder):
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        with open(path, "rb") as f:
            head = f.read(120)
        with open(path, "wb") as f:
            f.write(head)


@pytest.mark.slow
def test_read_failures_lose_no_epoch_and_are_reported(tiny_toy, run_cli, tmp_path):
    import shutil
    data = tmp_path / "data"
    shutil.copytree(tiny_toy, data)
    frames = data / "toy" / "frames"
    for vid in ("000001", "000002", "000003", "000004"):            # training videos: replaced, reported
        _truncate_frames(frames / vid)
    _truncate_frames(frames / "000040")                             # a validation video
    argv = train_argv(str(data), tmp_path, "--epochs", "2", "--max_steps_per_epoch", "2")
    proc = run_cli(argv, cwd=tmp_path, check=False)
    assert proc.returncode == 1, proc.stderr[-4000:]
    assert "validation of the RGB model could not read" in proc.stderr
    assert os.path.join("000040", "img_") in proc.stderr and "--resume auto" in proc.stderr
    d = run_dir(tmp_path)
    saved = load_checkpoint(str(d / "ckpt.pth.tar"))
    assert saved["epoch"] == 1 and saved["val_pending"]             # the epoch was saved before validating
    (train_row,) = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert train_row["split"] == "train" and train_row["read_failures"] >= 1
    assert set(train_row["failed_videos"]) <= {"000001", "000002", "000003", "000004"}
    assert "read failure(s), replaced by other videos" in proc.stderr

    shutil.rmtree(frames / "000040")
    shutil.copytree(os.path.join(tiny_toy, "toy", "frames", "000040"), frames / "000040")
    out = run_cli(argv + ["--resume", "auto"], cwd=tmp_path).stderr
    assert "epoch 1: val top-1" in out                              # validated the saved epoch first
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["split"]) for r in rows] == [(1, "train"), (1, "val"), (2, "train"), (2, "val")]

    # item 11: resuming into another model is refused, naming the option and both values
    proc = run_cli(argv + ["--resume", str(d / "ckpt.pth.tar"), "--num_segments", "2"], cwd=tmp_path,
                   check=False)
    assert proc.returncode == 1
    assert "--num_segments: the checkpoint has 4, this command 2" in proc.stderr


def test_head_lr_rule_is_an_option_with_tsm_default(tiny_toy, tmp_path):
    # --fc_lr5 auto (TSM): x5/x10 head with SGD, except when fine-tuning a checkpoint of the same dataset, which
    # the checkpoint's recorded arguments tell (never its file name); off with AdamW. The parser leaves 'auto':
    # the model build reads --tune_from once, for its weights and its recorded dataset.
    from ops.distributed import setup_distributed
    from ops.models import TSN
    from ops.run_model import build_model_and_optimizer
    from opts import dataset_spec
    weights = TSN(5, 4, 'RGB', base_model='resnet18', pretrain='none', input_size=32).state_dict()
    same, other = tmp_path / 'kinetics_named.pth', tmp_path / 'toy_named.pth'
    torch.save({'state_dict': weights, 'args': {'dataset': 'toy'}}, same)
    torch.save({'state_dict': weights, 'args': {'dataset': 'kinetics'}}, other)
    ctx = setup_distributed(device='cpu', env={})

    def head(*extra, resuming=False):   # the toy recipe trains with AdamW; SGD first, a later --optimizer wins
        args = parse_args(train_argv(tiny_toy, tmp_path, '--optimizer', 'sgd', *extra)[1:])
        _, optimizer = build_model_and_optimizer(args, ctx, 'RGB', dataset_spec(args, 'RGB').num_class,
                                                 fine_tune=not resuming)
        groups = {g['name'] for g in optimizer.param_groups}
        assert ('lr5_weight' in groups) == (args.fc_lr5 == 'on')
        return args.fc_lr5
    assert parse_args(train_argv(tiny_toy, tmp_path, '--optimizer', 'sgd', '--tune_from', str(same))[1:]).fc_lr5 \
        == 'auto'
    assert head() == 'on'
    assert head('--optimizer', 'adamw') == 'off'
    assert head('--tune_from', str(same)) == 'off'
    assert head('--tune_from', str(other)) == 'on'
    assert head('--tune_from', str(same), '--fc_lr5', 'on') == 'on'
    assert head('--fc_lr5', 'off') == 'off'
    # Resuming a fine-tuned run: the same head groups as its start, for the optimiser state to load.
    assert head('--tune_from', str(same), resuming=True) == 'off'
    assert head('--tune_from', str(tmp_path / 'gone.pth'), resuming=True) == 'on'
    assert parse_args(train_argv(tiny_toy, tmp_path)[1:]).fc_lr5 == 'auto'   # the toy default (AdamW)


@pytest.mark.slow
def test_fc_lr5_auto_is_recorded_in_args_json_and_a_rerun_continues_the_run(tiny_toy, run_cli, tmp_path):
    # The value filled in at model build goes to args.json; a rerun of the same command (still 'auto' when
    # the run directory compares it) is the same run, not another configuration.
    from ops.models import TSN
    tuned = tmp_path / 'toy_start.pth'
    torch.save({'state_dict': TSN(5, 4, 'RGB', base_model='resnet18', pretrain='none', input_size=32).state_dict(),
                'args': {'dataset': 'toy'}}, tuned)
    argv = train_argv(tiny_toy, tmp_path, '--optimizer', 'sgd', '--tune_from', str(tuned), '--evaluate')
    for _ in range(2):
        run_cli(argv, cwd=tmp_path)
        assert json.loads((run_dir(tmp_path) / 'args.json').read_text())['fc_lr5'] == 'off'
