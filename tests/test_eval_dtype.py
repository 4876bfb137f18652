import opts


def _ckpt(tmp_path):
    path = tmp_path / 'model.pth.tar'
    path.write_bytes(b'')   # the parser only checks that the file exists
    return str(path)


def test_evaluation_defaults_to_fp32_and_says_so(tmp_path):
    args = opts.parse_test_args(['toy', '--weights', _ckpt(tmp_path)])
    assert args.amp == 'off' and args.channels_last is False
    assert '[off: fp32]' in ' '.join(opts.get_test_parser().format_help().split())


def test_evaluation_bf16_turns_on_channels_last_like_training(tmp_path):
    args = opts.parse_test_args(['toy', '--weights', _ckpt(tmp_path), '--amp', 'bf16'])
    assert args.amp == 'bf16' and args.channels_last is True
    args = opts.parse_test_args(['toy', '--weights', _ckpt(tmp_path), '--amp', 'bf16', '--no-channels_last'])
    assert args.channels_last is False
