"""Adversarial pass: bad inputs and faults against main.py, test_models.py and scripts/check_data.py.

    python scripts/adversarial.py                    # everything (18 min on 2 CPU cores shared by 6 jobs)
    python scripts/adversarial.py --only inputs      # bad inputs only (or: faults)
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
    cols = ws.write("cols.txt", "\n".join(lines[:3] + ["000004 10"]) + "\n")
    neg = ws.write("neg.txt", "\n".join(lines[:3] + ["000004 10 -1"]) + "\n")
    # a real video with its real frame count: only the label is wrong (the start-up count check passes)
    big = ws.write("big.txt", "\n".join(lines[:3] + [" ".join(lines[3].split()[:2] + ["99"])]) + "\n")
    text = ws.write("text.txt", "\n".join(lines[:3] + ["000004 ten 1"]) + "\n")
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
                  ["validation of the RGB model could not read", val, "checkpoint is saved"]))
    cases.append(("test_models: a video folder is missing", ["test_models.py", "toy", "--weights", ws.ckpt,
                                                              "--data_root", d, "-j", "0", "--no_progress"],
                  {1}, [val]))
    return cases


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
]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=("inputs", "faults"), default=None)
    p.add_argument("--out", default=None, help="JSON file for the figures")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args(argv)
    root = tempfile.mkdtemp(prefix="adversarial_")
    ws = Workspace(root)
    results = {"inputs": [], "faults": []}
    if args.only in (None, "inputs"):
        for case in bad_inputs(ws) + data_inputs(ws):
            ok, why = check_input(case, ws)
            results["inputs"].append({"case": case[0], "ok": ok, "why": why})
            print(f"{'ok  ' if ok else 'FAIL'} input  {case[0]}" + (f"\n     {why}" if why else ""), flush=True)
    if args.only in (None, "faults"):
        for name, fn in FAULTS:
            try:
                ok, why = fn(ws)
            except Exception as exc:   # a crash of the harness itself counts as not survived
                ok, why = False, f"{type(exc).__name__}: {exc}"
            results["faults"].append({"case": name, "ok": ok, "why": why})
            print(f"{'ok  ' if ok else 'FAIL'} fault  {name}" + (f" ({why})" if why else ""), flush=True)
    inputs, faults = results["inputs"], results["faults"]
    summary = {"inputs_tried": len(inputs), "inputs_handled": sum(r["ok"] for r in inputs),
               "faults_tried": len(faults), "faults_survived": sum(r["ok"] for r in faults)}
    print(f"bad inputs: {summary['inputs_handled']}/{summary['inputs_tried']} handled; "
          f"faults: {summary['faults_survived']}/{summary['faults_tried']} survived")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(summary, **results), f, indent=2)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if summary["inputs_handled"] == summary["inputs_tried"] and \
        summary["faults_survived"] == summary["faults_tried"] else 1


if __name__ == "__main__":
    sys.exit(main())
