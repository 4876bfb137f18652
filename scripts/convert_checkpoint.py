"""Convert released weights into this project's checkpoints (state dict + `config`, optional class names).

    python scripts/convert_checkpoint.py mmaction2 tsm_r50_1x1x8_50e_kinetics400_rgb.pth tsm_k400.pth.tar
    python scripts/convert_checkpoint.py tdn TDN_kinetics_RGB_resnet50_avg_segment8.pth.tar tdn_k400.pth.tar \
        --num_segments 8 --category_file kinetics_classes.txt

The result opens with test_models.py, predict.py, scripts/export.py and main.py --tune_from.

mmaction2 (TSN / TSM / TIN ResNets, 0.x and 1.x): `backbone.*` -> `base_model.*`, ConvModule's
`convK.conv` / `convK.bn` -> `convK` / `bnK` (the stem's `conv1.bn` -> `bn1`), `downsample.conv|bn` ->
`downsample.0|1`, TSM's `conv1.conv.net` -> `conv1.net`, TIN's `conv1.conv.net1.{offset,weight}_net` ->
`conv1.{offset,weight}_net` and `conv1.conv.net2` -> `conv1.net`, `cls_head.fc_cls` -> `new_fc`. The
temporal module is read from the keys (`.net1.offset_net.`: TIN; `.conv.net.`: TSM; neither: TSN), and so
are temporal pooling (`layer2.net.*`) and non-local blocks (NL3DWrapper `layerK.i.block.*` and mmcv
NonLocal3d `non_local_block.{g.0,theta,phi.0}.conv` -> `nl.{g.0,theta,phi.0}`, `conv_out.conv|bn` ->
`nl.W.0|1`; conv_out has no bias there: ours gets zeros). Non-local files need --non_local_mode
embedded_gaussian (or a saved config that says so): mmcv's dot_product mode has the same tensors and
another function, and is refused, as are its gaussian mode and blocks without sub-sampling.

TDN (MCG-NJU/TDN releases): `base_model.conv1_5.0|1` (S-TDM conv, BN) -> `short_term.conv|bn`,
`resnext_layer1` -> `motion_layer1`, `layerK_bak` -> `layerK`, L-TDM `mse.conv1|bn1|conv2` ->
`excite.reduce|reduce_bn|smooth`, `mse.conv3_smallscale2|bn3_smallscale2` (on the 2x2-pooled difference)
-> `excite.coarse|coarse_bn`, `mse.conv3_smallscale4|bn3_smallscale4` (full resolution) ->
`excite.fine|fine_bn`, `mse.conv3|bn3` -> `excite.expand|expand_bn`, `shift.conv` -> `shift.conv`;
`conv1_temp` / `conv1_temp1` are not used by TDN's forward and are dropped. TDN's ResNet convolutions
have biases, this project's do not: each bias b is folded into the BatchNorm that follows the conv
(running_mean - b), which is the same function in evaluation.

Video Swin (`videoswin`: the original SwinTransformer/Video-Swin-Transformer releases, mmaction2 1.x, or
torchvision's swin3d_* files): `backbone.layers.i.blocks.j` -> `base_model.features.{2i}.j` (`mlp.fc1|fc2`
-> `mlp.0|3`), `backbone.layers.i.downsample` -> `base_model.features.{2i+1}`, `backbone.norm` (mmaction2
1.x: `norm3`) -> `base_model.norm`, `cls_head.fc_cls` (torchvision: `head`) -> `new_fc`; the size
(swin3d_t/s/b) is read from the tensors (archs.swin3d.convert_videoswin_state_dict).

The report lists every source key (mapped, folded or dropped); a tensor the model needs and the file
does not have is an error. Nothing in a source file is executed (weights_only loading).
"""
import argparse
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from ops.checkpoint import infer_config_from_state_dict, load_checkpoint, load_weights, save_checkpoint, \
    strip_prefixes  # noqa: E402
from ops.dataset_config import read_categories  # noqa: E402
from ops.models import TSN  # noqa: E402

