"""Defaults a new user meets first (issue 29): what --help says about on/off flags, and DataLoader workers on a
small machine."""
import argparse
import importlib
import os
import warnings

import pytest
from torch.utils.data import DataLoader

from opts import get_test_parser, get_train_parser, parse_args, parse_test_args
from test_predict import predict   # the entry point, imported past tests/test_models.py (pytest names it so)

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


def _resolved_workers(parse, argv):
    """-j of `parse(argv)` and PyTorch's warnings when a DataLoader starts that many workers."""
    args = parse(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        list(DataLoader(list(range(4)), num_workers=args.workers))
    return args.workers, [str(w.message) for w in caught]


@pytest.mark.skipif(not hasattr(os, 'sched_setaffinity'), reason='needs CPU affinity masks (Linux)')
def test_default_workers_fit_the_cpus_this_process_may_use(tmp_path, tiny_checkpoint):
    # Before: 8 training workers on a 2-core machine, and PyTorch warned about them at every loader. This
    # process is pinned to one CPU for the test (as taskset or a container limits it), then given its CPUs back.
    (tmp_path / 'l.txt').write_text('v 3 0\n')
    data = ['--root_path', str(tmp_path), '--num_class', '3']
    lists = ['--train_list', str(tmp_path / 'l.txt'), '--val_list', str(tmp_path / 'l.txt')]
    weights = tiny_checkpoint(tmp_path / 'w.pth.tar', 'RGB', 0)
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        train = _resolved_workers(parse_args, ['mine', 'RGB', *data, *lists])                 # default 8
        explicit = _resolved_workers(parse_args, ['mine', 'RGB', *data, *lists, '-j', '2'])   # used as given
        test = _resolved_workers(parse_test_args, ['mine', '--weights', weights, *data, '--test_list',
                                                   str(tmp_path / 'l.txt')])                    # default 2
    finally:
        os.sched_setaffinity(0, cpus)
    assert train == (1, []) and test == (1, [])
    assert explicit[0] == 2 and any('worker' in w for w in explicit[1])   # PyTorch's warning, as before
