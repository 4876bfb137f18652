"""A real one-node SLURM cluster (Debian's slurmctld, slurmd and munge, started by the fixture in a temporary
folder, as root or as the current user) runs the launcher users submit, scripts/mml_slurm.sbatch:
mutual learning on 2 CPU tasks, pre-emption by `scancel --signal=TERM` with requeue and resume, and plain DDP.

Where the daemons are not installed the tests are skipped, saying what to install (.ci/run installs them)."""
import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO
from ops.checkpoint import load_checkpoint
from ops.distributed import free_port

# One worker runs the whole module (pytest.ini: --dist loadgroup), so its one cluster starts once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group('slurm')]

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "srun")
LAUNCHER = os.path.join(REPO, "scripts", "mml_slurm.sbatch")
TINY = ("--arch resnet18 --num_segments 4 --input_size 32 --batch-size 8 -j 0 --no_progress "
        "--max_steps_per_epoch 4 --dist_timeout 60")


def _which(name):
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


class Cluster:
    """munged + slurmctld + slurmd on this machine, every file under `root`; `env` points the clients at it."""

    def __init__(self, root):
        self.root = root
        self.procs = []
        host = socket.gethostname()
        user = getpass.getuser()
        for d in ("state", "spool", "log"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        key = os.path.join(root, "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o400)
        self.socket = os.path.join(root, "munge.sock")
        # cred_expire also sets how long a requeued job waits before it may start again (default 120 s).
        conf = f"""ClusterName=tsmtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
AuthInfo=socket={self.socket},cred_expire=5
CredType=cred/munge
SlurmUser={user}
SlurmdUser={user}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
JobRequeue=1
MinJobAge=600
NodeName={host} NodeAddr=127.0.0.1 CPUs=4 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""
        self.conf = os.path.join(root, "slurm.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.env = dict(os.environ, SLURM_CONF=self.conf)

    def start(self):
        subprocess.run([_which("munged"), "--force", f"--socket={self.socket}",
                        f"--key-file={self.root}/munge.key", f"--log-file={self.root}/log/munged.log",
                        f"--pid-file={self.root}/munged.pid", f"--seed-file={self.root}/munged.seed"],
                       check=True, env=self.env)
        for daemon, extra in (("slurmctld", ["-i"]), ("slurmd", [])):
            log = open(os.path.join(self.root, "log", f"{daemon}.out"), "w")
            self.procs.append(subprocess.Popen([_which(daemon), "-D", *extra], env=self.env, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=self.env, capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc"):
                return
            time.sleep(0.5)
        raise AssertionError(f"the test SLURM cluster did not come up:\n{self.logs()}")

    def logs(self):
        text = []
        for name in sorted(os.listdir(os.path.join(self.root, "log"))):
            with open(os.path.join(self.root, "log", name), errors="replace") as f:
                text.append(f"--- {name}\n{f.read()[-3000:]}")
        return "\n".join(text)

    def stop(self):
        subprocess.run(["scancel", "--full", "--state=RUNNING"], env=self.env, capture_output=True)
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run([_which("munged"), "--stop", f"--socket={self.socket}"], capture_output=True)

    def sbatch(self, tmp, name, modalities, ntasks, train_args):
        out = tmp / f"{name}.out"
        env = dict(self.env, DATASET="toy", MODALITIES=modalities, PYTHON=sys.executable,
                   MASTER_PORT=str(free_port()), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
                   TRAIN_ARGS=train_args)
        proc = subprocess.run(["sbatch", "--parsable", f"--ntasks={ntasks}", "--gpus-per-task=0",
                               "--cpus-per-task=1", f"--chdir={REPO}", f"--output={out}", f"--job-name={name}",
                               LAUNCHER], env=env, capture_output=True, text=True, check=True)
        return proc.stdout.strip().split(";")[0], out

    def job(self, job_id):
        """scontrol's fields of the job as a dict (JobState, Restarts, ExitCode, ...)."""
        out = subprocess.run(["scontrol", "show", "job", "-o", job_id], env=self.env, capture_output=True,
                             text=True, check=True).stdout
        return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)

    def wait(self, job_id, out, timeout=300):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if info["JobState"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
                return info
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} still {self.job(job_id)['JobState']} after {timeout} s:\n"
                             f"{read(out)[-4000:]}\n{self.logs()}")


