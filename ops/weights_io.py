"""Reading weight files: checkpoints (``weights_only=True``, or ``.safetensors``) and the state dicts in them.

A leaf module (nothing of this project imported), so that archs/ (pretrained weights) and ops.checkpoint
(checkpoints of whole models) read files the same way without importing each other.
"""
import os
import pickle

import torch

_PREFIXES = ('module.', '_orig_mod.')     # DataParallel/DDP, torch.compile


def load_checkpoint(path, map_location='cpu', require=()):
    """Open a checkpoint with ``weights_only=True`` (``.safetensors`` -> {'state_dict': tensors}).

    Every failure names the file and what is wrong with it: absent, a directory, not a checkpoint at
    all, truncated, holding pickled Python objects, or lacking one of the ``require``d top-level keys.
    """
    if os.path.isdir(path):
        raise IsADirectoryError(f'{path} is a directory, not a checkpoint file (give the .pth/.pth.tar file '
                                'inside it, e.g. ckpt.pth.tar)')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    if os.path.getsize(path) == 0:
        raise ValueError(f'checkpoint {path} is empty (0 bytes): a write that never finished, or a copy or '
                         'download that failed; use another checkpoint or write it again')
    if str(path).endswith('.safetensors'):
        from safetensors.torch import load_file
        try:
            return {'state_dict': load_file(path, device=str(map_location))}
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise RuntimeError(f'could not read safetensors file {path}: {e}') from e
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, IndexError, KeyError, ValueError) as e:
        # Random bytes read as a legacy pickle fail in the unpickler with any of these; so does a pickle
        # that names Python objects weights_only does not allow (torch's text then depends on the pickle).
        refused = pickled_globals(path) if isinstance(e, pickle.UnpicklingError) else []
        if not refused:
            raise ValueError(f'{path} is not a PyTorch checkpoint (neither a torch.save zip archive nor a '
                             f'readable legacy pickle; size {os.path.getsize(path)} bytes): is it the right '
                             'file, or was it truncated or overwritten?') from e
        raise ValueError(f'refusing to load {path}: it contains pickled Python objects that weights_only '
                         f'loading does not allow: {", ".join(refused[:8])}'
                         f'{f" and {len(refused) - 8} more" if len(refused) > 8 else ""} (nothing was '
                         'executed). Re-save it with only tensors and plain types, e.g. '
                         "torch.save({'state_dict': model.state_dict()}, path), where you trust its source") from e
    except (RuntimeError, OSError, EOFError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RuntimeError(f'could not read checkpoint {path} (truncated or corrupt?): {first}') from e
    if require == ('state_dict',) and _is_bare_state_dict(ckpt):
        ckpt = {'state_dict': ckpt}     # a file that is only a state dict (TSM's online demo ships one)
    missing = [k for k in require if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        found = sorted(map(str, ckpt))[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f'{path} has no {", ".join(repr(k) for k in missing)} entry (top-level keys: {found}); '
                         'it is not a checkpoint written by main.py')
    return ckpt


def _is_bare_state_dict(obj):
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                       for k, v in obj.items())


def pickled_globals(path):
    """Names (``module.name``) of the Python objects a pickled file refers to and ``torch.load(weights_only=
    True)`` does not allow, found by reading the pickle's opcodes, never by running them; [] when there are
    none or the file is not a pickle at all."""
    import pickletools
    import zipfile
    if zipfile.is_zipfile(path):
        try:
            return sorted(set(torch.serialization.get_unsafe_globals_in_checkpoint(path)))
        except Exception:  # noqa: BLE001 - an archive torch cannot read: no names to give
            return []
    # Legacy torch.save files and bare pickles: a sequence of pickles; GLOBAL carries "module name",
    # STACK_GLOBAL takes the two strings pushed (or fetched from the memo) just before it.
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
        allowed = set(_get_allowed_globals())
    except ImportError:  # private to torch: without it, torch's own rebuild functions are named too
        allowed = set()
    allowed |= {f'{g.__module__}.{g.__qualname__}' for g in torch.serialization.get_safe_globals()
                if hasattr(g, '__qualname__')}
    found, strings, memo, last = [], [], {}, None
    try:
        with open(path, 'rb') as f:
            while f.peek(1):
                for op, arg, _ in pickletools.genops(f):
                    if op.name == 'GLOBAL':
                        found.append(arg.replace(' ', '.'))
                    elif op.name == 'STACK_GLOBAL' and len(strings) >= 2:
                        found.append(f'{strings[-2]}.{strings[-1]}')
                    elif op.name in ('BINPUT', 'LONG_BINPUT', 'PUT'):
                        memo[arg] = last
                    elif op.name == 'MEMOIZE':
                        memo[len(memo)] = last
                    elif op.name in ('BINGET', 'LONG_BINGET', 'GET') and isinstance(memo.get(arg), str):
                        strings.append(memo[arg])
                    elif isinstance(arg, str) and 'UNICODE' in op.name:
                        strings.append(arg)
                    last = arg if isinstance(arg, str) and 'UNICODE' in op.name else (
                        memo.get(arg) if 'GET' in op.name else None)
    except Exception:  # noqa: BLE001 - the bytes after the pickles (tensor data) or garbage: stop there
        pass
    return sorted({g for g in found if g not in allowed})


def read_state_dict(path):
    """The state dict inside a checkpoint file (or the file itself when it is a bare state dict)."""
    ckpt = load_checkpoint(path)
    # 'model': the wrapper of the released (2D) Swin Transformer files
    sd = ckpt.get('state_dict', ckpt.get('model', ckpt)) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f'{path}: no state dict of tensors found (top-level keys: {list(ckpt)[:10]})')
    return strip_prefixes(sd)


def strip_prefixes(state_dict):
    """Remove leading ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) prefixes."""
    out = {}
    for k, v in state_dict.items():
        while k.startswith(_PREFIXES):
            k = k.split('.', 1)[1]
        out[k] = v
    return out
