"""One place that sets up devices and torch.distributed for training and evaluation.

Launch sources, in order of precedence:
  1. torchrun / torch.distributed.run: RANK, WORLD_SIZE, LOCAL_RANK (+ MASTER_ADDR/MASTER_PORT), env://
  2. SLURM (srun, one task per rank): SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID; the master is the first
     host of SLURM_JOB_NODELIST (or MASTER_ADDR), the port comes from --dist_port / MASTER_PORT
  3. explicit --rank --world_size --init_method tcp://HOST:PORT (the MML README's per-rank commands)
  4. nothing: a single process

Mutual modality learning with M modalities and R replicas uses world size M*R; rank r trains modality
r % M as replica r // M (so with R = 1, rank r trains modality r, as in the MML README). Two families of
process groups are made: the R ranks of one modality (DistributedDataParallel among replicas) and the M
ranks of one replica (they hold the same data shard and exchange logits).
"""
import datetime
import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


class RendezvousError(RuntimeError):
    """The ranks of a run did not all meet within the timeout (the message names who is missing)."""


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str = ""
    source: str = "single"
    num_modalities: int = 1
    # derived from rank: modality index (into the comma list) and replica index
    modality_index: int = 0
    replica_index: int = 0
    num_replicas: int = 1
    replica_group: object = None   # ranks training the same modality (DDP); None when R == 1
    mutual_group: object = None    # ranks holding the same data shard; None when M == 1
    store: object = None           # the rendezvous TCPStore (also carries the liveness heartbeats)
    timeout_s: float = 1800.0

    @property
    def distributed(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0


def parse_gpus(value):
    """'0,1' / '0 1' / [0, 1] -> [0, 1]; None or '' -> None. (The MML fork used the raw string.)"""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        parts = [str(v) for v in value]
    else:
        parts = [p for p in re.split(r"[,\s]+", str(value)) if p]
    if not parts:
        return None
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"--gpus expects integer device ids such as '0,1', got {value!r}") from None


def first_slurm_host(nodelist):
    """First host name of a SLURM node list: 'gpu[03-05,7],cpu1' -> 'gpu03'."""
    nodelist = nodelist.strip()
    m = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist)
    if not m:
        raise ValueError(f"cannot parse SLURM_JOB_NODELIST={nodelist!r}")
    prefix, bracket = m.group(1), m.group(3)
    if bracket is None:
        return prefix
    first = bracket.split(",")[0].split("-")[0]
    return prefix + first