def read(path):
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = [d for d in DAEMONS if _which(d) is None]
    if missing:
        pytest.skip(f"SLURM is not installed here ({', '.join(missing)} not found): install Debian's "
                    "slurmctld slurmd slurm-client munge (.ci/run does; see README 'Launching')")
    # munge and slurm keep their sockets and state here: a short path (unix sockets are limited to 108 bytes)
    root = tmp_path_factory.mktemp("slurm")
    c = Cluster(str(root))
    c.start()
    yield c
    c.stop()


def _final_states(root):
    return {d.name: load_checkpoint(str(d / "ckpt.pth.tar"))["state_dict"] for d in sorted(root.iterdir())}


def test_mml_job_preempted_by_scancel_term_requeues_and_resumes_to_the_uninterrupted_weights(cluster, tiny_toy,
                                                                                             tmp_path):
    def args(name):
        return (f"--data_root {tiny_toy} --root_model {tmp_path / name / 'ckpt'} "
                f"--root_log {tmp_path / name / 'log'} {TINY} --epochs 3")

    straight, out = cluster.sbatch(tmp_path, "straight", "RGB,Flow", 2, args("straight"))
    info = cluster.wait(straight, out)
    text = read(out)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", text[-4000:]
    assert "launch slurm, world 2 (2 modalities x 1 replicas)" in text and "mutual learning summary" in text

    cut, out = cluster.sbatch(tmp_path, "cut", "RGB,Flow", 2, args("cut"))
    deadline = time.monotonic() + 180
    while "INFO main: run " not in read(out):      # both ranks are past their rendezvous: handlers are in
        assert time.monotonic() < deadline and cluster.job(cut)["JobState"] in ("PENDING", "RUNNING"), read(out)
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=TERM", cut], env=cluster.env, check=True)   # what pre-emption sends
    info = cluster.wait(cut, out)
    text = read(out)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", text[-4000:]
    assert info["Restarts"] == "1", text[-4000:]
    # every rank wrote its checkpoint and exited 75; the script requeued; the second start resumed
    assert text.count("signal SIGTERM: checkpoint written") == 2, text[-4000:]
    assert re.search(r"tasks? 0-1: Exited with exit code 75", text) or (
        "task 0: Exited with exit code 75" in text and "task 1: Exited with exit code 75" in text), text[-4000:]
    assert "pre-empted, requeueing job" in text and "restart 1: toy RGB,Flow on 2 tasks" in text
    assert "resumed from" in text
    ref, got = _final_states(tmp_path / "straight" / "ckpt"), _final_states(tmp_path / "cut" / "ckpt")
    assert ref.keys() == got.keys() and len(ref) == 2
    for run in ref:
        assert ref[run].keys() == got[run].keys()
        for k in ref[run]:
            assert torch.equal(ref[run][k], got[run][k]), (run, k)


def test_ddp_job_two_tasks_one_model(cluster, tiny_toy, tmp_path):
    job, out = cluster.sbatch(tmp_path, "ddp", "RGB", 2,
                              f"--data_root {tiny_toy} --root_model {tmp_path / 'ckpt'} "
                              f"--root_log {tmp_path / 'log'} {TINY} --epochs 1 --shift")
    info = cluster.wait(job, out)
    text = read(out)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", text[-4000:]
    assert "launch slurm, world 2 (1 modalities x 2 replicas)" in text
    (run,) = list((tmp_path / "ckpt").iterdir())
    ckpt = load_checkpoint(str(run / "ckpt.pth.tar"))
    assert ckpt["epoch"] == 1
