"""Defaults a new user meets first (issue 29): what --help says about on/off flags, and DataLoader workers on a
small machine."""
import argparse
import importlib
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from opts import get_test_parser, get_train_parser
from tests.test_predict import predict   # the entry point, imported past tests/test_models.py

SCRIPTS = ('extract_frames', 'extract_flow', 'check_data', 'pack_hdf5', 'show_sampling', 'build_file_list')


def _parsers():
    """(name, parser) of every entry point whose help shows defaults, sub-commands included."""
    found = [('main.py', get_train_parser()), ('test_models.py', get_test_parser()),
             ('predict.py', predict.get_parser())]
    found += [(name, importlib.import_module(f'scripts.{name}').get_args_parser()) for name in SCRIPTS]
    for name, parser in list(found):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                found += [(f'{name} {sub}', p) for sub, p in action.choices.items()]
    return found


@pytest.mark.parametrize('name,parser', _parsers(), ids=lambda v: v if isinstance(v, str) else '')
def test_help_adds_no_default_to_on_off_flags(name, parser):
    # Before: "--no_autorotate  video files: keep the stored pixels ... (default: True)" while rotation is applied
    # by default (argparse's default of a store_false flag is True).
    text = ' '.join(parser.format_help().split())
    assert '(default: True)' not in text and '(default: False)' not in text, name
    assert '(default: ' in text or name == 'build_file_list', name   # options with values still show theirs
    flags = {opt: action for action in parser._actions for opt in action.option_strings}
    if '--no_autorotate' in flags:   # says that rotation is applied unless it is given
        help_text = flags['--no_autorotate'].help
        assert 'keep the stored pixels' in help_text and 'default' in help_text and 'appl' in help_text, name


def _resolved_workers(cases, cpus):
    """Parse each (kind, argv) of `cases` ('train': main.py, 'test': test_models.py) in one process pinned to
    `cpus` CPUs and iterate a DataLoader with the resolved -j; -> [(workers, PyTorch's warnings)] per case."""
    code = f'''
import json, sys, warnings
sys.path.insert(0, {REPO!r})
from torch.utils.data import DataLoader
from opts import parse_args, parse_test_args
out = []
for kind, argv in {cases!r}:
    args = (parse_args if kind == 'train' else parse_test_args)(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        list(DataLoader(list(range(4)), num_workers=args.workers))
    out.append([args.workers, [str(w.message) for w in caught]])
print(json.dumps(out))
'''
    first = sorted(os.sched_getaffinity(0))[:cpus]
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS='1'), preexec_fn=lambda: os.sched_setaffinity(0, first))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not hasattr(os, 'sched_setaffinity'), reason='needs CPU affinity masks (Linux)')
def test_default_workers_fit_the_cpus_this_process_may_use(tmp_path, tiny_checkpoint):
    # Before: 8 training workers on a 2-core machine, and PyTorch warned about them at every loader.
    (tmp_path / 'l.txt').write_text('v 3 0\n')
    data = ['--root_path', str(tmp_path), '--num_class', '3']
    lists = ['--train_list', str(tmp_path / 'l.txt'), '--val_list', str(tmp_path / 'l.txt')]
    weights = tiny_checkpoint(tmp_path / 'w.pth.tar', 'RGB', 0)
    cases = [('train', ['mine', 'RGB', *data, *lists]),                          # default 8
             ('train', ['mine', 'RGB', *data, *lists, '-j', '2']),               # given: used as given
             ('test', ['mine', '--weights', weights, *data, '--test_list', str(tmp_path / 'l.txt')])]   # default 2
    (train, explicit, test) = _resolved_workers(cases, 1)
    assert train == [1, []] and test == [1, []]
    assert explicit[0] == 2 and any('worker' in w for w in explicit[1])   # PyTorch's warning, as before