SOURCES = ('mmaction2', 'tdn', 'videoswin')
# Keys of the source that the model does not use, by source: (pattern, reason).
DROPPED = {
    'mmaction2': [(r'^data_preprocessor\.', 'input normalisation buffers (this project: model.normalization())')],
    'tdn': [(r'^base_model\.conv1_temp1?\.', 'unused by TDN\'s forward (left from building S-TDM)')],
}
# Source conv -> the BatchNorm after it, for bias folding (TDN's ResNets).
_BN_AFTER = {'conv1': 'bn1', 'conv2': 'bn2', 'conv3': 'bn3', 'downsample.0': 'downsample.1'}
# mmcv NonLocal3d's ConvModules (g and phi followed by a max-pool when sub-sampled) -> ops/non_local.py's block.
_MMCV_NON_LOCAL = {'g.0.conv': 'g.0', 'theta.conv': 'theta', 'phi.0.conv': 'phi.0', 'conv_out.conv': 'W.0',
                   'conv_out.bn': 'W.1'}
NON_LOCAL_MODES = ('embedded_gaussian', 'dot_product', 'gaussian')
_TDN_MSE = {'conv1': 'reduce', 'bn1': 'reduce_bn', 'conv2': 'smooth', 'conv3_smallscale2': 'coarse',
            'bn3_smallscale2': 'coarse_bn', 'conv3_smallscale4': 'fine', 'bn3_smallscale4': 'fine_bn',
            'conv3': 'expand', 'bn3': 'expand_bn'}


# ---------------------------------------------------------------------------------------------- key rules
def mmaction2_key(key):
    """mmaction2 key -> this project's key, or None when the rules do not cover it."""
    if key.startswith('cls_head.fc_cls.'):
        return 'new_fc.' + key[len('cls_head.fc_cls.'):]
    if not key.startswith('backbone.'):
        return None
    k = 'base_model.' + key[len('backbone.'):]
    nl = re.match(r'^(.*)\.non_local_block\.(.+)\.(conv|bn)\.([a-z_]+)$', k)
    if nl:                                                    # mmcv NonLocal3d (embedded Gaussian, sub-sampled)
        part = _MMCV_NON_LOCAL.get(f'{nl.group(2)}.{nl.group(3)}')
        return f'{nl.group(1)}.nl.{part}.{nl.group(4)}' if part else None
    k = re.sub(r'^base_model\.conv1\.conv\.', 'base_model.conv1.', k)
    k = re.sub(r'^base_model\.conv1\.bn\.', 'base_model.bn1.', k)
    k = k.replace('.conv1.conv.net1.', '.conv1.')            # TIN offset_net / weight_net
    k = k.replace('.conv1.conv.net2.', '.conv1.net.')        # TIN's wrapped conv
    k = k.replace('.conv1.conv.net.', '.conv1.net.')         # TSM's shifted conv
    k = re.sub(r'\.conv(\d)\.conv\.', r'.conv\1.', k)
    k = re.sub(r'\.conv(\d)\.bn\.', r'.bn\1.', k)
    k = k.replace('.downsample.conv.', '.downsample.0.').replace('.downsample.bn.', '.downsample.1.')
    return k


def tdn_key(key):
    """TDN key (without DDP's `module.`) -> this project's key, or None."""
    if key.startswith('new_fc.') or key.startswith('base_model.fc.'):
        return key
    m = re.match(r'^base_model\.(.*)$', key)
    if not m:
        return None
    rest = m.group(1)
    if re.match(r'^(conv1|bn1)\.', rest):
        return key
    m = re.match(r'^conv1_5\.([01])\.(.*)$', rest)
    if m:
        return f"base_model.short_term.{'conv' if m.group(1) == '0' else 'bn'}.{m.group(2)}"
    m = re.match(r'^resnext_layer1\.(.*)$', rest)
    if m:
        return 'base_model.motion_layer1.' + m.group(1)
    m = re.match(r'^layer([1-4])_bak\.(\d+)\.(.*)$', rest)
    if not m:
        return None
    stage, block, tail = m.groups()
    mse = re.match(r'^mse\.([a-z0-9_]+)\.(.*)$', tail)
    if mse:
        if mse.group(1) not in _TDN_MSE:
            return None
        tail = f'excite.{_TDN_MSE[mse.group(1)]}.{mse.group(2)}'
    return f'base_model.layer{stage}.{block}.{tail}'


def _bn_after_conv(key):
    """'...convK.bias' / '...downsample.0.bias' of a ResNet conv -> its BatchNorm's prefix, else None."""
    for conv, bn in _BN_AFTER.items():
        suffix = f'.{conv}.bias'
        if key.endswith(suffix) and '.excite.' not in key:
            return key[:-len(suffix)] + f'.{bn}'
    return None


