"""Checkpoints: atomic save, safe load, and one weight loader for training, fine-tuning and evaluation.

A checkpoint is a dict of tensors and plain Python types with TSM's keys (``epoch``, ``arch``,
``state_dict``, ``optimizer``, ``best_prec1``) plus ``config`` (``TSN.config()``), so it always opens
with ``torch.load(weights_only=True)`` and the model is rebuilt from the file, not from its name.
Released TSM files hold only a state dict; ``model_config_from_checkpoint`` then reads the settings
from the state dict's keys, TSM's file-name convention and explicit overrides.

Reading files (``load_checkpoint``, ``read_state_dict``, ``strip_prefixes``) lives in the leaf module
ops.weights_io, which archs/ uses for pretrained weights; this module re-exports it as its public API.
"""
import logging
import os
import re
import tempfile

import torch

import archs
from ops.heads import heads_text
from ops.modality import CHANNELS, first_conv_name, mean_expand_kernel
from ops.weights_io import load_checkpoint, read_state_dict, strip_prefixes  # noqa: F401 - re-exported

logger = logging.getLogger(__name__)

_WRAPPER_PARTS = ('net', 'block')  # TemporalShift/TemporalPool/TIN wrappers, NL3DWrapper
# Parameters of modules a source may lack: non-local blocks (identity at init), TIN's offset/weight nets.
NEW_MODULE_PARTS = ('.nl.', '.offset_net.', '.weight_net.')
_HEAD_NAMES = ('new_fc', 'base_model.fc', 'base_model.classifier')
_PLAIN_TYPES = (str, int, float, bool, type(None), torch.Tensor)


# ---------------------------------------------------------------------- files
def _check_plain(obj, where='state'):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f'{where}: key {k!r} is a {type(k).__name__}; only str/int keys are saved')
            _check_plain(v, f'{where}[{k!r}]')
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f'{where}[{i}]')
    elif not isinstance(obj, _PLAIN_TYPES):
        raise TypeError(f'{where} is a {type(obj).__name__}; checkpoints hold only tensors and plain types '
                        'so that torch.load(weights_only=True) can open them')


def save_checkpoint(state, path):
    """Write ``state`` atomically: temp file in the same directory, fsync, then os.replace."""
    _check_plain(state)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(exc, (OSError, RuntimeError)):   # torch's zip writer reports a short write as RuntimeError
            # a full disk or a lost mount: name the file; the previous checkpoint at `path` is untouched
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
            message = f'cannot write checkpoint {path}: {why} (the previous file there, if any, is unchanged)'
            errno = getattr(exc, 'errno', None)
            raise (OSError(errno, message) if errno else OSError(message)) from exc
        raise
    return path


def remove_stale_temp_files(directory):
    """Delete temp files that save_checkpoint left behind when its process was killed mid-write.

    Call only where no other process is writing into ``directory`` (one writer per run directory).
    Returns the removed paths."""
    removed = []
    if not os.path.isdir(directory):
        return removed
    for name in os.listdir(directory):
        if name.startswith('.') and name.endswith('.tmp') and '.pth' in name:
            path = os.path.join(directory, name)
            try:
                os.remove(path)
            except FileNotFoundError:
                continue
            removed.append(path)
    if removed:
        logger.warning('removed %d stale checkpoint temp file(s) of interrupted writes in %s', len(removed),
                       directory)
    return removed


