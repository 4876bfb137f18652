"""Run directories that never mix: one configuration per directory, one process per directory at a time.

A run directory (TSM's human-readable name) holds `args.json`. A new start into a directory whose
`args.json` records another training configuration is refused, naming the first differing option, so
a second learning rate never overwrites the first run's checkpoints nor appends to its metrics
(`--resume auto` with the same configuration continues the run; `--suffix`/`--run_name` start a new
one). A lock file (`flock`, released by the kernel when the holder exits, crashes or is killed, so it
can never stay stuck) stops a second process started on the same directory at once. The writer of the
directory also logs to its log.txt.
"""
import fcntl
import json
import logging
import os
import socket
import sys
import time

LOCK_NAME = '.lock'

# args.json keys that may differ between a run and its continuation without changing what is trained:
# how it is launched, where logs go, progress display, debugging dumps and the resume point itself.
RUNTIME_KEYS = frozenset({
    'resume', 'start_epoch', 'evaluate', 'print_freq', 'no_progress', 'workers', 'root_log', 'root_model',
    'data_root', 'rank', 'world_size', 'init_method', 'dist_port', 'dist_timeout', 'gpus', 'device', 'launch',
    'per_rank_batch', 'video_backend', 'strict_data', 'compile', 'channels_last', 'dump_step_logits',
    'check_alignment', 'trust_jit_checkpoint'})

_held = {}   # run_dir (absolute) -> open lock file of this process


class RunDirError(RuntimeError):
    """The run directory belongs to another configuration or another running process."""


def lock_run_dir(run_dir):
    """Take the directory's lock for the life of this process (idempotent within one process)."""
    key = os.path.abspath(run_dir)
    if key in _held:
        return
    path = os.path.join(key, LOCK_NAME)
    f = open(path, 'a+')
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or 'another process'
        f.close()
        raise RunDirError(f'run directory {run_dir} is in use by {holder} (lock {path}): two processes '
                          f'would overwrite each other. Wait for it to finish, or start a separate run '
                          f'with --suffix or --run_name') from None
    f.seek(0)
    f.truncate()
    f.write(f'pid {os.getpid()} on {socket.gethostname()} since {time.strftime("%Y-%m-%d %H:%M:%S")}\n')
    f.flush()
    _held[key] = f


def release_run_dirs():
    """Drop every lock this process holds (the kernel does it anyway when the process ends)."""
    for f in _held.values():
        f.close()
    _held.clear()


def first_difference(recorded, current, ignore=RUNTIME_KEYS):
    """(key, recorded value, current value) of the first training option that differs, or None. Keys
    missing on either side (options added or removed by a newer version) are not compared."""
    for key, value in current.items():
        if key in ignore or key not in recorded:
            continue
        if recorded[key] != value:
            return key, recorded[key], value
    return None


def check_run_config(run_dir, config, option_names=None):
    """Refuse to reuse a run directory whose args.json records another training configuration.

    config: this run's plain arguments (as they go into args.json); option_names: dest -> option text
    for the message (e.g. 'batch_size' -> '--batch-size')."""
    path = os.path.join(run_dir, 'args.json')
    if not os.path.isfile(path):
        return
    try:
        with open(path) as f:
            recorded = json.load(f)
    except (OSError, ValueError) as exc:
        raise RunDirError(f'{path}: cannot read the configuration of the run in this directory ({exc}); '
                          f'move the directory away or give --suffix/--run_name') from None
    diff = first_difference(json.loads(json.dumps(recorded)), json.loads(json.dumps(config)))
    if diff is not None:
        key, old, new = diff
        option = (option_names or {}).get(key, f'--{key}')
        raise RunDirError(
            f'run directory {run_dir} holds a run with another configuration: {option} is {old!r} there '
            f'and {new!r} now (first difference; {path}). Starting here would overwrite it: give --suffix '
            f'or --run_name for a new run, or repeat its options to continue it with --resume auto')


def plain_args(args):
    """The JSON-able options of a parsed Namespace (lists for tuples), as args.json and checkpoints hold them."""
    out = {}
    for k, v in vars(args).items():
        if isinstance(v, (str, int, float, bool, type(None))):
            out[k] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float, bool)) for x in v):
            out[k] = list(v)
    return out


def open_run_dir(run_dir, log_dir, *, writes, verbose, config, option_names):
    """Every rank calls this. The writer of run_dir (`writes`) creates it and log_dir, takes the lock and
    refuses a directory of another configuration (check_run_config with config and option_names), and
    logs to its log.txt; every rank logs to stderr, INFO if `verbose`, else warnings only."""
    if writes:
        os.makedirs(run_dir, exist_ok=True)
        os.makedirs(log_dir, exist_ok=True)
        try:
            lock_run_dir(run_dir)
            check_run_config(run_dir, config, option_names)
        except RunDirError as exc:
            raise SystemExit(f'error: {exc}') from None
    setup_logging(run_dir if writes else None, verbose)


def setup_logging(run_dir, verbose):
    """Root logging to stderr and, with run_dir, to run_dir/log.txt (replacing earlier handlers)."""
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    fmt = logging.Formatter('%(asctime)s %(levelname)s %(name)s: %(message)s', '%H:%M:%S')
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    root.addHandler(console)
    if run_dir is not None:
        fh = logging.FileHandler(os.path.join(run_dir, 'log.txt'))
        fh.setFormatter(fmt)
        root.addHandler(fh)