def convert_state_dict(source, state_dict):
    """-> (converted state dict, report {'mapped': [(src, dst)], 'folded': [(bias, running_mean)],
    'dropped': [(src, reason)], 'zeros': [(dst, reason)]}). Conv biases (TDN) are folded into the next
    BatchNorm's running mean; the non-local output conv (mmcv: no bias) gets a zero bias."""
    rule = {'mmaction2': mmaction2_key, 'tdn': tdn_key}[source]
    out, report = {}, {'mapped': [], 'folded': [], 'dropped': [], 'zeros': []}
    biases = {}
    # The report names the file's keys; the rules see them without DDP / compile prefixes.
    for original, (key, value) in zip(state_dict, strip_prefixes(state_dict).items()):
        reason = next((why for pattern, why in DROPPED[source] if re.search(pattern, key)), None)
        if reason:
            report['dropped'].append((original, reason))
            continue
        target = rule(key)
        if target is None:
            report['dropped'].append((original, 'no rule for this key (not part of the supported models)'))
            continue
        if source == 'tdn' and _bn_after_conv(target):
            biases[original] = (target, value)
            continue
        out[target] = value
        report['mapped'].append((original, target))
    for key in [k for k in out if k.endswith('.nl.W.0.weight')]:
        bias = key[:-len('weight')] + 'bias'
        if bias not in out:     # mmcv's conv_out is a ConvModule with a norm: its conv has no bias
            out[bias] = torch.zeros(out[key].shape[0], dtype=out[key].dtype)
            report['zeros'].append((bias, 'mmcv\'s conv_out has no bias (a BatchNorm follows it)'))
    for key, (target, bias) in biases.items():
        mean_key = _bn_after_conv(target) + '.running_mean'
        if mean_key not in out:
            raise ValueError(f'{key}: its BatchNorm {mean_key} is not in the file, cannot fold the bias')
        # BN(conv(x) + b) = gamma * (conv(x) - (mu - b)) / sigma + beta: the bias moves into mu.
        out[mean_key] = out[mean_key] - bias.to(out[mean_key].dtype)
        report['folded'].append((key, mean_key))
    return out, report


def config_non_local_mode(ckpt):
    """The non-local `mode` written in an mmaction2 checkpoint's saved config text (meta.cfg), or None."""
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    text = meta.get('cfg') if isinstance(meta, dict) else None
    if not isinstance(text, str):
        return None
    m = re.search(r"non_local_cfg\s*=\s*dict\([^)]*?mode\s*=\s*['\"](\w+)['\"]", text)
    return m.group(1) if m else None


def check_mmaction2_non_local(keys, mode, temporal_pool):
    """Refuse, with the reason, mmaction2 non-local TSMs that ops/non_local.py does not compute.

    Its block is mmcv's NonLocal3d in mode embedded_gaussian with sub_sample=True and use_scale=False
    (mmaction2's TSM configs); dot_product has the same tensors, so ``mode`` (--non_local_mode or the
    file's meta.cfg) must say which one the file is."""
    nl = [k for k in keys if '.non_local_block.' in k]
    if not nl:
        return
    if not any('.non_local_block.theta.' in k for k in nl):
        raise ValueError("its non-local blocks have no theta/phi convolutions: mmcv's mode 'gaussian', which "
                         "this project's non-local block (embedded Gaussian, ops/non_local.py) does not compute; "
                         'not converted')
    if any('.non_local_block.g.conv.' in k for k in nl):
        raise ValueError('its non-local blocks have no max-pool after g/phi (sub_sample=False); this project\'s '
                         'block sub-samples as mmaction2\'s TSM configs do; not converted')
    if temporal_pool:
        raise ValueError('it has non-local blocks and temporal pooling: mmaction2 builds those blocks with the '
                         'unpooled number of segments, which after the pooling groups frames of different clips; '
                         'this project\'s model uses T/2 there, another function; not converted')
    if mode is None:
        raise ValueError("it has non-local blocks, and mmcv's modes embedded_gaussian and dot_product hold the "
                         'same tensors: pass --non_local_mode (the mode of the non_local_cfg in its mmaction2 '
                         'config; only embedded_gaussian converts)')
    if mode != 'embedded_gaussian':
        raise ValueError(f"its non-local blocks are mmcv's mode {mode!r} (pairwise weights "
                         f"{'theta.phi / N, no softmax' if mode == 'dot_product' else 'softmax of x.x'}); this "
                         "project's block computes embedded_gaussian (softmax of theta.phi); not converted")