def save_checkpoint_keep_previous(state, path, previous):
    """Atomically write ``state`` to ``path``, first moving the file there to ``previous``.

    A kill between the two renames leaves ``previous`` only; readers look at both files."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
    os.close(fd)
    try:
        save_checkpoint(state, tmp)
        if os.path.exists(path):
            os.replace(path, previous)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


# ---------------------------------------------------------------------- key handling
# First-conv keys of state dicts saved from a bare backbone, without TSN's `base_model.` (MobileNetV2 as
# in TSM's online demo, torchvision-style ResNets, BNInception).
_BARE_BACKBONE_STEMS = ('features.0.0.weight', 'conv1.weight', 'conv1_7x7_s2.weight')
# TSM's online demo (online_demo/mobilenet_v2_tsm.py, mobilenetv2_jester_online.pth.tar): a MobileNetV2 whose
# inverted residuals with an expansion layer and a residual connection take 1/8 of their input channels from
# the previous frame before conv.0 (this project's uni 'blockres' shift). Its file is the bare backbone's
# state dict, whose keys show none of that; T is not in it (streaming does not use it; TSM trains with 8).
TSM_ONLINE_DEMO = {'base_model': 'mobilenetv2', 'modality': 'RGB', 'is_shift': True, 'shift_div': 8,
                   'shift_place': 'blockres', 'shift_direction': 'uni', 'num_segments': 8}


def with_backbone_prefix(state_dict):
    """``strip_prefixes``, then ``base_model.`` in front of every key of a state dict saved from the bare
    backbone (no ``base_model.`` / ``new_fc.`` keys, a backbone's first conv at the top level), e.g. TSM's
    online-demo MobileNetV2; any other state dict is returned with its keys as they are."""
    sd = strip_prefixes(state_dict)
    if any(k.startswith(('base_model.', 'new_fc.')) for k in sd) or not any(k in sd for k in _BARE_BACKBONE_STEMS):
        return sd
    return {'base_model.' + k: v for k, v in sd.items()}


def is_tsm_online_demo_layout(state_dict):
    """True for a bare MobileNetV2 state dict with its classifier: the layout of TSM's online-demo file."""
    sd = strip_prefixes(state_dict)
    return 'features.0.0.weight' in sd and 'classifier.weight' in sd and not any(
        k.startswith(('base_model.', 'new_fc.')) for k in sd)


def canonical_key(key):
    """Key without wrapper components: TSN, TSM blockres/block, tpool and NL keys map to one name."""
    return '.'.join(p for p in key.split('.') if p not in _WRAPPER_PARTS)


def _head_prefix(keys):
    for name in _HEAD_NAMES:
        if name + '.weight' in keys:
            return name
    return None


def _multi_head(state):
    """(head prefix, ((name, classes), ...)) of a multi-head classifier's keys (``new_fc.verb.weight``),
    else None."""
    for name in _HEAD_NAMES:
        found = [(k[len(name) + 1:-len('.weight')], state[k].shape[0]) for k in state
                 if k.startswith(name + '.') and k.endswith('.weight') and k.count('.') == name.count('.') + 2
                 and k[len(name) + 1:-len('.weight')].isidentifier()]
        if found:
            return name, tuple(found)
    return None


def infer_modality(in_channels):
    """Modality of a first conv from its input channel count (3 -> RGB, 2L -> Flow, odd 3L -> RGBDiff)."""
    if in_channels == 3:
        return 'RGB'
    if in_channels % 2 == 0 and in_channels % 3 != 0:
        return 'Flow'
    if in_channels % 3 == 0 and in_channels % 2 != 0:
        return 'RGBDiff'
    raise ValueError(f'cannot infer the source modality from a first conv with {in_channels} input '
                     'channels; pass src_modality')


def load_weights(model, state_dict, *, src_config=None, src_modality=None, drop_head=None,
                 allow_new_modules=False, strict=True):
    """Load ``state_dict`` into a TSN ``model``, adapting it; returns a report of what changed.

    - strips ``module.`` / ``_orig_mod.`` prefixes and adds ``base_model.`` to a bare backbone's state dict
      (``with_backbone_prefix``: TSM's online-demo MobileNetV2);
    - maps TSN <-> TSM keys (``.net`` shift/pool wrappers, ``.block`` non-local wrappers);
    - converts the first conv between modalities / frame counts by channel mean replicated (source
      modality from ``src_modality``, ``src_config['modality']`` or the channel count);
    - renames the head (``new_fc`` <-> ``base_model.fc``/``classifier``) and drops it when the class
      count differs (or ``drop_head=True``);
    - missing ``num_batches_tracked`` (pre-0.4.1 files) are kept at their init; missing parameters of
      non-local blocks or TIN (``NEW_MODULE_PARTS``) are kept at init only with ``allow_new_modules=True``;
    - anything else missing raises (``strict=False``: kept at init, logged and reported); a shape
      mismatch always raises; unexpected keys are logged and reported.
    ``report['changed']`` is True when anything was adapted, dropped or left at init.
    """
    if isinstance(state_dict.get('state_dict'), dict):  # a whole checkpoint was passed
        src_config = src_config or state_dict.get('config')
        state_dict = state_dict['state_dict']
    if src_modality is None and src_config is not None:
        src_modality = src_config.get('modality')
    stripped = strip_prefixes(state_dict)
    src = with_backbone_prefix(stripped)
    own = model.state_dict()
    report = {'changed': False, 'loaded': 0, 'renamed': 0, 'first_conv': None, 'head': None, 'missing': [], 'unexpected': [],
              'kept_init': []}
    report['shift_direction'] = shift_direction_change(src_config, model)
    report['backbone_prefix'] = src.keys() != stripped.keys()     # a bare backbone's keys got base_model.

    by_canon = {}
    for k in own:
        by_canon.setdefault(canonical_key(k), []).append(k)
    ambiguous = {c: ks for c, ks in by_canon.items() if len(ks) > 1}
    if ambiguous:
        raise RuntimeError(f'model keys collide after removing wrapper names: {list(ambiguous.items())[:3]}')

    # Head: rename the source head to the model's head name; drop it on a class-count change.
    own_head, src_head = _head_prefix(own), _head_prefix(src)
    own_multi, src_multi = _multi_head(own), _multi_head(src)
    if own_multi or src_multi:
        # Multi-head classifiers (ops.models.MultiHeadLinear): kept when the layouts agree (renamed between
        # new_fc and base_model.fc), else the source head is dropped and the model's keeps its init.
        own_head = own_multi[0] if own_multi else own_head
        src_head = src_multi[0] if src_multi else src_head
        own_layout, src_layout = (m[1] if m else None for m in (own_multi, src_multi))
        head_keys = [k for k in src if src_head is not None and k.startswith(src_head + '.')]
        if drop_head or own_layout != src_layout:
            for k in head_keys:
                src.pop(k)
            report['head'] = (f'dropped {src_head} (heads {heads_text(src_layout)}); {own_head} (heads '
                              f'{heads_text(own_layout)}) keeps its init')
        elif src_head != own_head:
            for k in head_keys:
                src[own_head + k[len(src_head):]] = src.pop(k)
            report['head'] = f'renamed {src_head} -> {own_head}'
    elif src_head is not None and own_head is not None:
        src_w, own_w = src[src_head + '.weight'], own[own_head + '.weight']
        if drop_head or (drop_head is None and src_w.shape != own_w.shape):
            for leaf in ('weight', 'bias'):
                src.pop(f'{src_head}.{leaf}', None)
            report['head'] = f'dropped {src_head} {tuple(src_w.shape)}; {own_head} {tuple(own_w.shape)} keeps its init'
        elif src_head != own_head:
            for leaf in ('weight', 'bias'):
                if f'{src_head}.{leaf}' in src:
                    src[f'{own_head}.{leaf}'] = src.pop(f'{src_head}.{leaf}')
            report['head'] = f'renamed {src_head} -> {own_head}'

    mapped = {}
    for k, v in src.items():
        target = k if k in own else by_canon.get(canonical_key(k), [None])[0]
        if target is None:
            report['unexpected'].append(k)
            continue
        if target != k:
            report['renamed'] += 1
        mapped[target] = v

    # First conv: convert between modalities / frame counts by channel mean. Video backbones keep theirs
    # (ILA takes RGB only; Swin gives Flow to its 3-channel patch embedding as (x, y, 0); STLT reads boxes).
    video = getattr(model, 'is_video_model', False)
    conv_key = None if video or model.modality == 'Layout' else \
        'base_model.' + first_conv_name(model.base_model) + '.weight'
    if conv_key in mapped:
        w_src, w_own = mapped[conv_key], own[conv_key]
        from_mod = src_modality or infer_modality(w_src.shape[1])
        to_mod = model.modality
        # Audio repeats one spectrogram over 3 channels: an RGB kernel and its channel mean compute the same
        # function on it, so RGB <-> Audio (and a 3-channel file of unknown modality) needs no conversion.
        same_input = w_src.shape[1] == w_own.shape[1] == 3 and {from_mod, to_mod} <= {'RGB', 'Audio'}
        if (w_src.shape[1] != w_own.shape[1] or from_mod != to_mod) and not same_input:
            mapped[conv_key] = mean_expand_kernel(w_src, w_own.shape[1])
            report['first_conv'] = {'key': conv_key, 'from_modality': from_mod, 'to_modality': to_mod,
                                    'from_shape': tuple(w_src.shape), 'to_shape': tuple(w_own.shape)}

    bad = [f'{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}'
           for k, v in mapped.items() if v.shape != own[k].shape]
    if bad:
        raise RuntimeError(f'shape mismatch loading weights: {bad[:10]}')

    head_dropped = report['head'] is not None and report['head'].startswith('dropped')
    # Loaded first, so that modules can fill keys of their earlier layouts (MSN's DCN bias: zeros) before
    # what is missing is judged; a fatal miss below still raises (the caller discards the model).
    missing = list(model.load_state_dict(mapped, strict=False).missing_keys)
    fatal = []
    for k in missing:
        if k.endswith('num_batches_tracked'):
            report['kept_init'].append(k)
        elif head_dropped and own_head is not None and k.startswith(own_head + '.'):
            report['kept_init'].append(k)
        elif allow_new_modules and any(part in k for part in NEW_MODULE_PARTS):
            report['kept_init'].append(k)
        else:
            fatal.append(k)
    report['missing'] = missing
    if fatal and not strict:
        report['kept_init'].extend(fatal)
        fatal = []
    if fatal:
        raise RuntimeError(f'weights missing from the checkpoint: {fatal[:10]} ({len(fatal)} in total); '
                           f'unexpected in the file: {report["unexpected"][:10]}')
    report['loaded'] = len(mapped)
    report['changed'] = bool(report['renamed'] or report['backbone_prefix'] or report['first_conv'] or report['head']
                             or missing or report['unexpected'] or report['shift_direction'])
    if report['unexpected']:
        logger.warning('load_weights: %d unexpected keys ignored: %s', len(report['unexpected']),
                       report['unexpected'][:10])
    if missing:
        logger.info('load_weights: %d keys kept at init: %s', len(missing), missing[:10])
    for what in ('first_conv', 'head'):
        if report[what]:
            logger.info('load_weights: %s: %s', what, report[what])
    if report['shift_direction']:
        logger.warning('load_weights: shift direction %s: the weights were trained with the other temporal '
                       'shift', report['shift_direction'])
    return report


def recorded_shift_direction(config):
    """'bi' / 'uni' for a config with the temporal shift (files written before the option: 'bi'), else None."""
    if not config or not (config.get('is_shift') or config.get('temporal_module') == 'tsm'):
        return None
    return config.get('shift_direction', 'bi')


def shift_direction_change(src_config, model):
    """'bi -> uni' when weights of one shift direction go into a model of the other, else None."""
    src = recorded_shift_direction(src_config)
    temporal = getattr(model, 'temporal', None)       # a TSN's TemporalConfig
    own = temporal.shift_direction if temporal is not None and temporal.module == 'tsm' else None
    if src is None or own is None or src == own:
        return None
    return f'{src} -> {own}'


def check_shift_direction(model, config, path):
    """Resuming a run must not change the shift direction its checkpoint was trained with."""
    change = shift_direction_change(config, model)
    if change:
        raise ValueError(f'{path}: the checkpoint was trained with shift direction {change.split()[0]} but '
                         f'the model is built with {change.split()[-1]} (--shift_direction)')


# ---------------------------------------------------------------------- configs of released files
_TSM_NAME = re.compile(
    r'^TSM_(?P<dataset>[A-Za-z0-9\-]+)_(?P<modality>RGBDiff|RGB|Flow)_(?P<arch>.+?)'
    r'(?:_shift(?P<shift_div>\d+)_(?P<shift_place>blockres|block))?(?P<tpool>_tpool)?'
    r'_(?P<consensus>avg|identity)_segment(?P<segments>\d+)_e(?P<epochs>\d+)(?P<suffix>(?:_[A-Za-z0-9]+)*)'
    r'\.pth(?:\.tar)?$')


def config_from_tsm_filename(name):
    """TSN keywords from TSM's store name, e.g. ``TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth``.

    Also TSN names (no ``_shift``), ``_tpool``, and the ``_dense`` / ``_nl`` suffixes. The result has
    no ``num_class`` (read it from the state dict). Raises when the name does not follow the convention.
    """
    base = os.path.basename(str(name))
    m = _TSM_NAME.match(base)
    if not m:
        raise ValueError(f'{base!r} does not follow TSM_{{dataset}}_{{modality}}_{{arch}}[_shift{{div}}_{{place}}]'
                         '[_tpool]_{consensus}_segment{T}_e{E}[_dense][_nl].pth; pass the settings explicitly')
    suffixes = set(m['suffix'].split('_')[1:])
    cfg = {'modality': m['modality'], 'base_model': m['arch'], 'consensus_type': m['consensus'],
           'num_segments': int(m['segments']), 'is_shift': m['shift_div'] is not None,
           'temporal_pool': m['tpool'] is not None, 'non_local': 'nl' in suffixes}
    if m['shift_div'] is not None:
        cfg['shift_div'] = int(m['shift_div'])
        cfg['shift_place'] = m['shift_place']
    return cfg


def _resnet_arch(sd):
    counts = []
    for layer in ('layer1', 'layer2', 'layer3', 'layer4'):
        idx = {int(k.split('.')[2]) for k in sd if k.startswith(f'base_model.{layer}.')
               and k.split('.')[2].isdigit()}
        counts.append(max(idx) + 1 if idx else 0)
    bottleneck = any('.conv3.' in k for k in sd)
    table = {((2, 2, 2, 2), False): 'resnet18', ((3, 4, 6, 3), False): 'resnet34',
             ((3, 4, 6, 3), True): 'resnet50', ((3, 4, 23, 3), True): 'resnet101',
             ((3, 8, 36, 3), True): 'resnet152'}
    return table.get((tuple(counts), bottleneck))


def infer_config_from_state_dict(state_dict):
    """What a TSM state dict's keys reveal: arch, modality, num_class, dropout, shift, tpool, non-local.
    A bare backbone's state dict (TSM's online demo) reads as its TSN with the backbone's own head."""
    sd = with_backbone_prefix(state_dict)
    cfg = {}
    if any(k.startswith('base_model.inception_') for k in sd):
        cfg['base_model'], conv = 'BNInception', 'base_model.conv1_7x7_s2.weight'
    elif any(k.startswith('base_model.features.') for k in sd):
        cfg['base_model'], conv = 'mobilenetv2', 'base_model.features.0.0.weight'
    else:
        arch = _resnet_arch({canonical_key(k): v for k, v in sd.items()})
        if arch:
            cfg['base_model'] = arch
        conv = 'base_model.conv1.weight'
    if conv in sd:
        c = sd[conv].shape[1]
        cfg['modality'] = infer_modality(c)
        cfg['new_length'] = c // CHANNELS[cfg['modality']]
    head = _head_prefix(sd)
    if head is not None:
        cfg['num_class'] = sd[head + '.weight'].shape[0]
        cfg['dropout'] = 0.8 if head == 'new_fc' else 0.0
    cfg['non_local'] = any('.nl.' in k for k in sd)
    cfg['temporal_pool'] = any(k.startswith('base_model.layer2.net.') for k in sd)
    shifted_conv = any(re.search(r'\.conv1\.net\.weight$', k) for k in sd)
    shifted_block = any(re.search(r'\.layer\d\.\d+\.net\.conv1\.weight$', k) for k in sd)
    cfg['is_shift'] = shifted_conv or shifted_block or any('.conv.0.net.' in k for k in sd)
    if shifted_block:
        cfg['shift_place'] = 'block'
    elif cfg['is_shift']:
        cfg['shift_place'] = 'blockres'
    return cfg


# TSN keywords of earlier versions that are now keys of its backbone_kwargs (ILA's options).
_OLD_BACKBONE_KWARGS = {'clip_weights': 'clip_weights', 'trust_jit_checkpoint': 'trust_jit_checkpoint',
                        'finetune_backbone': 'finetune_backbone', 'ila_pair_net': 'pair_net'}


def upgrade_config(cfg):
    """A saved TSN config in today's layout: ILA's options, once top-level keywords, go to backbone_kwargs."""
    old = {new: cfg[key] for key, new in _OLD_BACKBONE_KWARGS.items() if key in cfg}
    if not old:
        return dict(cfg)
    cfg = {k: v for k, v in cfg.items() if k not in _OLD_BACKBONE_KWARGS}
    cfg['backbone_kwargs'] = {**old, **cfg.get('backbone_kwargs', {})}
    return cfg


def without_pretrained(cfg):
    """TSN keywords for a model whose weights come from a state dict: ``pretrain`` 'none', and the
    backbone's weight files (ILA's clip_weights) are not read."""
    cfg = dict(cfg, pretrain='none')
    if cfg.get('backbone_kwargs'):
        files = archs.backbone_traits(cfg['base_model']).weight_kwargs
        cfg['backbone_kwargs'] = {k: v for k, v in cfg['backbone_kwargs'].items() if k not in files}
    return cfg


def model_config_from_checkpoint(ckpt, path=None, **overrides):
    """TSN keywords to rebuild the model stored in ``ckpt`` (a loaded checkpoint dict or state dict).

    Our checkpoints carry ``config``; for released TSM files the settings come from the state dict's
    keys (a file in the layout of TSM's online demo: ``TSM_ONLINE_DEMO``, which its keys do not show),
    then TSM's file-name convention (the file name of ``path``), then ``overrides`` (explicit
    flags win; ``arch`` is accepted for ``base_model``; None values are ignored). ``pretrain`` is
    'none' (and the backbone's weight files are dropped) unless overridden, since the weights come from
    the checkpoint. Configs of earlier versions are brought to today's layout (``upgrade_config``).
    """
    if 'arch' in overrides:
        arch = overrides.pop('arch')
        overrides.setdefault('base_model', arch)
    if isinstance(ckpt, dict) and isinstance(ckpt.get('config'), dict):
        cfg = upgrade_config(ckpt['config'])
    else:
        sd = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else ckpt
        cfg = infer_config_from_state_dict(sd)
        if is_tsm_online_demo_layout(sd):       # its keys show no shift: the demo's settings
            logger.info('%s: the layout of TSM\'s online demo (bare MobileNetV2): %s', path, TSM_ONLINE_DEMO)
            cfg.update(TSM_ONLINE_DEMO)
        named = None
        if path is not None:
            try:
                named = config_from_tsm_filename(path)
            except ValueError as e:  # not a TSM-convention name: keys and overrides must suffice
                logger.info('%s', e)
        if named is not None:
            # The tensors decide what they show; the name adds T, shift_div and the modality (3 input
            # channels may be RGB or RGBDiff with one difference).
            channels = cfg['new_length'] * CHANNELS[cfg['modality']] if 'new_length' in cfg else None
            for k, v in named.items():
                cfg.setdefault(k, v)
            cfg['modality'] = named['modality']
            if channels is not None:
                cfg['new_length'] = channels // CHANNELS[named['modality']]
    pretrain = overrides.pop('pretrain', 'none')
    cfg['pretrain'] = pretrain
    wanted = overrides.get('shift_direction')
    recorded = cfg.get('shift_direction') if isinstance(ckpt, dict) and isinstance(ckpt.get('config'), dict) else None
    if wanted is not None and recorded is not None and wanted != recorded:
        raise ValueError(f'the checkpoint was trained with shift direction {recorded!r}; it cannot be '
                         f'evaluated as {wanted!r} (drop --shift_direction)')
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    missing = [k for k in ('num_class', 'num_segments', 'modality', 'base_model') if k not in cfg]
    if missing:
        raise ValueError(f'cannot determine {missing} from the checkpoint; pass them explicitly '
                         '(or a TSM-convention file name)')
    return without_pretrained(cfg) if pretrain == 'none' else cfg


def checkpoint_class_names(ckpt):
    """Class names a loaded checkpoint carries, or None: its `class_names` (converted files), else the
    training set's categories that main.py records in `data` (ops.dataset_config.data_record)."""
    if not isinstance(ckpt, dict):
        return None
    names = ckpt.get('class_names')
    data = ckpt.get('data')
    if not names and isinstance(data, dict):
        names = data.get('categories')
    return names or None
