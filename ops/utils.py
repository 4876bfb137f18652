"""Small shared helpers: AMP dtypes, progress bars, meters, top-k accuracy, seeding, JSON-safe values,
batches to the device, atomic file writes, input errors that stop a run with their message, the --help
formatter of every entry point, the CPU count."""
import argparse
import contextlib
import hashlib
import os
import random

import numpy as np
import torch

# --amp -> autocast dtype (None: no autocast), for every entry point.
AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """ArgumentDefaultsHelpFormatter that adds no "(default: ...)" to on/off flags (store_true, store_false,
    store_const): a store_false flag such as --no_autorotate (dest autorotate) would read "(default: True)"
    while rotation is on by default. A flag's help says what it turns on or off."""

    def _get_help_string(self, action):
        if action.nargs == 0:
            return action.help
        return super()._get_help_string(action)


def available_cpus():
    """CPUs this process may run on (its affinity mask, as PyTorch's DataLoader counts them; a container's
    or taskset's limit included), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:   # no affinity masks (macOS, Windows)
        return os.cpu_count() or 1


def progress_bar(total, desc, enabled, initial=0, unit="it"):
    """A tqdm bar counting `total` `unit`s when `enabled` (main rank, bars wanted), else None."""
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True, unit=unit)


class AverageMeter:
    """Running average weighted by the number of samples of each update."""

    def __init__(self):
        self.val = 0.0
        self.sum = 0.0
        self.count = 0

    def update(self, val, n=1):
        self.val = float(val)
        self.sum += float(val) * n
        self.count += n

    @property
    def avg(self):
        return self.sum / self.count if self.count else 0.0


def topk_correct(logits, target, topk=(1, 5)):
    """Number of samples whose label is among the k best classes, for each k (k capped at C)."""
    maxk = min(max(topk), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices                      # (B, maxk)
    hit = pred.eq(target.view(-1, 1))                            # (B, maxk)
    return [int(hit[:, :min(k, maxk)].any(dim=1).sum()) for k in topk]


def accuracy(logits, target, topk=(1, 5)):
    """Top-k accuracy in percent over the batch (TSM's `accuracy`)."""
    n = max(target.numel(), 1)
    return [100.0 * c / n for c in topk_correct(logits, target, topk)]


def mean_class_accuracy(confusion):
    """Mean over classes that occur of diag / row sum, in percent."""
    confusion = np.asarray(confusion, dtype=np.float64)
    rows = confusion.sum(axis=1)
    present = rows > 0
    if not present.any():
        return 0.0
    return float(100.0 * (np.diag(confusion)[present] / rows[present]).mean())


def confusion_matrix(pred, target, num_class):
    """(num_class, num_class) int64 matrix, rows = true label, columns = prediction."""
    pred = np.asarray(pred, dtype=np.int64)
    target = np.asarray(target, dtype=np.int64)
    cm = np.zeros((num_class, num_class), dtype=np.int64)
    np.add.at(cm, (target, pred), 1)
    return cm


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def rng_state():
    """Every global RNG state as tensors / plain types (checkpoint-safe)."""
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]) + [random.getstate()[2] if random.getstate()[2] is not None else -1],
        "python_version": random.getstate()[0],
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]),
        "numpy_gauss": float(np_state[4]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    gauss = state["python"][-1]
    random.setstate((state["python_version"], tuple(int(v) for v in state["python"][:-1]),
                     None if gauss == -1 else gauss))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32),
                         state["numpy_pos"], state["numpy_has_gauss"], state["numpy_gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def to_device(clips, device, channels_last=False):
    """A batch (a tensor or a {modality: tensor} dict) on `device`; 4-D tensors channels_last when the model
    is (its convolutions then run in that format without a conversion per layer)."""
    if isinstance(clips, dict):
        return {k: to_device(v, device, channels_last) for k, v in clips.items()}
    clips = clips.to(device, non_blocking=True)
    if channels_last and clips.dim() == 4:
        clips = clips.contiguous(memory_format=torch.channels_last)
    return clips


@contextlib.contextmanager
def atomic_open(path, mode="w", **kwargs):
    """open() for writing `path` whole or not at all: the data go to a temporary file next to it, which
    replaces `path` (flushed to disk first) only when the block ends without an error; after an error or
    a kill, readers still see the previous file."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def named_input_errors(*extra):
    """A bad list, data option or checkpoint file stops the run with its message (which names the file,
    line and option) instead of a traceback. extra: more exception types (RuntimeError for checkpoints)."""
    try:
        yield
    except (OSError, ValueError, *extra) as exc:
        raise SystemExit(f"{type(exc).__name__}: {exc}") from None


def tree_digest(root):
    """{path relative to root: sha1 hex} of every file under root (to compare two trees file for file)."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, root)] = hashlib.sha1(f.read()).hexdigest()
    return out