def non_local_places(keys):
    """Sorted 'layerK.i' of the residual blocks that carry a non-local block."""
    return sorted({m.group(1) for k in keys for m in [re.search(r'(layer\d\.\d+)\.nl\.', k)] if m})


def model_config(source, converted, num_segments, shift_div=None, tin_shift_div=None):
    """TSN keywords for the converted weights: architecture, modality and classes from the tensors."""
    cfg = infer_config_from_state_dict(converted)
    if 'base_model' not in cfg:
        raise ValueError(f'the keys converted as a {source} checkpoint are not a torchvision ResNet: is it a '
                         f'{source} file? (supported: ResNet TSN/TSM/TIN from mmaction2, TDN ResNets, Video Swin)')
    if 'num_class' not in cfg:
        raise ValueError('no classification head (cls_head.fc_cls / new_fc) in the file')
    keyword = dict(num_class=cfg['num_class'], num_segments=num_segments, modality=cfg.get('modality', 'RGB'),
                   pretrain='none', dropout=0.5 if 'new_fc.weight' in converted else 0.0)
    if source == 'tdn':
        return dict(keyword, base_model=cfg['base_model'], temporal_module='tdn')
    keyword.update(base_model=cfg['base_model'], new_length=cfg.get('new_length'))
    if any('.offset_net.' in k for k in converted):
        keyword.update(temporal_module='tin', tin_shift_div=tin_shift_div or 4)
    elif cfg.get('is_shift'):
        keyword.update(is_shift=True, shift_div=shift_div or 8, shift_place=cfg['shift_place'],
                       temporal_pool=cfg['temporal_pool'])
    return dict(keyword, non_local=cfg['non_local'])


