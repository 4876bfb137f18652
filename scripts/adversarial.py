"""Adversarial pass: bad inputs and faults against every entry point (main.py, test_models.py, predict.py and
scripts/check_data.py, export.py, convert_checkpoint.py, build_file_list.py, online_demo.py, extract_frames.py).

    python scripts/adversarial.py                    # everything
    python scripts/adversarial.py --only inputs      # bad inputs only (or: faults)
    python scripts/adversarial.py --only predict,extract_frames    # the cases of some tools
    python scripts/adversarial.py --out figures.json

Every case runs the real command line in a fresh folder on a tiny generated toy dataset (16 train / 8
val clips of 10 frames at 32 px) with tiny checkpoints written here. A bad input counts as handled when
the command exits with the expected code and its output names the problem (the option, file, line or
video). A fault counts as survived when no work is lost: exit code as promised, checkpoint present and
loadable, resumed runs aligned and complete. Prints one line per case and the totals; exit status 1 when
any case failed. Expected (this machine, CPU): every case handled / survived.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from ops.distributed import free_port  # noqa: E402
from ops.utils import tree_digest  # noqa: E402

TINY = ["--arch", "resnet18", "--num_segments", "4", "--input_size", "32", "--batch-size", "8", "-j", "0",
        "--no_progress", "--epochs", "1", "--max_steps_per_epoch", "1", "--dist_timeout", "20"]


def env():
    return dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def start(argv, cwd, new_group=False):
    script = os.path.join(REPO, argv[0])
    return subprocess.Popen([sys.executable, script, *argv[1:]], cwd=cwd, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=new_group)


def run(argv, cwd, timeout=300):
    proc = start(argv, cwd)
    out = proc.communicate(timeout=timeout)[0]
    return proc.returncode, out


class Workspace:
    """A tiny toy dataset, checkpoints and list files that the cases corrupt copies of."""

    def __init__(self, root):
        from ops.toy import ensure_toy_dataset
        self.root = root
        self.data = os.path.join(root, "data")
        ensure_toy_dataset(self.data, num_train=16, num_val=8, num_frames=10, size=32, workers=1)
        self.toy = os.path.join(self.data, "toy")
        self.n = 0
        self.ckpt = self.checkpoint("rgb.pth.tar", "RGB", 4)

    def folder(self):
        self.n += 1
        path = os.path.join(self.root, f"case{self.n:03d}")
        os.makedirs(path)
        return path

    def checkpoint(self, name, modality, segments, **extra):
        import torch
        from ops.checkpoint import save_checkpoint
        from ops.models import TSN
        torch.manual_seed(0)
        model = TSN(8, segments, modality, base_model="resnet18", pretrain="none", input_size=32)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        state = {"epoch": 1, "arch": "resnet18", "state_dict": model.state_dict(), "optimizer": opt.state_dict(),
                 "best_prec1": 0.0, "config": model.config(), **extra}
        return save_checkpoint(state, os.path.join(self.root, name))

    def write(self, name, data):
        path = os.path.join(self.root, name)
        with open(path, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        return path

    def lines(self, name, split="train", modality="rgb"):
        with open(os.path.join(self.toy, f"{split}_{modality}.txt")) as f:
            return [ln for ln in f.read().splitlines() if ln.strip()]

    def data_copy(self):
        path = os.path.join(self.folder(), "data")
        shutil.copytree(self.data, path)
        return path

    def train(self, folder, *extra, modality="RGB", data=None):
        return ["main.py", "toy", modality, "--data_root", data or self.data, "--root_model",
                os.path.join(folder, "ckpt"), "--root_log", os.path.join(folder, "log"), *TINY, *extra]

    def evaluate(self, *extra, weights=None):
        return ["test_models.py", "toy", "--weights", weights or self.ckpt, "--data_root", self.data, "-j", "0",
                "--no_progress", "--device", "cpu", *extra]


class _RunsCode:
    """Pickles as a call of os.system (never run: the loader must refuse it, naming the global)."""

    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def truncate_frames(folder, keep=120):
    for name in os.listdir(folder):
        with open(os.path.join(folder, name), "r+b") as f:
            f.truncate(keep)


# ------------------------------------------------------------------------------------------------ inputs
def bad_inputs(ws):
    """(name, argv, allowed exit codes, substrings the output must contain)."""
    import torch
    lines = ws.lines("train")
    dup = ws.write("dup.txt", "\n".join(lines + [lines[2]]) + "\n")
    vid, frames = lines[3].split()[:2]      # the 4th video with its true frame count, then a bad column
    cols = ws.write("cols.txt", "\n".join(lines[:3] + [f"{vid} {frames}"]) + "\n")
    neg = ws.write("neg.txt", "\n".join(lines[:3] + [f"{vid} {frames} -1"]) + "\n")
    big = ws.write("big.txt", "\n".join(lines[:3] + [f"{vid} {frames} 99"]) + "\n")
    text = ws.write("text.txt", "\n".join(lines[:3] + [f"{vid} ten 1"]) + "\n")
    empty = ws.write("empty.txt", "# no videos\n")
    noise = ws.write("noise.pth", os.urandom(5000))
    with open(ws.ckpt, "rb") as f:
        cut = ws.write("cut.pth", f.read()[:3000])
    bare = ws.checkpoint("bare.pth", "RGB", 4)
    state = torch.load(bare, weights_only=True)
    del state["state_dict"]
    torch.save(state, bare)
    pickled = os.path.join(ws.root, "pickled.pth")
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=1)}, pickled)
    code = os.path.join(ws.root, "code.pth")
    torch.save({"state_dict": {}, "hook": _RunsCode()}, code)
    zero = ws.write("zero.pth", b"")
    seg8 = ws.checkpoint("seg8.pth", "RGB", 8)
    flow = ws.checkpoint("flow.pth", "Flow", 4)
    r18 = ws.folder()
    t = ws.train
    f = ws.folder
    return [
        ("main: -ef 0", t(f(), "-ef", "0"), {2}, ["--eval-freq must be >= 1"]),
        ("main: --twice_sample with --dense_sample", t(f(), "--twice_sample", "--dense_sample"), {2},
         ["--twice_sample"]),
        ("main: --dense_sample with --random_sample", t(f(), "--dense_sample", "--random_sample"), {2}, ["exclusive"]),
        ("main: --num_segments 0", t(f(), "--num_segments", "0"), {2}, ["--num_segments"]),
        ("main: unknown modality", t(f(), modality="Depth"), {2}, ["modality"]),
        ("main: two modalities without a launcher", t(f(), modality="RGB,Flow"), {2}, ["one process per modality"]),
        ("main: --batch-size 0", t(f(), "--batch-size", "0"), {2}, ["--batch-size"]),
        ("main: --lr -1", t(f(), "--lr", "-1"), {2}, ["--lr"]),
        ("main: --world_size without --rank", t(f(), "--world_size", "2"), {2}, ["--rank"]),
        ("main: --world_size not a multiple of the modalities",
         t(f(), "--world_size", "3", "--rank", "0", modality="RGB,Flow"), {2}, ["multiple"]),
        ("main: --warmup_epochs >= --epochs", t(f(), "--warmup_epochs", "2"), {2}, ["--warmup_epochs"]),
        ("main: --resume PATH with --tune_from", t(f(), "--resume", "a", "--tune_from", "b"), {2}, ["exclusive"]),
        ("main: unregistered dataset", ["main.py", "nosuch", "RGB"], {2}, ["not registered"]),
        ("main: --dist_timeout 0", t(f(), "--dist_timeout", "0"), {2}, ["--dist_timeout"]),
        ("main: --shift on BNInception", t(f(), "--shift", "--arch", "BNInception"), {2}, ["insertion rule"]),
        ("main: --amp fp16 on CPU", t(f(), "--amp", "fp16", "--device", "cpu"), {2}, ["fp16"]),
        ("main: --lr_steps decreasing", t(f(), "--lr_type", "step", "--lr_steps", "5", "2"), {2}, ["increasing"]),
        ("main: video listed twice", t(f(), "--train_list", dup), {1}, [f"{dup}:{len(lines) + 1}", "first at line 3"]),
        ("main: list line with 2 columns", t(f(), "--train_list", cols), {1}, [f"{cols}:4", "columns"]),
        ("main: negative label", t(f(), "--train_list", neg), {1}, [f"{neg}:4", ">= 0"]),
        ("main: label outside the classes", t(f(), "--train_list", big), {1}, ["labels outside [0, 8)", "99"]),
        ("main: non-integer frame count", t(f(), "--train_list", text), {1}, [f"{text}:4", "integers"]),
        ("main: empty training list", t(f(), "--train_list", empty), {1}, ["no usable videos", empty]),
        ("main: missing list file", t(f(), "--train_list", os.path.join(ws.root, "absent.txt")), {1, 2},
         ["absent.txt"]),
        ("main: --resume random bytes", t(f(), "--resume", noise), {1}, ["noise.pth is not a PyTorch checkpoint"]),
        ("main: --resume a directory", t(f(), "--resume", ws.root), {1}, ["is a directory"]),
        ("main: --resume truncated file", t(f(), "--resume", cut), {1}, ["cut.pth", "truncated or corrupt"]),
        ("main: --resume without state_dict", t(f(), "--resume", bare), {1}, ["bare.pth has no 'state_dict'"]),
        ("main: --resume pickled objects", t(f(), "--resume", pickled), {1}, ["refusing to load", "Namespace"]),
        ("main: --resume pickled code", t(f(), "--resume", code), {1}, ["refusing to load", "code.pth", ".system"]),
        ("main: --resume 0-byte file", t(f(), "--resume", zero), {1}, ["zero.pth is empty (0 bytes)"]),
        ("main: --resume absent file", t(f(), "--resume", os.path.join(ws.root, "nope.pth")), {1},
         ["checkpoint not found", "nope.pth"]),
        ("main: --resume another --num_segments", t(f(), "--resume", seg8), {1},
         ["--num_segments: the checkpoint has 8, this command 4"]),
        ("main: --resume another modality", t(f(), "--resume", flow), {1},
         ["modality (2nd positional argument): the checkpoint has 'Flow', this command 'RGB'"]),
        ("main: --resume another --arch", t(r18, "--resume", ws.ckpt, "--arch", "resnet34"), {1},
         ["--arch: the checkpoint has 'resnet18', this command 'resnet34'"]),
        ("main: --tune_from random bytes", t(f(), "--tune_from", noise), {1}, ["noise.pth is not a PyTorch"]),
        ("test_models: random bytes", ws.evaluate(weights=noise), {1}, ["noise.pth is not a PyTorch checkpoint"]),
        ("test_models: a directory", ws.evaluate(weights=ws.root), {2}, ["no such file"]),
        ("test_models: no state_dict", ws.evaluate(weights=bare), {1}, ["no 'state_dict'"]),
        ("test_models: --modality on a checkpoint with a config", ws.evaluate("--modality", "Flow"), {1},
         ["carries its own model configuration", "--modality 'Flow'"]),
        ("test_models: --twice_sample with --dense_sample", ws.evaluate("--twice_sample", "--dense_sample"), {2},
         ["--twice_sample"]),
        ("test_models: video listed twice", ws.evaluate("--test_list", dup), {1}, ["listed again", "first at line 3"]),
        ("test_models: class count mismatch", ws.evaluate("--num_class", "5"), {1}, ["8 classes", "5"]),
        ("test_models: empty list", ws.evaluate("--test_list", empty), {1}, ["no usable videos"]),
        ("check_data: empty list", ["scripts/check_data.py", "toy", "--data_root", ws.data, "--train_list", empty,
                                    "--split", "train"], {1}, ["empty_list", empty]),
        ("check_data: video listed twice", ["scripts/check_data.py", "toy", "--data_root", ws.data,
                                            "--train_list", dup, "--split", "train"], {1}, ["duplicate_video"]),
    ]


def data_inputs(ws):
    """Cases that need a corrupted copy of the data (built lazily: each copies the data set)."""
    cases = []
    d = ws.data_copy()
    with open(os.path.join(d, "toy", "train_flow.txt")) as f:
        flow = f.read().splitlines()
    first = flow[0].split()
    flow = [f"{first[0]} {first[1]} {(int(first[2]) + 1) % 8}"] + flow[2:]
    with open(os.path.join(d, "toy", "train_flow.txt"), "w") as f:
        f.write("\n".join(flow) + "\n")
    cases.append(("check_data: RGB and Flow lists do not pair up",
                  ["scripts/check_data.py", "toy", "--data_root", d, "--pair_with", "Flow", "--split", "train"],
                  {1}, ["unpaired_video", "label_mismatch", first[0]]))
    d = ws.data_copy()
    truncate_frames(os.path.join(d, "toy", "frames", "000003"))
    shutil.rmtree(os.path.join(d, "toy", "frames", "000004"))
    cases.append(("check_data: truncated frames and a missing folder",
                  ["scripts/check_data.py", "toy", "--data_root", d, "--split", "train"], {1},
                  ["unreadable_image", "000003", "missing_folder", "000004"]))
    val = ws.lines("val", "val")[0].split()[0]
    d = ws.data_copy()
    shutil.rmtree(os.path.join(d, "toy", "frames", val))
    cases.append(("main: a validation video folder is missing", ws.train(ws.folder(), data=d), {1},
                  ["--val_list", val, "does not exist"]))
    cases.append(("test_models: a video folder is missing", ["test_models.py", "toy", "--weights", ws.ckpt,
                                                              "--data_root", d, "-j", "0", "--no_progress"],
                  {1}, [val]))
    return cases


def media(ws):
    """Bad media files made once: a corrupt mp4 (its first 1,500 bytes), a text file named .mp4, an uni-
    and a bi-directional TSM checkpoint, a 0-byte file, and a real clip whose name has a space."""
    if getattr(ws, "_media", None):
        return ws._media
    import torch
    from ops.checkpoint import save_checkpoint
    from ops.models import TSN
    from ops.temporal_modules import TemporalConfig
    video = os.path.join(ws.toy, "videos", sorted(os.listdir(os.path.join(ws.toy, "videos")))[0])
    with open(video, "rb") as f:
        corrupt = ws.write("corrupt.mp4", f.read()[:1500])
    fake = ws.write("notes.mp4", "this is not a video\n" * 40)
    zero = ws.write("zero.pth", b"")
    spaced = os.path.join(ws.folder(), "my clip.mp4")
    shutil.copy(video, spaced)
    pickled_code = os.path.join(ws.root, "parser.pth")
    torch.save({"state_dict": {}, "hook": argparse.ArgumentParser}, pickled_code)
    torch.manual_seed(0)
    uni = TSN(8, 4, "RGB", base_model="resnet18", pretrain="none", input_size=32,
              temporal=TemporalConfig("tsm", shift_direction="uni"))
    bi = TSN(8, 4, "RGB", base_model="resnet18", pretrain="none", input_size=32, temporal=TemporalConfig("tsm"))
    ckpts = {}
    for name, model in (("uni", uni), ("bi", bi)):
        ckpts[name] = save_checkpoint({"epoch": 1, "arch": "resnet18", "state_dict": model.state_dict(),
                                       "best_prec1": 0.0, "config": model.config()},
                                      os.path.join(ws.root, f"{name}.pth.tar"))
    ws._media = dict(video=video, corrupt=corrupt, fake=fake, zero=zero, spaced=spaced, code=pickled_code,
                     noise=os.path.join(ws.root, "noise.pth"), **ckpts)
    return ws._media


def blocked_path(ws):
    """An output path that cannot be written: its parent is a regular file."""
    return os.path.join(ws.write("a_file", "x"), "out", "result")


def eval_check_inputs(ws):
    """More bad inputs for test_models.py and scripts/check_data.py."""
    m = media(ws)
    lines = ws.lines("val", "val")
    v = ws.lines("val", "val", "video")
    cols = ws.write("val_cols.txt", "\n".join(lines[:3] + [lines[3].split()[0]]) + "\n")
    big = ws.write("val_big.txt", "\n".join(lines[:3] + [lines[3].rsplit(" ", 1)[0] + " 8"]) + "\n")
    text = ws.write("val_text.txt", "\n".join(lines[:3] + [lines[3].split()[0] + " ten 1"]) + "\n")
    long = ws.write("val_long.txt", "\n".join(lines[:3] + [lines[3].split()[0] + " 40 1"]) + "\n")
    corrupt_list = ws.write("val_corrupt.txt", "\n".join(v[:2] + [f"{m['corrupt']} 1"]) + "\n")
    fake_list = ws.write("val_fake.txt", "\n".join(v[:2] + [f"{m['fake']} 1"]) + "\n")
    absent_list = os.path.join(ws.root, "absent_list.txt")
    e = ws.evaluate
    videos = ["--data_format", "video", "--root_path", os.path.join(ws.toy, "videos")]
    cd = ["scripts/check_data.py", "toy", "--data_root", ws.data, "--split", "val"]
    blocked = blocked_path(ws)
    return [
        ("test_models: --test_crops 7", e("--test_crops", "7"), {2}, ["--test_crops"]),
        ("test_models: --test_segments 0", e("--test_segments", "0"), {2}, ["--test_segments"]),
        ("test_models: --random_clips 0", e("--random_clips", "0"), {2}, ["--random_clips"]),
        ("test_models: --batch_size 0", e("--batch_size", "0"), {2}, ["--batch_size"]),
        ("test_models: --softmax with --view_softmax", e("--softmax", "--view_softmax"), {2}, ["--view_softmax"]),
        ("test_models: --twice_sample with --random_clips", e("--twice_sample", "--random_clips", "2"), {2},
         ["--random_clips"]),
        ("test_models: --data_format bogus", e("--data_format", "avi"), {2}, ["--data_format"]),
        ("test_models: --device cuda without CUDA", e("--device", "cuda"), {1, 2}, ["CUDA"]),
        ("test_models: --amp fp16 on CPU", e("--amp", "fp16"), {2}, ["fp16"]),
        ("test_models: --gpus not integers", e("--gpus", "a,b"), {1, 2}, ["--gpus"]),
        ("test_models: checkpoint absent", e(weights=os.path.join(ws.root, "nope.pth")), {1, 2}, ["nope.pth"]),
        ("test_models: 0-byte checkpoint", e(weights=m["zero"]), {1}, ["zero.pth", "empty"]),
        ("test_models: truncated checkpoint", e(weights=os.path.join(ws.root, "cut.pth")), {1},
         ["cut.pth", "truncated or corrupt"]),
        ("test_models: checkpoint with pickled code", e(weights=m["code"]), {1}, ["parser.pth", "ArgumentParser"]),
        ("test_models: ensemble, second checkpoint absent", e(weights=f"{ws.ckpt},{ws.root}/gone.pth"), {1, 2},
         ["gone.pth"]),
        ("test_models: --coeff count differs from --weights", e("--coeff", "1,2"), {1, 2}, ["--coeff"]),
        ("test_models: --test_list absent", e("--test_list", absent_list), {1, 2}, ["absent_list.txt"]),
        ("test_models: list line with 1 column", e("--test_list", cols), {1}, [f"{cols}:4", "columns"]),
        ("test_models: label outside the classes", e("--test_list", big), {1}, ["8"]),
        ("test_models: non-integer frame count", e("--test_list", text), {1}, [f"{text}:4"]),
        ("test_models: frame count past the files", e("--test_list", long), {1}, ["--image_tmpl", "40"]),
        ("test_models: wrong --image_tmpl", e("--image_tmpl", "frame_{:04d}.png"), {1},
         ["--image_tmpl", "frame_{:04d}.png"]),
        ("test_models: corrupt mp4 in a video list", e("--test_list", corrupt_list, *videos), {1}, ["corrupt.mp4"]),
        ("test_models: text file named .mp4", e("--test_list", fake_list, *videos), {1}, ["notes.mp4"]),
        ("test_models: --save_scores into a file", e("--save_scores", blocked), {1, 2}, [blocked.split("/out")[0]]),
        ("test_models: --output_dir under a file", e("--output_dir", blocked), {1, 2}, [blocked.split("/out")[0]]),
        ("test_models: --csv_file under a file", e("--csv_file", blocked), {1, 2}, [blocked.split("/out")[0]]),
        ("check_data: unregistered dataset without lists", ["scripts/check_data.py", "nosuch"], {1, 2},
         ["not registered"]),
        ("check_data: --split bogus", cd + ["--split", "test"], {2}, ["--split"]),
        ("check_data: --pair_with bogus", cd + ["--pair_with", "Depth"], {2}, ["--pair_with"]),
        ("check_data: --val_list absent", cd + ["--val_list", absent_list], {1, 2}, ["absent_list.txt"]),
        ("check_data: list line with 1 column", cd + ["--val_list", cols], {1}, [f"{cols}:4"]),
        ("check_data: label outside the classes", cd + ["--val_list", big], {1}, ["8"]),
        ("check_data: non-integer frame count", cd + ["--val_list", text], {1}, [f"{text}:4"]),
        ("check_data: frame count past the files", cd + ["--val_list", long], {1}, [lines[3].split()[0]]),
        ("check_data: wrong --image_tmpl", cd + ["--image_tmpl", "frame_{:04d}.png"], {1}, ["frame_"]),
        ("check_data: corrupt mp4 in a video list", cd + ["--val_list", corrupt_list, *videos], {1},
         ["corrupt.mp4"]),
        ("check_data: text file named .mp4", cd + ["--val_list", fake_list, *videos], {1}, ["notes.mp4"]),
        ("check_data: --workers -1", cd + ["--workers", "-1"], {2}, ["--workers"]),
        ("check_data: --num_class 0", cd + ["--num_class", "0"], {1, 2}, ["--num_class"]),
    ]


def newer_tool_inputs(ws):
    """Bad inputs for predict.py, export.py, convert_checkpoint.py, build_file_list.py, online_demo.py and
    extract_frames.py."""
    m = media(ws)
    blocked = blocked_path(ws)
    here = blocked.split("/out")[0]
    empty_dir = ws.folder()
    one_class = ws.folder()       # classes a (3 videos) and b (1 video)
    for cls, n in (("a", 3), ("b", 1)):
        os.makedirs(os.path.join(one_class, cls))
        for i in range(n):
            shutil.copy(m["video"], os.path.join(one_class, cls, f"v{i}.mp4"))
    stems = ws.folder()           # a/x.mp4 and a/x.avi: the same video id twice
    os.makedirs(os.path.join(stems, "a"))
    os.makedirs(os.path.join(stems, "b"))
    for name in ("a/x.mp4", "a/x.avi", "b/y.mp4", "b/z.mp4"):
        shutil.copy(m["video"], os.path.join(stems, name))
    spaces = ws.folder()          # a class folder and a video with spaces in their names
    os.makedirs(os.path.join(spaces, "open door"))
    os.makedirs(os.path.join(spaces, "close"))
    for name in ("open door/take 1.mp4", "open door/t2.mp4", "close/t3.mp4", "close/t4.mp4"):
        shutil.copy(m["video"], os.path.join(spaces, name))
    missing_frames = ws.folder()  # a frame folder with frames 1-4 and 7-10
    src = os.path.join(ws.toy, "frames", ws.lines("val", "val")[0].split()[0])
    for name in sorted(os.listdir(src)):
        if name not in ("img_00005.jpg", "img_00006.jpg"):
            shutil.copy(os.path.join(src, name), os.path.join(missing_frames, name))
    mixed = ws.folder()           # one good video and one text file named .mp4
    shutil.copy(m["video"], os.path.join(mixed, "good.mp4"))
    shutil.copy(m["fake"], os.path.join(mixed, "bad.mp4"))
    pr = ["predict.py", "--weights", ws.ckpt, "--no_progress", "-j", "0"]
    ex = ["scripts/export.py", "--weights", ws.ckpt]
    cv = ["scripts/convert_checkpoint.py"]
    bf = ["scripts/build_file_list.py", "folders", "--out_dir"]
    od = ["scripts/online_demo.py", "--max_frames", "8"]
    xf = ["scripts/extract_frames.py", "--out_dir"]
    f = ws.folder
    return [
        ("predict: input absent", pr + [os.path.join(ws.root, "nothing.mp4")], {1, 2}, ["nothing.mp4"]),
        ("predict: text file named .mp4", pr + [m["fake"]], {1, 2}, ["notes.mp4"]),
        ("predict: corrupt mp4", pr + [m["corrupt"]], {1, 2}, ["corrupt.mp4"]),
        ("predict: empty folder", pr + [empty_dir], {1, 2}, [empty_dir]),
        ("predict: frame folder with missing frames", pr + [missing_frames], {1, 2}, ["img_00005.jpg"]),
        ("predict: --window longer than the video", pr + ["--window", "500", m["video"]], {0},
         ["--window 500", "one window covers the whole video"]),
        ("predict: --window 0", pr + ["--window", "0", m["video"]], {2}, ["--window"]),
        ("predict: --stride 0", pr + ["--window", "8", "--stride", "0", m["video"]], {2}, ["--stride"]),
        ("predict: --top_k 0", pr + ["--top_k", "0", m["video"]], {2}, ["--top_k"]),
        ("predict: --output under a file", pr + ["--output", blocked, m["video"]], {1, 2}, [here]),
        ("predict: 0-byte checkpoint", ["predict.py", "--weights", m["zero"], m["video"]], {1},
         ["zero.pth", "empty"]),
        ("predict: checkpoint of random bytes", ["predict.py", "--weights", m["noise"], m["video"]], {1},
         ["noise.pth"]),
        ("predict: a video name with a space", pr + [m["spaced"]], {0}, ["my clip.mp4"]),
        ("export: --format bogus", ex + ["--format", "tflite"], {2}, ["--format"]),
        ("export: checkpoint of random bytes", ["scripts/export.py", "--weights", m["noise"], "--format", "onnx"],
         {1, 2}, ["noise.pth"]),
        ("export: 0-byte checkpoint", ["scripts/export.py", "--weights", m["zero"], "--format", "onnx"], {1, 2},
         ["zero.pth", "empty"]),
        ("export: --output under a file", ex + ["--format", "onnx", "--output", blocked], {1, 2}, [here]),
        ("export: --check input absent", ex + ["--format", "onnx", "--output", os.path.join(f(), "m.onnx"),
                                               "--check", os.path.join(ws.root, "nowhere.mp4")], {1, 2},
         ["nowhere.mp4"]),
        ("export: --batch not a number", ex + ["--format", "onnx", "--batch", "many"], {2}, ["--batch"]),
        ("convert: unknown kind", cv + ["caffe", ws.ckpt, os.path.join(f(), "o.pth")], {2}, ["caffe"]),
        ("convert: wrong converter kind (ours as mmaction2)", cv + ["mmaction2", ws.ckpt, os.path.join(f(), "o.pth")],
         {1}, ["mmaction2"]),
        ("convert: wrong converter kind (ours as tdn)", cv + ["tdn", ws.ckpt, os.path.join(f(), "o.pth")],
         {1}, ["tdn"]),
        ("convert: input of random bytes", cv + ["mmaction2", m["noise"], os.path.join(f(), "o.pth")], {1},
         ["noise.pth"]),
        ("convert: input absent", cv + ["mmaction2", os.path.join(ws.root, "nope.pth"), os.path.join(f(), "o.pth")],
         {1, 2}, ["nope.pth"]),
        ("convert: --num_segments 0", cv + ["mmaction2", ws.ckpt, os.path.join(f(), "o.pth"), "--num_segments", "0"],
         {2}, ["--num_segments"]),
        ("build_file_list: empty tree", bf + [f(), "--root", empty_dir], {1, 2}, [empty_dir]),
        ("build_file_list: root absent", bf + [f(), "--root", os.path.join(ws.root, "no_tree")], {1, 2},
         ["no_tree"]),
        ("build_file_list: a class with one video", bf + [f(), "--root", one_class], {0, 1}, ["b", "1 video"]),
        ("build_file_list: duplicate video stems", bf + [f(), "--root", stems], {1}, ["x.mp4", "x.avi"]),
        ("build_file_list: names with spaces", bf + [f(), "--root", spaces], {1}, ["open door/take 1", "rename"]),
        ("build_file_list: --val_ratio 1.5", bf + [f(), "--root", one_class, "--val_ratio", "1.5"], {2},
         ["--val_ratio"]),
        ("build_file_list: somethingv2 annotation file absent",
         ["scripts/build_file_list.py", "somethingv2", "--out_dir", f(), "--labels", os.path.join(ws.root, "l.json"),
          "--train", os.path.join(ws.root, "t.json"), "--val", os.path.join(ws.root, "v.json"), "--frames_root",
          ws.toy], {1, 2}, ["l.json"]),
        ("online_demo: bi-directional checkpoint", od + ["--weights", m["bi"], "--video", m["video"]], {1, 2},
         ["uni"]),
        ("online_demo: --video absent", od + ["--weights", m["uni"], "--video", os.path.join(ws.root, "no.mp4")],
         {1, 2}, ["no.mp4"]),
        ("online_demo: text file named .mp4", od + ["--weights", m["uni"], "--video", m["fake"]], {1},
         ["notes.mp4"]),
        ("online_demo: checkpoint of random bytes", od + ["--weights", m["noise"], "--video", m["video"]], {1},
         ["noise.pth"]),
        ("online_demo: --history 0", od + ["--weights", m["uni"], "--video", m["video"], "--history", "0"], {2},
         ["--history"]),
        ("online_demo: --output under a file", od + ["--weights", m["uni"], "--video", m["video"], "--output",
                                                     blocked + ".mp4"], {1, 2}, [here]),
        ("extract_frames: empty tree", xf + [f(), "--video_dir", empty_dir], {1, 2}, [empty_dir]),
        ("extract_frames: --video_dir absent", xf + [f(), "--video_dir", os.path.join(ws.root, "nodir")], {1, 2},
         ["nodir"]),
        ("extract_frames: a text file named .mp4 among videos", xf + [f(), "--video_dir", mixed], {1},
         ["bad.mp4"]),
        ("extract_frames: corrupt mp4", xf + [f(), "--video_dir", os.path.dirname(m["corrupt"]),
                                              "--video_list", ws.write("xl.txt", "corrupt.mp4 0\n")], {1},
         ["corrupt.mp4"]),
        ("extract_frames: --quality 0", xf + [f(), "--video_dir", mixed, "--quality", "0"], {2}, ["--quality"]),
        ("extract_frames: --out_dir under a file", xf + [blocked, "--video_dir", mixed], {1, 2}, [here]),
        ("extract_frames: --video_list names an absent video",
         xf + [f(), "--video_dir", mixed, "--video_list", ws.write("xl2.txt", "good.mp4 0\nghost.mp4 1\n")],
         {1}, ["ghost.mp4"]),
    ]


def check_input(case, ws):
    name, argv, codes, needles = case
    rc, out = run(argv, ws.folder() if argv[0] != "main.py" else ws.root)
    missing = [n for n in needles if n not in out]
    ok = rc in codes and not missing
    why = "" if ok else f"exit {rc} (want {sorted(codes)}), missing {missing}: {out[-600:]!r}"
    return ok, why


# ------------------------------------------------------------------------------------------------ faults
def wait_line(proc, needle, timeout=180):
    seen = []
    deadline = time.time() + timeout
    for line in proc.stdout:
        seen.append(line)
        if needle in line or time.time() > deadline:
            break
    return "".join(seen)


def load(path):
    from ops.checkpoint import load_checkpoint
    return load_checkpoint(path)


def run_dir(folder, part=""):
    root = os.path.join(folder, "ckpt")
    (name,) = [n for n in os.listdir(root) if part in n]
    return os.path.join(root, name)


def fault_group_signal(ws, sig):
    folder = ws.folder()
    argv = ws.train(folder, "--epochs", "2", "--max_steps_per_epoch", "2", "-j", "2")
    proc = start(argv, folder, new_group=True)
    out = wait_line(proc, "INFO main: run ")
    os.killpg(proc.pid, sig)
    out += proc.communicate(timeout=120)[0]
    if proc.returncode != 75:
        return False, f"exit {proc.returncode}: {out[-800:]!r}"
    ckpt = load(os.path.join(run_dir(folder), "ckpt.pth.tar"))
    rc, out2 = run(argv + ["--resume", "auto"], folder)
    final = load(os.path.join(run_dir(folder), "ckpt.pth.tar"))
    ok = rc == 0 and final["epoch"] == 2 and ckpt["epoch"] < 2
    return ok, "" if ok else f"resume exit {rc}: {out2[-600:]!r}"


def fault_kills_during_writes(ws, kills=8):
    folder = ws.folder()
    target = os.path.join(folder, "ckpt.pth.tar")
    script = os.path.join(folder, "w.py")
    with open(script, "w") as f:
        f.write("import sys, torch\nfrom ops.checkpoint import save_checkpoint\n"
                "s = {'epoch': 1, 'state_dict': {'w': torch.zeros(4_000_000)}}\nprint('go', flush=True)\n"
                "while True:\n    save_checkpoint(s, sys.argv[1])\n")
    survived = 0
    for k in range(kills):
        proc = subprocess.Popen([sys.executable, script, target], env=env(), stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()
        time.sleep(0.4 + 0.13 * k)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        try:
            survived += load(target)["epoch"] == 1
        except Exception:   # counted as lost
            pass
    from ops.checkpoint import remove_stale_temp_files
    remove_stale_temp_files(folder)
    left = [n for n in os.listdir(folder) if n.endswith(".tmp")]
    return survived == kills and not left, f"{survived}/{kills} loadable, temps left {left}"


def fault_validation_read_failure(ws):
    d = ws.data_copy()
    val = ws.lines("val", "val")[1].split()[0]
    truncate_frames(os.path.join(d, "toy", "frames", val))
    folder = ws.folder()
    argv = ws.train(folder, "--epochs", "2", data=d)
    rc, out = run(argv, folder)
    if rc != 1 or val not in out:
        return False, f"exit {rc}: {out[-800:]!r}"
    saved = load(os.path.join(run_dir(folder), "ckpt.pth.tar"))
    if not (saved["epoch"] == 1 and saved["val_pending"]):
        return False, "epoch not saved before validation"
    shutil.rmtree(os.path.join(d, "toy", "frames", val))
    shutil.copytree(os.path.join(ws.toy, "frames", val), os.path.join(d, "toy", "frames", val))
    rc, out = run(argv + ["--resume", "auto"], folder)
    with open(os.path.join(run_dir(folder), "metrics.jsonl")) as f:
        rows = [(r["epoch"], r["split"]) for r in map(json.loads, f)]
    ok = rc == 0 and rows == [(1, "train"), (1, "val"), (2, "train"), (2, "val")]
    return ok, "" if ok else f"exit {rc}, rows {rows}: {out[-600:]!r}"


def data_with_truncated_videos(ws, count=4):
    """(data folder, video ids): a copy of the toy data whose first `count` training videos have truncated
    frames."""
    d = ws.data_copy()
    broken = [line.split()[0] for line in ws.lines("train")[:count]]
    for vid in broken:
        truncate_frames(os.path.join(d, "toy", "frames", vid))
    return d, broken


def fault_training_read_failures(ws):
    d, broken = data_with_truncated_videos(ws)
    folder = ws.folder()
    rc, out = run(ws.train(folder, "--max_steps_per_epoch", "2", data=d), folder)
    with open(os.path.join(run_dir(folder), "metrics.jsonl")) as f:
        row = json.loads(f.readline())
    ok = rc == 0 and row["read_failures"] >= 1 and set(row["failed_videos"]) <= set(broken)
    return ok, "" if ok else f"exit {rc}, row {row}"


def launch_mml(ws, folder, extra=(), data=None, world=2, modalities="RGB,Flow"):
    port = free_port()
    return [start(ws.train(folder, "--rank", str(r), "--world_size", str(world), "--init_method",
                           f"tcp://127.0.0.1:{port}", "--dump_step_logits", *extra, modality=modalities,
                           data=data), folder) for r in range(world)]


def finish(procs, timeout=300):
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    return [p.returncode for p in procs], outs


def fault_mml_partial_commit(ws):
    import torch
    folder = ws.folder()
    extra = ["--epochs", "3", "--max_steps_per_epoch", "2"]      # the run name holds --epochs: keep it
    procs = launch_mml(ws, folder, extra)
    wait_line(procs[0], "epoch 1: train loss")                   # pre-empt early in epoch 2
    procs[0].send_signal(signal.SIGTERM)
    codes, outs = finish(procs)
    if codes != [75, 75]:
        return False, f"pre-emption exits {codes}: {outs[1][-600:]!r}"
    rgb, flow = run_dir(folder, "_ML0"), run_dir(folder, "_ML1")
    # Flow "died" after RGB wrote the pre-emption save and before writing its own.
    os.replace(os.path.join(flow, "ckpt.prev.pth.tar"), os.path.join(flow, "ckpt.pth.tar"))
    codes, outs = finish(launch_mml(ws, folder, extra + ["--resume", "auto"]))
    if codes != [0, 0]:
        return False, f"resume exits {codes}: {outs[0][-600:]!r}"
    aligned = all(
        [s["video_ids"] for s in torch.load(os.path.join(rgb, f"steps_rank0_epoch{e}.pt"))] ==
        [s["video_ids"] for s in torch.load(os.path.join(flow, f"steps_rank1_epoch{e}.pt"))] for e in (1, 2))
    epochs = [load(os.path.join(d, "ckpt.pth.tar"))["epoch"] for d in (rgb, flow)]
    ok = aligned and epochs == [3, 3]
    return ok, f"aligned {aligned}, epochs {epochs}"


def fault_mml_read_failure(ws):
    import torch
    d, _ = data_with_truncated_videos(ws)
    folder = ws.folder()
    codes, outs = finish(launch_mml(ws, folder, ["--max_steps_per_epoch", "2"], data=d))
    if codes != [0, 0]:
        return False, f"exits {codes}: {outs[0][-600:]!r}"
    a = torch.load(os.path.join(run_dir(folder, "_ML0"), "steps_rank0_epoch0.pt"))
    b = torch.load(os.path.join(run_dir(folder, "_ML1"), "steps_rank1_epoch0.pt"))
    ok = all(torch.equal(x["keep"], y["keep"]) and
             torch.equal(x["keep"], torch.tensor([u == v for u, v in zip(x["video_ids"], y["video_ids"])]))
             for x, y in zip(a, b))
    return ok, "" if ok else "masks differ or a misaligned pair was kept"


def fault_lone_rank(ws, rank):
    folder = ws.folder()
    t0 = time.time()
    rc, out = run(ws.train(folder, "--rank", str(rank), "--world_size", "2", "--dist_timeout", "6",
                           "--init_method", f"tcp://127.0.0.1:{free_port()}"), folder)
    took = time.time() - t0
    want = "did not join the rendezvous" if rank == 0 else "could not reach the rendezvous store"
    ok = rc == 3 and want in out
    return ok, f"exit {rc} after {took:.1f} s (timeout 6 s + start-up)" + ("" if ok else f": {out[-600:]!r}")


def fault_killed_rank(ws):
    folder = ws.folder()
    procs = launch_mml(ws, folder, ["--epochs", "50", "--max_steps_per_epoch", "1000"],
                       modalities="RGB,Flow,RGB", world=3)
    wait_line(procs[0], "INFO main: run ")
    time.sleep(2.0)
    procs[1].send_signal(signal.SIGKILL)
    codes, outs = finish(procs)
    ok = codes[0] == 3 and codes[2] == 3 and all("rank(s) 1 stopped responding" in outs[r] for r in (0, 2))
    return ok, f"exits {codes}"


def video_tree(ws, count=24):
    """A folder of `count` real toy clips in two class folders (extraction takes a few seconds)."""
    root = ws.folder()
    names = sorted(os.listdir(os.path.join(ws.toy, "videos")))[:count]
    for i, name in enumerate(names):
        os.makedirs(os.path.join(root, f"c{i % 2}"), exist_ok=True)
        shutil.copy(os.path.join(ws.toy, "videos", name), os.path.join(root, f"c{i % 2}", name))
    return root


def fault_extraction_interrupted(ws, sig):
    """extract_frames stopped by `sig` once some folders are finished, then rerun: the result equals an
    uninterrupted extraction, file for file (the .done markers' own bytes aside: they record the source)."""
    videos = video_tree(ws)
    clean, cut = ws.folder(), ws.folder()
    rc, out = run(["scripts/extract_frames.py", "--video_dir", videos, "--out_dir", clean], clean)
    if rc != 0:
        return False, f"clean run exit {rc}: {out[-600:]!r}"
    proc = start(["scripts/extract_frames.py", "--video_dir", videos, "--out_dir", cut], cut)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        done = [d for d, _, files in os.walk(cut) if ".done" in files]
        if len(done) >= 3:
            break
        time.sleep(0.02)
    if proc.poll() is not None:
        return False, "extraction finished before the signal: nothing was interrupted"
    proc.send_signal(sig)
    first = proc.communicate(timeout=60)[0]
    finished = len([d for d, _, files in os.walk(cut) if ".done" in files])
    rc, out = run(["scripts/extract_frames.py", "--video_dir", videos, "--out_dir", cut], cut)
    a = {k: v for k, v in tree_digest(clean).items() if not k.endswith(".done")}
    b = {k: v for k, v in tree_digest(cut).items() if not k.endswith(".done")}
    same = a == b
    ok = rc == 0 and same and finished < 24
    return ok, (f"{finished}/24 finished at the signal (exit {proc.returncode}), rerun exit {rc}, "
                f"files identical {same}") + ("" if ok else f": {first[-300:]!r} {out[-300:]!r}")


def fault_predict_killed_writing_output(ws, kills=6):
    """SIGKILL of predict.py at increasing delays while it classifies and writes --output: the file is either
    absent or a complete report of every video, never a torn one; a rerun writes it whole."""
    videos = video_tree(ws, 12)
    folder = ws.folder()
    output = os.path.join(folder, "pred.csv")
    argv = ["predict.py", "--weights", ws.ckpt, "--no_progress", "-j", "0", "--output", output, videos]
    rc, out = run(argv, folder)
    if rc != 0:
        return False, f"uninterrupted run exit {rc}: {out[-600:]!r}"
    with open(output) as f:
        whole = f.read()
    torn = 0
    for k in range(kills):
        if os.path.exists(output):
            os.remove(output)
        proc = start(argv, folder)
        time.sleep(2.0 + 0.7 * k)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if os.path.exists(output):
            with open(output) as f:
                torn += f.read() != whole
    rc, out = run(argv, folder)
    with open(output) as f:
        again = f.read() == whole
    left = [n for n in os.listdir(folder) if n.endswith(".tmp")]
    ok = torn == 0 and rc == 0 and again
    return ok, f"{kills} kills, torn files {torn}, rerun exit {rc} identical {again}, temp files left {len(left)}"


def fault_full_disk_checkpoint(ws):
    """A run whose checkpoint folder is a 400 MB tmpfs that a filler file fills after epoch 1: the write fails naming
    the path, the previous checkpoint survives and loads, and after space is freed --resume auto finishes."""
    folder = ws.folder()
    mnt = os.path.join(folder, "small")
    os.makedirs(mnt)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400m", "tmpfs", mnt], capture_output=True).returncode:
        return None, "not tried: cannot mount a tmpfs here (needs root)"
    try:
        argv = ["main.py", "toy", "RGB", "--data_root", ws.data, "--root_model", os.path.join(mnt, "ckpt"),
                "--root_log", os.path.join(folder, "log"), *TINY[:-6], "--epochs", "3", "--max_steps_per_epoch",
                "2", "--dist_timeout", "20"]
        proc = start(argv, folder)
        out = wait_line(proc, "epoch 1: train loss")
        filler = os.path.join(mnt, "filler")
        with open(filler, "wb", buffering=0) as f:   # take every free byte: the next checkpoint cannot fit
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            except OSError:
                pass
            try:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
            except OSError:
                pass
        out += proc.communicate(timeout=180)[0]
        d = run_dir(mnt)
        saved = load(os.path.join(d, "ckpt.pth.tar"))
        named = d in out and ("No space left" in out or "space" in out)
        os.remove(filler)
        rc, out2 = run(argv + ["--resume", "auto"], folder)
        final = load(os.path.join(d, "ckpt.pth.tar"))
        ok = proc.returncode not in (0, None) and named and saved["epoch"] >= 1 and rc == 0 and final["epoch"] == 3
        return ok, (f"exit {proc.returncode}, path named {named}, previous checkpoint epoch {saved['epoch']} "
                    f"loads, resume exit {rc} to epoch {final['epoch']}") + (
                        "" if ok else f": {out[-600:]!r} {out2[-900:]!r}")
    finally:
        subprocess.run(["umount", "-l", mnt], capture_output=True)


FAULTS = [
    ("SIGTERM to the process group, -j 2 (checkpoint, exit 75, resume)",
     lambda ws: fault_group_signal(ws, signal.SIGTERM)),
    ("SIGINT to the process group, -j 2 (checkpoint, exit 75, resume)",
     lambda ws: fault_group_signal(ws, signal.SIGINT)),
    ("8 SIGKILLs during checkpoint writes (file loadable, temps removed)", fault_kills_during_writes),
    ("read failure during validation (epoch kept, named, resume validates)", fault_validation_read_failure),
    ("read failures during training (replaced, reported)", fault_training_read_failures),
    ("MML: a rank lost its last checkpoint write (common resume point)", fault_mml_partial_commit),
    ("MML: read failures on one rank only (pairs stay aligned)", fault_mml_read_failure),
    ("rendezvous: lone rank 0 (peers never start)", lambda ws: fault_lone_rank(ws, 0)),
    ("rendezvous: lone rank 1 (rank 0 never starts)", lambda ws: fault_lone_rank(ws, 1)),
    ("MML: SIGKILL of rank 1 of 3 while training", fault_killed_rank),
    ("extract_frames: SIGKILL mid-extraction, then rerun (same files as an uninterrupted run)",
     lambda ws: fault_extraction_interrupted(ws, signal.SIGKILL)),
    ("extract_frames: Ctrl-C (SIGINT) mid-extraction, then rerun",
     lambda ws: fault_extraction_interrupted(ws, signal.SIGINT)),
    ("predict: SIGKILL while writing --output (never a torn file)", fault_predict_killed_writing_output),
    ("main: disk full during a checkpoint write (tmpfs)", fault_full_disk_checkpoint),
]


TOOLS = ("main", "test_models", "check_data", "predict", "export", "convert", "build_file_list", "online_demo",
         "extract_frames")


def selected(name, only):
    """A case runs when --only is empty, names its group, or names the tool its name starts with."""
    return not only or name.split(":")[0] in only


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", help="comma list of groups (inputs, faults) and tools (" +
                   ", ".join(TOOLS) + "); default: everything")
    p.add_argument("--out", default=None, help="JSON file for the figures")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args(argv)
    only = {w for w in args.only.split(",") if w}
    unknown = only - set(TOOLS) - {"inputs", "faults"}
    if unknown:
        p.error(f"--only: unknown {sorted(unknown)}; choose from inputs, faults, {', '.join(TOOLS)}")
    groups = only & {"inputs", "faults"} or {"inputs", "faults"}
    tools = only & set(TOOLS)
    root = tempfile.mkdtemp(prefix="adversarial_")
    ws = Workspace(root)
    results = {"inputs": [], "faults": []}
    if "inputs" in groups:
        cases = bad_inputs(ws) + eval_check_inputs(ws) + newer_tool_inputs(ws) + data_inputs(ws)
        for case in cases:
            if not selected(case[0], tools):
                continue
            ok, why = check_input(case, ws)
            results["inputs"].append({"case": case[0], "ok": ok, "why": why})
            print(f"{'ok  ' if ok else 'FAIL'} input  {case[0]}" + (f"\n     {why}" if why else ""), flush=True)
    if "faults" in groups:
        for name, fn in FAULTS:
            if not selected(name, tools):
                continue
            try:
                ok, why = fn(ws)
            except Exception as exc:   # a crash of the harness itself counts as not survived
                ok, why = False, f"{type(exc).__name__}: {exc}"
            results["faults"].append({"case": name, "ok": ok, "why": why})
            mark = {True: "ok  ", False: "FAIL", None: "skip"}[ok]
            print(f"{mark} fault  {name}" + (f" ({why})" if why else ""), flush=True)
    inputs, faults = results["inputs"], [r for r in results["faults"] if r["ok"] is not None]
    per_tool = {}
    for r in inputs:
        tool = r["case"].split(":")[0]
        tried, handled = per_tool.get(tool, (0, 0))
        per_tool[tool] = (tried + 1, handled + bool(r["ok"]))
    summary = {"inputs_tried": len(inputs), "inputs_handled": sum(bool(r["ok"]) for r in inputs),
               "faults_tried": len(faults), "faults_survived": sum(bool(r["ok"]) for r in faults),
               "faults_not_tried": len(results["faults"]) - len(faults),
               "inputs_per_tool": {t: {"tried": a, "handled": b} for t, (a, b) in per_tool.items()}}
    print("bad inputs per tool: " + ", ".join(f"{t} {b}/{a}" for t, (a, b) in per_tool.items()))
    print(f"bad inputs: {summary['inputs_handled']}/{summary['inputs_tried']} handled; "
          f"faults: {summary['faults_survived']}/{summary['faults_tried']} survived"
          + (f" ({summary['faults_not_tried']} not tried here)" if summary["faults_not_tried"] else ""))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(summary, **results), f, indent=2)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if summary["inputs_handled"] == summary["inputs_tried"] and \
        summary["faults_survived"] == summary["faults_tried"] else 1


if __name__ == "__main__":
    sys.exit(main())
