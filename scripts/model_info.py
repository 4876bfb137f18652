"""Parameters, FLOPs per clip and (optionally) state-dict keys of any TSN configuration.

Example (CPU, a few seconds):
    python scripts/model_info.py --arch resnet50 --num_segments 8 --shift --num_class 174 --keys
Expected for that line: 23.86 M parameters, 65.4 GFLOPs (32.7 GMACs) per 8-frame 224x224 clip (FLOPs = 2 x MACs,
counted by torch.utils.flop_counter on one forward pass; TSM's papers quote MACs, i.e. half).
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from archs import BACKBONES  # noqa: E402
from ops.flops import forward_flops  # noqa: E402
from ops.checkpoint import load_checkpoint, model_config_from_checkpoint  # noqa: E402
from ops.modality import MODALITIES  # noqa: E402
from ops.models import CONSENSUS_TYPES, TSN  # noqa: E402
from ops.temporal_modules import TEMPORAL_MODULES  # noqa: E402
from ops.temporal_shift import SHIFT_PLACES  # noqa: E402


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--arch', default='resnet50', choices=sorted(BACKBONES))
    p.add_argument('--num_segments', type=int, default=8)
    p.add_argument('--modality', default='RGB', choices=MODALITIES)
    p.add_argument('--new_length', type=int, default=None)
    p.add_argument('--num_class', type=int, default=400)
    p.add_argument('--consensus_type', default='avg', choices=CONSENSUS_TYPES)
    p.add_argument('--dropout', type=float, default=0.8)
    p.add_argument('--shift', action='store_true', help='temporal shift (TSM)')
    p.add_argument('--shift_div', type=int, default=8)
    p.add_argument('--shift_place', default='blockres', choices=SHIFT_PLACES)
    p.add_argument('--temporal_pool', action='store_true')
    p.add_argument('--non_local', action='store_true')
    p.add_argument('--temporal_module', default=None, choices=tuple(TEMPORAL_MODULES))
    p.add_argument('--input_size', type=int, default=224)
    p.add_argument('--batch', type=int, default=1, help='clips in the FLOP-counting forward pass')
    p.add_argument('--checkpoint', default=None, help='describe the model stored in this checkpoint instead')
    p.add_argument('--keys', action='store_true', help='list state-dict keys and shapes')
    p.add_argument('--json', action='store_true', help='print one JSON object')
    return p


def build(args):
    if args.checkpoint:
        cfg = model_config_from_checkpoint(load_checkpoint(args.checkpoint), path=args.checkpoint)
        return TSN.from_config(cfg)
    # TSM's flat keywords, as a checkpoint's config: --shift is is_shift, and contradicts another module
    return TSN.from_config(dict(
        num_class=args.num_class, num_segments=args.num_segments, modality=args.modality, base_model=args.arch,
        new_length=args.new_length, consensus_type=args.consensus_type, dropout=args.dropout, pretrain='none',
        is_shift=args.shift, shift_div=args.shift_div, shift_place=args.shift_place,
        temporal_pool=args.temporal_pool, non_local=args.non_local, temporal_module=args.temporal_module,
        input_size=args.input_size))


def count_flops(model, batch=1):
    """FLOPs of one forward pass on ``batch`` clips at the model's crop size, divided by ``batch``."""
    x = torch.zeros(batch, model.input_channels, model.crop_size, model.crop_size)
    return forward_flops(model, x) / batch


def main(args):
    model = build(args)
    n_params = sum(p.numel() for p in model.parameters())
    flops = count_flops(model, args.batch)
    info = {'config': model.config(), 'params': n_params, 'flops_per_clip': flops}
    if args.json:
        if args.keys:
            info['keys'] = {k: list(v.shape) for k, v in model.state_dict().items()}
        print(json.dumps(info))
        return info
    cfg = model.config()
    print(f"model: {cfg['base_model']} {cfg['modality']} T={cfg['num_segments']} "
          f"temporal_module={cfg['temporal_module']} input {model.input_channels}x{model.crop_size}x{model.crop_size}")
    print(f'parameters: {n_params / 1e6:.2f} M')
    print(f'FLOPs per clip: {flops / 1e9:.2f} G  (MACs {flops / 2e9:.2f} G)')
    if args.keys:
        for k, v in model.state_dict().items():
            print(f"{k} {tuple(v.shape)}")
    return info


if __name__ == '__main__':
    main(get_args_parser().parse_args())