def swin3d_arch(state_dict):
    """The archs.swin3d size whose embedding width, blocks per stage and heads a torchvision-layout state
    dict has."""
    from archs.swin3d import SWIN3D_CONFIGS
    depths, heads = [0] * 4, [0] * 4
    for key, value in state_dict.items():
        m = re.match(r'features\.(\d+)\.\d+\.attn\.relative_position_bias_table$', key)
        if m and int(m[1]) // 2 < 4:
            depths[int(m[1]) // 2] += 1
            heads[int(m[1]) // 2] = value.shape[1]
    if 'patch_embed.proj.weight' not in state_dict:
        raise ValueError('no patch_embed.proj.weight (backbone.patch_embed.proj.weight): not a Video Swin file')
    found = dict(embed_dim=state_dict['patch_embed.proj.weight'].shape[0], depths=tuple(depths),
                 num_heads=tuple(heads))
    for name, config in SWIN3D_CONFIGS.items():
        if config == found:
            return name
    raise ValueError(f'no swin3d size has embed_dim {found["embed_dim"]}, depths {found["depths"]}, heads '
                     f'{found["num_heads"]} (known: {sorted(SWIN3D_CONFIGS)})')


def _convert_videoswin(sd, num_segments):
    """-> (this project's TSN state dict, report, TSN keywords) for a Video Swin file."""
    from archs.swin3d import SWIN3D_ARCHS, convert_videoswin_state_dict
    arch = swin3d_arch(convert_videoswin_state_dict(sd)[0])
    converted, report = convert_videoswin_state_dict(sd, SWIN3D_ARCHS[arch](pretrain='none').state_dict())
    if 'head.weight' not in converted:
        raise ValueError('no classification head (cls_head.fc_cls / head) in the file')

    def ours(key):
        return 'new_fc.' + key[len('head.'):] if key.startswith('head.') else 'base_model.' + key
    report['mapped'] = [(src, ours(dst)) for src, dst in report['mapped']]
    report['folded'], report['zeros'] = [], []
    config = dict(num_class=converted['head.weight'].shape[0], num_segments=num_segments, modality='RGB',
                  base_model=arch, pretrain='none', dropout=0.0)
    return {ours(k): v for k, v in converted.items()}, report, config


def convert(source, in_path, out_path, num_segments=8, shift_div=None, tin_shift_div=None, class_names=None,
            non_local_mode=None):
    """Convert a file; returns (report, config). Raises ValueError / RuntimeError naming what is wrong."""
    if source not in SOURCES:
        raise ValueError(f'unknown source {source!r}; allowed: {SOURCES}')
    ckpt = load_checkpoint(in_path)
    sd = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f'{in_path}: no state dict of tensors (top-level keys {list(ckpt)[:8]})')
    if source == 'videoswin':
        converted, report, config = _convert_videoswin(sd, num_segments)
    else:
        converted, report = convert_state_dict(source, sd)
        if source == 'mmaction2':
            tpool = any('.layer2.net.' in k for k in sd)
            check_mmaction2_non_local(list(sd), non_local_mode or config_non_local_mode(ckpt), tpool)
        config = model_config(source, converted, num_segments, shift_div, tin_shift_div)
    model = TSN.from_config(config)
    own = model.state_dict()
    if non_local_places(converted) != non_local_places(own):
        raise ValueError(f'{in_path}: non-local blocks at {non_local_places(converted)}; this project places them '
                         f'at {non_local_places(own)} (every other block of layer2 and layer3, as TSM and '
                         'mmaction2\'s ResNet-50 configs); not converted')
    missing = [k for k in own if k not in converted and not k.endswith('num_batches_tracked')]
    if missing:
        raise RuntimeError(f'{in_path}: {len(missing)} tensors of the {source} model are not in the file, '
                           f'e.g. {missing[:8]}')
    load_weights(model, converted, strict=True)
    if class_names is not None and len(class_names) != config['num_class']:
        raise ValueError(f'{len(class_names)} class names for a {config["num_class"]}-class head')
    report['kept_init'] = [k for k in own if k not in converted]
    state = {'epoch': 0, 'arch': config['base_model'], 'state_dict': model.state_dict(), 'optimizer': {},
             'best_prec1': 0.0, 'config': model.config(),
             'converted_from': {'source': source, 'file': os.path.abspath(in_path)}}
    if class_names is not None:
        state['class_names'] = list(class_names)
    save_checkpoint(state, out_path)
    return report, model.config()


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", choices=SOURCES)
    p.add_argument("input", help="released checkpoint")
    p.add_argument("output", help="this project's checkpoint (written atomically)")
    p.add_argument("--num_segments", type=int, default=8, help="T the weights were trained with")
    p.add_argument("--shift_div", type=int, default=None, help="TSM: 1/shift_div channels shifted each way [8]")
    p.add_argument("--tin_shift_div", type=int, default=None, help="TIN: 1/shift_div channels interlaced [4]")
    p.add_argument("--non_local_mode", default=None, choices=NON_LOCAL_MODES,
                   help="mmaction2 non-local TSM: the mode of its non_local_cfg (only embedded_gaussian converts; "
                        "default: the file's saved config, if it has one)")
    p.add_argument("--category_file", default=None, help="class names stored in the checkpoint")
    p.add_argument("--quiet", action="store_true", help="print the counts, not every key")
    return p


def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    for name in ("num_segments", "shift_div", "tin_shift_div"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    try:
        names = read_categories(args.category_file) if args.category_file else None
        report, config = convert(args.source, args.input, args.output, args.num_segments, args.shift_div,
                                 args.tin_shift_div, names, args.non_local_mode)
    except (OSError, RuntimeError, ValueError) as exc:
        print(f'convert_checkpoint: {args.input}: {exc}', file=sys.stderr)
        return 1
    if not args.quiet:
        for src, dst in report['mapped']:
            print(f'mapped  {src} -> {dst}')
        for src, dst in report['folded']:
            print(f'folded  {src} -> {dst} (subtracted)')
        for dst, why in report['zeros']:
            print(f'zeros   {dst}: {why}')
        for src, why in report['dropped']:
            print(f'dropped {src}: {why}')
        for k in report['kept_init']:
            print(f'init    {k} (a counter; not in the file)')
    arch = config['base_model'] + (f" + {config['temporal_module']}" if config['temporal_module'] else '') + (
        ' + temporal pool' if config['temporal_pool'] else '') + (' + non-local' if config['non_local'] else '')
    print(f"{args.output}: {arch}, {config['num_class']} classes, {config['num_segments']} segments, "
          f"{config['modality']}; {len(report['mapped'])} mapped, {len(report['folded'])} biases folded, "
          f"{len(report['dropped'])} dropped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