def detect_launch(*, rank=None, world_size=None, init_method=None, dist_port=None, env=None):
    """-> (rank, world_size, local_rank, init_method, source). Pure: reads only `env`."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return (int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                "env://", "torchrun")
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        host = env.get("MASTER_ADDR") or first_slurm_host(env.get("SLURM_JOB_NODELIST", "127.0.0.1"))
        port = dist_port or env.get("MASTER_PORT") or 29500
        return (int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)),
                f"tcp://{host}:{port}", "slurm")
    if world_size is not None and world_size > 1:
        if rank is None or not 0 <= rank < world_size:
            raise ValueError(f"--rank must be in [0, {world_size}) with --world_size {world_size}, got {rank}")
        return rank, world_size, 0, init_method or "tcp://127.0.0.1:52525", "per-rank"
    return 0, 1, 0, None, "single"


def resolve_device(device="auto", gpus=None, local_rank=0):
    if device not in DEVICES:
        raise ValueError(f"--device must be one of {DEVICES}, got {device!r}")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but CUDA is not available")
    if not use_cuda:
        return torch.device("cpu")
    ids = gpus if gpus else list(range(torch.cuda.device_count()))
    return torch.device("cuda", ids[local_rank % len(ids)])


def setup_distributed(*, rank=None, world_size=None, init_method=None, dist_port=None, device="auto",
                      gpus=None, num_modalities=1, timeout_s=1800, env=None):
    rank, world_size, local_rank, init_method, source = detect_launch(
        rank=rank, world_size=world_size, init_method=init_method, dist_port=dist_port, env=env)
    dev = resolve_device(device, parse_gpus(gpus), local_rank)
    if world_size % num_modalities:
        raise ValueError(f"world size {world_size} is not a multiple of the number of modalities "
                         f"{num_modalities} (mutual learning needs M x R processes)")
    ctx = DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, source=source,
                      num_modalities=num_modalities, modality_index=rank % num_modalities,
                      replica_index=rank // num_modalities, num_replicas=world_size // num_modalities,
                      timeout_s=timeout_s)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size == 1:
        return ctx
    ctx.backend = "nccl" if dev.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    ctx.store = _make_store(init_method, rank, world_size, timeout, env)
    _wait_for_ranks(ctx.store, rank, world_size, timeout_s, init_method)
    dist.init_process_group(backend=ctx.backend, store=ctx.store, rank=rank, world_size=world_size,
                            timeout=timeout)
    M, R = num_modalities, ctx.num_replicas
    # Every rank must create every group, in the same order.
    for m in range(M):
        ranks = [m + M * j for j in range(R)]
        g = dist.new_group(ranks, timeout=timeout) if R > 1 else None
        if m == ctx.modality_index:
            ctx.replica_group = g
    for j in range(R):
        ranks = [j * M + i for i in range(M)]
        g = dist.new_group(ranks, timeout=timeout) if M > 1 else None
        if j == ctx.replica_index:
            ctx.mutual_group = g
    _start_heartbeat(ctx)
    return ctx


def _store_address(init_method, env):
    if init_method == "env://":
        return env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", 29500))
    url = urlparse(init_method)
    if url.scheme != "tcp" or not url.hostname or not url.port:
        raise ValueError(f"--init_method must look like tcp://HOST:PORT or env://, got {init_method!r}")
    return url.hostname, url.port


def _make_store(init_method, rank, world_size, timeout, env):
    """The rendezvous store. Under a real torchrun the agent already hosts it; otherwise rank 0 does."""
    env = os.environ if env is None else env
    host, port = _store_address(init_method, env)
    agent_hosts = init_method == "env://" and env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    hosts = rank == 0 and not agent_hosts
    if hosts:
        try:
            return dist.TCPStore(host, port, world_size, is_master=True, timeout=timeout, wait_for_workers=False)
        except (RuntimeError, OSError) as exc:   # DistStoreError / DistNetworkError are RuntimeErrors
            raise RendezvousError(f"rank 0 cannot host the rendezvous store on {host}:{port} "
                                  f"({str(exc).splitlines()[0]}): is the port in use?") from None
    # A client's connect retries with a back-off that can double the wait; short attempts keep the whole
    # wait within the timeout (+ one attempt), then the store gets the full timeout for its operations.
    deadline = time.monotonic() + timeout.total_seconds()
    while True:
        attempt = max(1.0, min(5.0, (deadline - time.monotonic()) / 2))
        try:
            store = dist.TCPStore(host, port, world_size, is_master=False,
                                  timeout=datetime.timedelta(seconds=attempt), wait_for_workers=False)
            store.set_timeout(timeout)
            if agent_hosts:
                # torchrun's agents keep one store across worker restarts (--max_restarts): the keys of a failed
                # attempt (join marks, gloo's addresses of dead ranks) must not be read by the next one. The
                # agents' restart counts differ (only the failed node's counts), so each rank counts its own
                # starts in the store: the n-th start of every rank meets the n-th start of the others.
                start = store.add(f"tsm_starts/{rank}", 1)
                store = dist.PrefixStore(f"tsm_start_{start}", store)
            return store
        except (RuntimeError, OSError) as exc:
            if time.monotonic() + 1.0 < deadline:
                continue
            raise RendezvousError(f"rank {rank} could not reach the rendezvous store at {host}:{port} within "
                                  f"{timeout.total_seconds():g} s (--dist_timeout): rank 0 has not started, or "
                                  f"the address is wrong or unreachable ({str(exc).splitlines()[0]})") from None


def _wait_for_ranks(store, rank, world_size, timeout_s, init_method):
    """Every rank announces itself and waits for the others, so that a missing rank is named within
    --dist_timeout (torch's own barrier gives an anonymous store timeout)."""
    keys = [f"tsm_join/{r}" for r in range(world_size)]
    try:
        store.set(keys[rank], "1")
        deadline = time.monotonic() + timeout_s
        while not store.check(keys):
            if time.monotonic() > deadline:
                missing = [r for r, k in enumerate(keys) if not store.check([k])]
                raise RendezvousError(
                    f"rank(s) {', '.join(map(str, missing))} of {world_size} did not join the rendezvous at "
                    f"{init_method} within {timeout_s:g} s (--dist_timeout): not started, crashed at start-up, "
                    f"or given another --init_method / --world_size")
            time.sleep(0.1)
    except RendezvousError:
        raise
    except (RuntimeError, OSError) as exc:   # the store host (rank 0) went away while we waited
        raise RendezvousError(f"rank {rank}: the rendezvous store at {init_method} (hosted by rank 0) "
                              f"stopped responding: {str(exc).splitlines()[0]}") from None


HEARTBEAT_S = 1.0
_heartbeats = []   # (stop event, thread) of this process's heartbeat, stopped and joined by cleanup()


def _start_heartbeat(ctx):
    """A thread bumps `tsm_hb/<rank>` every second, so survivors of a failure can name the lost rank."""
    key = f"tsm_hb/{ctx.rank}"
    stop = threading.Event()

    def beat():
        n = 0
        while not stop.is_set():
            n += 1
            try:
                ctx.store.set(key, str(n))
            except Exception:   # the store host is gone; the main thread reports it
                return
            stop.wait(HEARTBEAT_S)
    thread = threading.Thread(target=beat, name="tsm-heartbeat", daemon=True)
    thread.start()
    _heartbeats.append((stop, thread))


def _stop_heartbeats(timeout_s=5.0):
    # A daemon thread still inside a TCPStore call when the interpreter exits can abort the process
    # ("terminate called without an active exception"): stop it and wait for it first.
    for stop, _ in _heartbeats:
        stop.set()
    for _, thread in _heartbeats:
        thread.join(timeout_s)
    _heartbeats.clear()


def describe_failure(ctx, probe_s=3.0):
    """After a collective failed: name the ranks whose heartbeat stopped (dead or frozen processes).

    Survivors mark themselves in the store (`tsm_fail/<rank>`) so that a rank that exits first is not
    mistaken for a lost one, and rank 0 (the store host) stays up until every survivor has probed."""
    if ctx.store is None:
        return "no process group"
    store = ctx.store
    try:
        first = {r: store.get(f"tsm_hb/{r}") for r in range(ctx.world_size)}
        time.sleep(probe_s)
        second = {r: store.get(f"tsm_hb/{r}") for r in range(ctx.world_size)}
        lost = [r for r in range(ctx.world_size) if r != ctx.rank and first[r] == second[r]
                and not store.check([f"tsm_fail/{r}"])]
        store.set(f"tsm_fail/{ctx.rank}", "1")
        if ctx.rank == 0:
            survivors = [f"tsm_fail/{r}" for r in range(ctx.world_size) if r not in lost]
            deadline = time.time() + ctx.timeout_s + 2 * probe_s
            while time.time() < deadline and not store.check(survivors):
                time.sleep(0.2)
    except Exception:
        return "rank 0 (host of the rendezvous store) stopped responding"
    if lost:
        return "rank(s) " + ", ".join(map(str, lost)) + " stopped responding"
    return "every rank is still alive; the collective failed for another reason (see the error above)"


def cleanup():
    _stop_heartbeats()
    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # a peer may be gone already; nothing left to release cleanly
            pass


def gather_by_index(index, rows, expected, *, world=1, group=None, what="evaluation"):
    """This process's share of an evaluation, sample indices (n,) and their rows (n, ...), gathered from
    the `world` processes of `group` (None: all) and sorted by index; every process gets the whole result.

    Raises RuntimeError unless the indices are exactly 0 .. expected-1: a shard missing or evaluated
    twice would otherwise change the metrics silently (results must not depend on the world size)."""
    if world > 1:
        parts = [None] * world
        dist.all_gather_object(parts, (index.numpy(), rows.numpy()), group=group)
        index = torch.from_numpy(np.concatenate([p[0] for p in parts]))
        rows = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    order = torch.argsort(index)
    index, rows = index[order], rows[order]
    if not torch.equal(index, torch.arange(expected)):
        raise RuntimeError(f"{what}: {len(index)} results for {expected} videos (a shard is missing or "
                           f"duplicated)")
    return rows


def agree_on_errors(ctx, errors, what, hint):
    """Every rank learns of every rank's errors and stops at the same point with one message naming
    them (a lone rank stopping would leave its peers waiting in a collective until --dist_timeout)."""
    if ctx.distributed:
        parts = [None] * ctx.world_size
        dist.all_gather_object(parts, errors)
        errors = [f"rank {r}: {e}" for r, part in enumerate(parts) for e in part]
    if errors:
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        raise SystemExit(f"{what}: " + "; ".join(errors[:10]) + more + f". {hint}")


def is_comm_failure(exc):
    """Whether an error raised during a run is a collective that failed (a peer died, hung or lost its
    connection) rather than a bug of this rank."""
    text = str(exc).lower()
    return isinstance(exc, dist.DistBackendError) or any(
        s in text for s in ("connection", "timed out", "timeout", "gloo", "nccl", "peer", "broken pipe"))


def free_port(host="127.0.0.1"):
    """A TCP port free on `host` now, for a rendezvous on one machine (tests, benchmarks, local launches)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
